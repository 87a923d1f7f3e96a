//! `typing`: an ephemeral event for the room's other users; nothing stored.

use crate::ws::session::Session;
use chat_core::protocol::{ErrorCode, ServerFrame};
use serde_json::Value;

pub async fn handle(conn: &mut Session, room: &str, r: Option<&Value>) {
    if !conn.joined.contains_key(room) {
        return conn.error(ErrorCode::NotJoined, "join the room first", r);
    }
    let payload = chat_core::live::event(
        conn.user(),
        &ServerFrame::Typing {
            room,
            user: conn.user(),
        },
    );
    let mut redis = conn.state.redis.clone();
    let channel = conn.state.keys.room_channel(room);
    if let Err(e) = redis.publish_room_now(&channel, &payload).await {
        tracing::debug!(room, error = %e, "typing not published");
    }
}
