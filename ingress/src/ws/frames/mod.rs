//! One module per client frame type; `handle` only dispatches.

mod history;
mod join;
mod leave;
mod read;
mod refresh;
mod send;
mod typing;

use super::conn::Conn;
use chat_core::protocol::{ClientFrame, ErrorCode, ServerFrame};
use serde_json::Value;

pub async fn handle(conn: &mut Conn, frame: ClientFrame, reference: Option<Value>) {
    let r = reference.as_ref();
    match frame {
        ClientFrame::Auth { .. } => conn.error(ErrorCode::BadRequest, "already authenticated", r),
        ClientFrame::Join { room, since } => join::handle(conn, room, since, reference).await,
        ClientFrame::Leave { room } => leave::handle(conn, &room, reference).await,
        ClientFrame::Send {
            room,
            text,
            client_id,
        } => send::handle(conn, &room, &text, &client_id, r).await,
        ClientFrame::History {
            room,
            before,
            limit,
        } => history::handle(conn, &room, before, limit, r).await,
        ClientFrame::Typing { room } => typing::handle(conn, &room, r).await,
        ClientFrame::Read { room, offset } => read::handle(conn, &room, offset, r).await,
        ClientFrame::Refresh { token } => refresh::handle(conn, &token, r).await,
        ClientFrame::Ping => conn.reply(&ServerFrame::Pong, r),
    }
}
