//! `leave`: the hub answers `left` after the room's last queued message.

use crate::ws::conn::Conn;
use chat_core::protocol::ErrorCode;
use serde_json::Value;

pub async fn handle(conn: &mut Conn, room: &str, reference: Option<Value>) {
    if conn.joined.remove(room).is_none() {
        conn.error(
            ErrorCode::NotJoined,
            "not joined to this room",
            reference.as_ref(),
        );
        return;
    }
    let state = conn.state.clone();
    state.hubs.leave(room, conn.socket.id, Some(reference));
    state.sockets.set_member_room(conn.socket.id, room, false);
    state.presence.left(room, conn.user()).await;
}
