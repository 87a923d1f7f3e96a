//! `history`: the `limit` messages just below `before`, oldest first, from
//! Redis and then the archive (see `crate::history`).

use crate::access::{Access, authorize};
use crate::ws::session::Session;
use chat_core::protocol::{ErrorCode, ServerFrame};
use serde_json::Value;

pub async fn handle(
    conn: &mut Session,
    room: &str,
    before: Option<u64>,
    epoch: Option<&str>,
    limit: u32,
    thread: Option<u64>,
    r: Option<&Value>,
) {
    // A page can be a few MB: while earlier output sits unread, more would
    // only pile up in this node's memory (the socket's byte bound).
    let out = &conn.socket.out;
    if out.queued_bytes() > out.max_bytes() / 4 {
        return conn.error(
            ErrorCode::RateLimited,
            "earlier replies are not read yet",
            r,
        );
    }
    if !conn.joined.contains_key(room) {
        match authorize(&conn.state, conn.rooms_claim.as_deref(), conn.user(), room).await {
            Ok(Access::Denied) => {
                return conn.error(ErrorCode::Forbidden, "not allowed to read this room", r);
            }
            Ok(_) => {}
            Err(code) => return conn.error(code, "could not check membership", r),
        }
    }
    let user = conn.user().to_owned();
    let read = match thread {
        Some(parent) => {
            crate::history::thread(&conn.state, room, parent, before, limit, &user).await
        }
        None => crate::history::page(&conn.state, room, epoch, before, limit, Some(&user)).await,
    };
    match read {
        Ok(page) => conn.reply(
            &ServerFrame::History {
                room,
                epoch: &page.epoch,
                messages: &page.messages,
                next: page.next.as_ref(),
            },
            r,
        ),
        Err(code) => conn.error(code, "history unavailable", r),
    }
}
