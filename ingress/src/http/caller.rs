//! Who is calling: an admin (API key) or a user (JWT).

use super::error::{ApiError, ApiResult};
use crate::access::{Access, authorize};
use crate::state::AppState;
use axum::http::HeaderMap;
use chat_core::jwt::Claims;
use chat_core::protocol::ErrorCode;

pub enum Caller {
    Admin,
    User(Claims),
}

fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    crate::ws::auth::bearer(headers)
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "missing Authorization: Bearer"))
}

/// Constant-time comparison, so a key cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn is_api_key(state: &AppState, token: &str) -> bool {
    state.settings.api_keys.iter().fold(false, |found, k| {
        found | same(k.as_bytes(), token.as_bytes())
    })
}

pub fn admin(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let token = bearer(headers)?;
    if is_api_key(state, token) {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::Unauthorized, "invalid API key"))
    }
}

/// An admin, or a user with a valid token (session rules included).
pub async fn admin_or_user(state: &AppState, headers: &HeaderMap) -> ApiResult<Caller> {
    let token = bearer(headers)?;
    if is_api_key(state, token) {
        return Ok(Caller::Admin);
    }
    crate::ws::auth::authenticate(state, token)
        .await
        .map(|a| Caller::User(a.claims))
        .map_err(|(code, message)| ApiError::new(code, message))
}

/// An admin, or a user allowed into `room`.
pub async fn admin_or_member(state: &AppState, headers: &HeaderMap, room: &str) -> ApiResult<()> {
    match admin_or_user(state, headers).await? {
        Caller::Admin => Ok(()),
        Caller::User(claims) => {
            match authorize(state, claims.rooms.as_deref(), &claims.sub, room).await? {
                Access::Denied => Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "not a member of this room",
                )),
                _ => Ok(()),
            }
        }
    }
}
