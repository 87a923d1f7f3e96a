//! `read`: stores the user's read marker as `epoch:offset`; in a room with
//! read receipts on, the other members get a `receipt` event.

use crate::ws::session::Session;
use chat_core::protocol::{ErrorCode, ServerFrame};
use serde_json::Value;

pub async fn handle(conn: &mut Session, room: &str, offset: u64, r: Option<&Value>) {
    let Some(joined) = conn.joined.get(room) else {
        return conn.error(ErrorCode::NotJoined, "join the room first", r);
    };
    let state = &conn.state;
    let key = state.keys.room_reads(room);
    let ttl = state
        .settings
        .common
        .streams
        .retention(room)
        .ttl
        .as_secs()
        .max(1);
    let mut redis = state.redis.clone();
    let mut pipe = redis::pipe();
    pipe.hset(&key, conn.user(), format!("{}:{offset}", joined.epoch))
        .ignore()
        .expire(&key, ttl as i64)
        .ignore();
    if state.settings.common.streams.retention(room).read_receipts {
        let frame = ServerFrame::Receipt {
            room,
            user: conn.user(),
            epoch: &joined.epoch,
            offset,
        };
        redis.publish_room(
            &mut pipe,
            &state.keys.room_channel(room),
            chat_core::live::event(conn.user(), &frame),
        );
    }
    let result: redis::RedisResult<()> = pipe.query_async(&mut redis).await;
    if result.is_err() {
        conn.error(ErrorCode::Unavailable, "read marker not stored", r);
    }
}
