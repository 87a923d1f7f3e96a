//! `join`: authorize, then hand the socket to the room's hub, which answers
//! `joined` and replays what was missed.

use crate::access::{Access, authorize};
use crate::ws::conn::{Conn, JoinedRoom};
use chat_core::protocol::{ErrorCode, Since};
use serde_json::Value;

pub async fn handle(conn: &mut Conn, room: String, since: Option<Since>, reference: Option<Value>) {
    let r = reference.as_ref();
    let rejoin = conn.joined.contains_key(&room);
    if !rejoin && conn.joined.len() >= conn.state.settings.limits.max_rooms_per_connection {
        conn.error(ErrorCode::BadRequest, "too many rooms on one connection", r);
        return;
    }
    let access = match authorize(&conn.state, conn.rooms_claim.as_deref(), conn.user(), &room).await
    {
        Ok(Access::Denied) => {
            conn.error(ErrorCode::Forbidden, "not allowed to join this room", r);
            return;
        }
        Ok(a) => a,
        Err(code) => {
            conn.error(code, "could not check membership", r);
            return;
        }
    };
    let state = conn.state.clone();
    match state
        .hubs
        .join(&room, &conn.socket, since, reference.clone(), rejoin)
        .await
    {
        Ok(epoch) => {
            state
                .sockets
                .set_member_room(conn.socket.id, &room, access == Access::Member);
            if !rejoin {
                state.presence.joined(&room, conn.user()).await;
            }
            conn.joined.insert(room, JoinedRoom { epoch });
        }
        Err(code) => conn.error(code, "join failed", r),
    }
}
