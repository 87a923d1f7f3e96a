//! `leave`: delivery stops at once (the hub checks the shared flag), then
//! `left`; the hub drops the socket when it reads the `Leave`.

use crate::ws::session::Session;
use chat_core::protocol::{ErrorCode, ServerFrame};
use serde_json::Value;
use std::sync::atomic::Ordering;

pub async fn handle(conn: &mut Session, room: &str, reference: Option<Value>) {
    if !leave(conn, room, reference.as_ref()).await {
        conn.error(
            ErrorCode::NotJoined,
            "not joined to this room",
            reference.as_ref(),
        );
    }
}

/// Leaves `room` with a `left` frame (the client's `leave`, or access lost
/// on `refresh`); false when the socket had not joined it.
pub async fn leave(conn: &mut Session, room: &str, reference: Option<&Value>) -> bool {
    let Some(joined) = conn.joined.remove(room) else {
        return false;
    };
    joined.active.store(false, Ordering::Release);
    conn.reply(&ServerFrame::Left { room }, reference);
    let state = conn.state.clone();
    state.hubs.leave(room, conn.socket.id);
    state.sockets.set_member_room(conn.socket.id, room, false);
    state.presence.left(room, conn.user()).await;
    // Leaving on purpose (not a disconnect) also ends the room's pushes.
    let mut redis = state.redis.clone();
    let joined: redis::RedisResult<()> =
        redis::AsyncCommands::srem(&mut redis, state.keys.room_joined(room), conn.user()).await;
    if let Err(e) = joined {
        tracing::warn!(room, error = %e, "could not drop the user from the room's push recipients");
    }
    true
}
