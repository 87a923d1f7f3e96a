//! One module per client frame type; `handle` only dispatches.

mod act;
mod history;
mod join;
mod leave;
mod moderate;
mod read;
mod refresh;
mod send;
mod typing;

use super::session::Session;
use chat_core::protocol::{ClientFrame, ErrorCode, ServerFrame};
use serde_json::Value;

/// The frame's type, as a metrics label.
fn kind(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Auth { .. } => "auth",
        ClientFrame::Join { .. } => "join",
        ClientFrame::Leave { .. } => "leave",
        ClientFrame::Send { .. } => "send",
        ClientFrame::Act { act, .. } => match act {
            chat_core::protocol::Act::Edit { .. } => "edit",
            chat_core::protocol::Act::Delete => "delete",
            chat_core::protocol::Act::React { .. } => "react",
        },
        ClientFrame::History { .. } => "history",
        ClientFrame::Moderate { .. } => "moderate",
        ClientFrame::Typing { .. } => "typing",
        ClientFrame::Read { .. } => "read",
        ClientFrame::Refresh { .. } => "refresh",
        ClientFrame::Ping => "ping",
    }
}

pub async fn handle(conn: &mut Session, frame: ClientFrame, reference: Option<Value>) {
    metrics::counter!("chat_frames_in_total", "type" => kind(&frame)).increment(1);
    // A hub may have removed the socket from a deleted room since the reader
    // last woke: the frame must not act on that room.
    conn.drop_removed_rooms().await;
    let r = reference.as_ref();
    match frame {
        ClientFrame::Auth { .. } => conn.error(ErrorCode::BadRequest, "already authenticated", r),
        ClientFrame::Join { room, since } => join::handle(conn, room, since, reference).await,
        ClientFrame::Leave { room } => leave::handle(conn, &room, reference).await,
        ClientFrame::Send {
            room,
            text,
            client_id,
            reply_to,
        } => send::handle(conn, &room, &text, &client_id, reply_to, r).await,
        ClientFrame::Act {
            room,
            offset,
            epoch,
            client_id,
            act,
        } => act::handle(conn, &room, offset, epoch.as_deref(), client_id, &act, r).await,
        ClientFrame::Moderate {
            room,
            user,
            action,
            duration_secs,
        } => moderate::handle(conn, &room, &user, action, duration_secs, r).await,
        ClientFrame::History {
            room,
            before,
            epoch,
            limit,
            thread,
        } => history::handle(conn, &room, before, epoch.as_deref(), limit, thread, r).await,
        ClientFrame::Typing { room } => typing::handle(conn, &room, r).await,
        ClientFrame::Read { room, offset } => read::handle(conn, &room, offset, r).await,
        ClientFrame::Refresh { token } => refresh::handle(conn, &token, r).await,
        ClientFrame::Ping => conn.reply(&ServerFrame::Pong, r),
    }
}
