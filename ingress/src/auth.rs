//! Turning a token into an authenticated user, with the session check.

use crate::state::AppState;
use chat_core::clock::now_secs;
use chat_core::jwt::Claims;
use chat_core::protocol::{ErrorCode, Refusal};
use chat_core::sessions::SessionRecord;

/// The credentials of an `Authorization: Bearer` header (scheme case-insensitive).
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub struct Authed {
    pub claims: Claims,
    /// The session's TTL when the token's `sid` names a live session.
    pub session_ttl: Option<u64>,
}

pub async fn authenticate(state: &AppState, token: &str) -> Result<Authed, Refusal> {
    let claims = state
        .verifier
        .verify(token)
        .await
        .map_err(|e| Refusal::new(ErrorCode::Unauthorized, format!("invalid token: {e}")))?;
    // `sub` names the user in frames, keys and pub/sub framing, and is
    // shown to other users: no control or invisible format characters.
    if !chat_core::protocol::valid_user_id(&claims.sub) {
        return Err(Refusal::new(
            ErrorCode::Unauthorized,
            "invalid token: sub must be 1-256 bytes without control or format characters",
        ));
    }
    let mut session_ttl = None;
    match &claims.sid {
        Some(sid) => {
            let mut conn = state.redis.clone();
            // One slot (the sid's tag), so one MGET even on a cluster.
            let revoked_key = state.keys.session_revoked(sid);
            let (found, revoked): (Option<String>, Option<String>) = redis::cmd("MGET")
                .arg(state.keys.session(sid))
                .arg(&revoked_key)
                .query_async(&mut conn)
                .await
                .map_err(|_| Refusal::new(ErrorCode::Unavailable, "session store unavailable"))?;
            if revoked.is_some() {
                // The tombstone lasts as long as any token seen with the sid.
                let left = claims.exp.saturating_sub(now_secs());
                if left > 0 {
                    let extended: redis::RedisResult<()> = redis::cmd("EXPIRE")
                        .arg(&revoked_key)
                        .arg(left)
                        .arg("GT")
                        .query_async(&mut conn)
                        .await;
                    if let Err(e) = extended {
                        tracing::debug!(error = %e, "could not extend a session tombstone");
                    }
                }
                return Err(Refusal::new(ErrorCode::Unauthorized, "session revoked"));
            }
            match found.as_deref().and_then(SessionRecord::decode) {
                Some(r) if r.user == claims.sub => session_ttl = Some(r.ttl_secs),
                Some(_) => {
                    return Err(Refusal::new(
                        ErrorCode::Unauthorized,
                        "session belongs to another user",
                    ));
                }
                None if state.settings.require_session => {
                    return Err(Refusal::new(ErrorCode::Unauthorized, "session not found"));
                }
                None => {}
            }
        }
        None if state.settings.require_session => {
            return Err(Refusal::new(ErrorCode::Unauthorized, "token has no sid"));
        }
        None => {}
    }
    Ok(Authed {
        claims,
        session_ttl,
    })
}
