//! `join`: authorize, then hand the socket to the room's hub, which answers
//! `joined` and queues the replay of what was missed.

use crate::access::{Access, authorize};
use crate::ws::session::{JoinedRoom, Session};
use chat_core::protocol::{ErrorCode, Since};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

pub async fn handle(
    conn: &mut Session,
    room: String,
    since: Option<Since>,
    reference: Option<Value>,
) {
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
    // Registered before the hub join, so a membership withdrawn meanwhile
    // still finds (and closes) this socket.
    state
        .sockets
        .set_member_room(conn.socket.id, &room, access == Access::Member);
    let active = match conn.joined.get(&room) {
        Some(j) => j.active.clone(),
        None => Arc::new(AtomicBool::new(true)),
    };
    let joined = state
        .hubs
        .join(
            &room,
            &conn.socket,
            active.clone(),
            since,
            reference.clone(),
            rejoin,
        )
        .await;
    match joined {
        Ok(epoch) => {
            if !rejoin {
                let policy = state.settings.common.streams.retention(&room);
                if policy.join_notices
                    && let Err(refusal) =
                        crate::moderation::join_notice(&state, &room, conn.user()).await
                {
                    tracing::warn!(room = %room, user = conn.user(), error = %refusal, "join notice not stored");
                }
                let ttl = policy.ttl;
                state.presence.joined(&room, conn.user(), ttl).await;
            }
            conn.joined.insert(room, JoinedRoom { epoch, active });
        }
        Err(code) => {
            if !rejoin {
                state.sockets.set_member_room(conn.socket.id, &room, false);
            }
            conn.error(code, "join failed", r)
        }
    }
}
