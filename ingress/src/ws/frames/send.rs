//! `send`: one append script call, then the `ack`. A `send` with
//! `reply_to` is a reply, checked against its parent in the same call.

use crate::append::{Entry, deliver_here, store};
use crate::moderation;
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
    let state = conn.state.clone();
    // Staff skip slow mode: their role is read only where it is on.
    let staff = if state
        .settings
        .common
        .streams
        .retention(room)
        .slow_mode
        .is_some()
    {
        match moderation::role(&state, room, &user).await {
            Ok(r) => r.is_staff(),
            Err(refusal) => return conn.error(refusal.code, &refusal.message, r),
        }
    } else {
        false
    };
    let op = match (staff, reply_to) {
        (true, reply_to) => Op::StaffPost { reply_to },
        (false, Some(to)) => Op::Reply { to },
        (false, None) => Op::Post,
    };
    let e = Entry {
        op,
        checks: moderation::checks(&state, room, staff),
        ..Entry::message(room, &user, text, client_id, Kind::User)
    };
    match store(&conn.state, &e).await {
        Ok(ack) => {
            conn.reply(&ServerFrame::Ack(&ack), r);
            deliver_here(&conn.state, &ack, &e);
        }
        // A refusal the script gave names its reason (a reply's parent, a
        // mute, slow mode); others say only that nothing was stored.
        Err(refusal) if refusal.message != "not stored" => {
            conn.error(refusal.code, &refusal.message, r)
        }
        Err(refusal) => conn.error(refusal.code, "message not stored", r),
    }
}
