//! Turning a token into an authenticated user, with the session check.

use crate::state::AppState;
use chat_core::jwt::Claims;
use chat_core::protocol::ErrorCode;

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

/// Session record: `user\nttl_secs`.
pub fn session_value(user: &str, ttl: u64) -> String {
    format!("{user}\n{ttl}")
}

fn parse_session(v: &str) -> Option<(&str, u64)> {
    let (user, ttl) = v.rsplit_once('\n')?;
    Some((user, ttl.parse().ok()?))
}

pub async fn authenticate(state: &AppState, token: &str) -> Result<Authed, (ErrorCode, String)> {
    let claims = state
        .verifier
        .verify(token)
        .await
        .map_err(|e| (ErrorCode::Unauthorized, format!("invalid token: {e}")))?;
    // `sub` names the user in frames, keys and pub/sub framing.
    if claims.sub.len() > 256 || claims.sub.chars().any(char::is_control) {
        return Err((
            ErrorCode::Unauthorized,
            "invalid token: sub must be at most 256 characters without control characters".into(),
        ));
    }
    let mut session_ttl = None;
    match &claims.sid {
        Some(sid) => {
            let mut conn = state.redis.clone();
            let found: Option<String> =
                redis::AsyncCommands::get(&mut conn, state.keys.session(sid))
                    .await
                    .map_err(|_| {
                        (
                            ErrorCode::Unavailable,
                            "session store unavailable".to_owned(),
                        )
                    })?;
            match found.as_deref().and_then(parse_session) {
                Some((user, ttl)) if user == claims.sub => session_ttl = Some(ttl),
                Some(_) => {
                    return Err((
                        ErrorCode::Unauthorized,
                        "session belongs to another user".into(),
                    ));
                }
                None if state.settings.require_session => {
                    return Err((ErrorCode::Unauthorized, "session not found".into()));
                }
                None => {}
            }
        }
        None if state.settings.require_session => {
            return Err((ErrorCode::Unauthorized, "token has no sid".into()));
        }
        None => {}
    }
    Ok(Authed {
        claims,
        session_ttl,
    })
}
