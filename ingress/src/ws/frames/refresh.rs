//! `refresh`: a new token for the same user extends the connection; rooms
//! its `rooms` claim no longer allows are left.

use crate::access::{Access, authorize};
use crate::auth::authenticate;
use crate::ws::session::Session;
use chat_core::protocol::{ErrorCode, ServerFrame};
use serde_json::Value;

pub async fn handle(conn: &mut Session, token: &str, r: Option<&Value>) {
    match authenticate(&conn.state, token).await {
        Ok(a) if a.claims.sub != conn.user() => conn.error(
            ErrorCode::Unauthorized,
            "refresh token is for another user",
            r,
        ),
        // The socket stays tied to one session for revocation.
        Ok(a) if a.claims.sid.as_deref() != conn.sid.as_deref() => conn.error(
            ErrorCode::Unauthorized,
            "refresh token is for another session",
            r,
        ),
        Ok(a) => {
            conn.exp = a.claims.exp;
            conn.expiring_sent = false;
            // The new token's claim governs later joins, and the rooms
            // joined already: those it no longer allows are left (`left`)
            // unless membership grants them.
            conn.rooms_claim = a.claims.rooms;
            conn.reply(&ServerFrame::Refreshed { exp: conn.exp }, r);
            let joined: Vec<String> = conn.joined.keys().cloned().collect();
            for room in joined {
                let access =
                    authorize(&conn.state, conn.rooms_claim.as_deref(), conn.user(), &room).await;
                match access {
                    Ok(Access::Claim) => {}
                    Ok(Access::Member) => {
                        conn.state
                            .sockets
                            .set_member_room(conn.socket.id, &room, true)
                    }
                    // Unconfirmed access (Redis down) is not kept.
                    Ok(Access::Denied) | Err(_) => {
                        tracing::info!(room, "access narrowed by refresh, leaving");
                        super::leave::leave(conn, &room, None).await;
                    }
                }
            }
        }
        Err(refused) => conn.error(refused.code, &refused.message, r),
    }
}
