//! `edit`, `delete` and `react`: events acting on a message, stored like a
//! message (the next offset, the same dedup by `client_id`) after the
//! append script checks the target (docs/protocol.md, "Conversation events").

use crate::append::{Entry, deliver_here, store};
use crate::ws::session::Session;
use chat_core::protocol::{Act, ErrorCode, Kind, ServerFrame};
use chat_core::scripts::Op;
use serde_json::Value;

pub async fn handle(
    conn: &mut Session,
    room: &str,
    target: u64,
    epoch: Option<&str>,
    client_id: Option<String>,
    act: &Act,
    r: Option<&Value>,
) {
    if !conn.joined.contains_key(room) {
        conn.error(ErrorCode::NotJoined, "join the room first", r);
        return;
    }
    // Without a client_id a retry is not recognised: one is made up.
    let client_id = client_id.unwrap_or_else(|| format!("ws-{:016x}", rand::random::<u64>()));
    let user = conn.user().to_owned();
    // A room's owners and moderators delete anyone's messages.
    let staff = match act {
        Act::Delete => match crate::moderation::role(&conn.state, room, &user).await {
            Ok(role) => role.is_staff(),
            Err(refusal) => return conn.error(refusal.code, &refusal.message, r),
        },
        _ => false,
    };
    let (text, op) = match act {
        Act::Edit { text } => (text.as_str(), Op::Edit { target, epoch }),
        Act::Delete => (
            "",
            Op::Delete {
                target,
                epoch,
                staff,
            },
        ),
        Act::React { emoji, remove } => (
            "",
            Op::React {
                target,
                epoch,
                emoji,
                remove: *remove,
            },
        ),
    };
    let e = Entry {
        op,
        checks: crate::moderation::checks(&conn.state, room, true),
        ..Entry::message(room, &user, text, &client_id, Kind::User)
    };
    match store(&conn.state, &e).await {
        Ok(ack) => {
            conn.reply(&ServerFrame::Ack(&ack), r);
            deliver_here(&conn.state, &ack, &e);
        }
        Err(refusal) => conn.error(refusal.code, &refusal.message, r),
    }
}
