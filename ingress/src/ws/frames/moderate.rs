//! `moderate`: a room's owner or moderator mutes, bans or lifts either
//! (`crate::moderation`); the reply is the `ack` of the `system` message
//! recording it.

use crate::ws::session::Session;
use chat_core::protocol::{ErrorCode, ModAction, ServerFrame};
use serde_json::Value;

pub async fn handle(
    conn: &mut Session,
    room: &str,
    user: &str,
    action: ModAction,
    duration_secs: Option<u64>,
    r: Option<&Value>,
) {
    if !conn.joined.contains_key(room) {
        return conn.error(ErrorCode::NotJoined, "join the room first", r);
    }
    let by = conn.user().to_owned();
    match crate::moderation::sanction(&conn.state, room, Some(&by), user, action, duration_secs)
        .await
    {
        Ok(ack) => conn.reply(&ServerFrame::Ack(&ack), r),
        Err(refusal) => conn.error(refusal.code, &refusal.message, r),
    }
}
