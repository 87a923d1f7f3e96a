//! `send`: one append script call, then the `ack`. A `send` with
//! `reply_to` is a reply, checked against its parent in the same call.

use crate::append::{Entry, deliver_here, store};
use crate::ws::session::Session;
use chat_core::protocol::{ErrorCode, Kind, ServerFrame};
use chat_core::scripts::Op;
use serde_json::Value;

pub async fn handle(
    conn: &mut Session,
    room: &str,
    text: &str,
    client_id: &str,
    reply_to: Option<u64>,
    r: Option<&Value>,
) {
    if !conn.joined.contains_key(room) {
        conn.error(ErrorCode::NotJoined, "join the room before sending", r);
        return;
    }
    let user = conn.user().to_owned();
    let e = Entry {
        op: reply_to.map_or(Op::Post, |to| Op::Reply { to }),
        ..Entry::message(room, &user, text, client_id, Kind::User)
    };
    match store(&conn.state, &e).await {
        Ok(ack) => {
            conn.reply(&ServerFrame::Ack(&ack), r);
            deliver_here(&conn.state, &ack, &e);
        }
        Err(refusal) if reply_to.is_some() => conn.error(refusal.code, &refusal.message, r),
        Err(refusal) => conn.error(refusal.code, "message not stored", r),
    }
}
