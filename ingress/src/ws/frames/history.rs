//! `history`: the `limit` messages just below `before`, oldest first.

use crate::access::{Access, authorize};
use crate::ws::conn::Conn;
use chat_core::protocol::{ErrorCode, ServerFrame};
use serde_json::Value;

pub async fn handle(
    conn: &mut Conn,
    room: &str,
    before: Option<u64>,
    limit: u32,
    r: Option<&Value>,
) {
    if !conn.joined.contains_key(room) {
        match authorize(&conn.state, conn.rooms_claim.as_deref(), conn.user(), room).await {
            Ok(Access::Denied) => {
                return conn.error(ErrorCode::Forbidden, "not allowed to read this room", r);
            }
            Ok(_) => {}
            Err(code) => return conn.error(code, "could not check membership", r),
        }
    }
    match crate::append::history(&conn.state, room, before, limit).await {
        Ok((epoch, messages)) => conn.reply(
            &ServerFrame::History {
                room,
                epoch: &epoch,
                messages: &messages,
            },
            r,
        ),
        Err(code) => conn.error(code, "history unavailable", r),
    }
}
