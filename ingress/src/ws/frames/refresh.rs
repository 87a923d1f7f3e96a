//! `refresh`: a new token for the same user extends the connection.

use crate::ws::auth::authenticate;
use crate::ws::conn::Conn;
use chat_core::protocol::{ErrorCode, ServerFrame};
use serde_json::Value;

pub async fn handle(conn: &mut Conn, token: &str, r: Option<&Value>) {
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
            // The new token's claim governs later joins.
            conn.rooms_claim = a.claims.rooms;
            conn.reply(&ServerFrame::Refreshed { exp: conn.exp }, r);
        }
        Err((code, message)) => conn.error(code, &message, r),
    }
}
