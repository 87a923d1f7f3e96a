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
    crate::auth::bearer(headers)
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "missing Authorization: Bearer"))
}

/// Compares SHA-256 digests in constant time: the time taken tells nothing
/// of a key's bytes, nor of its length.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn is_api_key(state: &AppState, token: &str) -> bool {
    let token = digest(token.as_bytes());
    state.settings.api_keys.iter().fold(false, |found, k| {
        use secrecy::ExposeSecret;
        found | same(&digest(k.expose_secret().as_bytes()), &token)
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
    crate::auth::authenticate(state, token)
        .await
        .map(|a| Caller::User(a.claims))
        .map_err(ApiError::from)
}

/// An admin (`None`), or a user allowed into `room` (`Some(user)`).
pub async fn admin_or_member(
    state: &AppState,
    headers: &HeaderMap,
    room: &str,
) -> ApiResult<Option<String>> {
    match admin_or_user(state, headers).await? {
        Caller::Admin => Ok(None),
        Caller::User(claims) => {
            match authorize(state, claims.rooms.as_deref(), &claims.sub, room).await? {
                Access::Denied => Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "not a member of this room",
                )),
                _ => Ok(Some(claims.sub)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_by_digest_whatever_their_length() {
        let key = digest(b"the-admin-key-0123456789");
        assert!(same(&key, &digest(b"the-admin-key-0123456789")));
        for other in [
            &b""[..],
            b"the-admin-key",
            b"the-admin-key-0123456789-and-more",
        ] {
            assert!(!same(&key, &digest(other)), "{other:?}");
        }
    }
}
