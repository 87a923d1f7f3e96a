//! `send`: one append script call, then the `ack`.

use crate::append::{append, deliver_here};
use crate::ws::session::Session;
use chat_core::protocol::{ErrorCode, Kind, ServerFrame};
use serde_json::Value;

pub async fn handle(
    conn: &mut Session,
    room: &str,
    text: &str,
    client_id: &str,
    r: Option<&Value>,
) {
    if !conn.joined.contains_key(room) {
        conn.error(ErrorCode::NotJoined, "join the room before sending", r);
        return;
    }
    match append(&conn.state, room, conn.user(), text, client_id, Kind::User).await {
        Ok(ack) => {
            conn.reply(&ServerFrame::Ack(&ack), r);
            deliver_here(&conn.state, &ack, conn.user(), text, Kind::User);
        }
        Err(code) => conn.error(code, "message not stored", r),
    }
}
