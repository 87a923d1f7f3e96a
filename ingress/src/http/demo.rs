//! The demo chat page, and (local stack only) a dev token endpoint so a
//! newcomer can chat from two tabs without an auth server.

use super::error::{ApiError, ApiResult, ErrorBody};
use crate::state::Shared;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::Html;
use axum::{Extension, Json};
use chat_core::protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use utoipa::ToSchema;

/// The demo chat page.
#[utoipa::path(
    get,
    path = "/",
    tag = "demo",
    operation_id = "demo_page",
    responses((status = 200, description = "The demo chat page", content_type = "text/html", body = String))
)]
pub async fn page() -> Html<&'static str> {
    Html(include_str!("demo.html"))
}

/// The JavaScript client (one ES module, no dependencies).
#[utoipa::path(
    get,
    path = "/client.js",
    tag = "demo",
    responses((status = 200, description = "The client, an ES module",
        content_type = "text/javascript", body = String))
)]
pub async fn client_js() -> impl axum::response::IntoResponse {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/javascript; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
            // A public file: pages on the customer's own origin import it.
            (axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        include_str!("../../../clients/js/chat.js"),
    )
}

#[derive(Deserialize, ToSchema)]
#[schema(as = DevTokenRequest)]
struct TokenBody {
    /// 1-64 letters, digits, `_`, `-` or `.` (trimmed).
    user: String,
}

#[derive(Serialize, ToSchema)]
pub struct DevToken {
    /// HS256, for any room (`rooms: ["*"]`), valid for an hour.
    token: String,
    user: String,
}

/// A token for any user name (local stack or `CHAT_DEV_TOKENS`; 404 otherwise).
#[utoipa::path(
    post,
    path = "/dev/token",
    tag = "demo",
    request_body = TokenBody,
    responses(
        (status = 200, description = "A signed token", body = DevToken),
        (status = 400, description = "Invalid body or user name, or a reserved one (`system`, `admin`, ...)", body = ErrorBody),
        (status = 404, description = "Dev tokens are off, or asked from another host than loopback without `CHAT_DEV_TOKENS_PUBLIC`", body = ErrorBody),
        (status = 408, description = "The body took longer than `CHAT_BODY_TIMEOUT`", body = ErrorBody),
        (status = 413, description = "`too_large`: body over 64 KiB", body = ErrorBody),
        (status = 500, description = "Could not sign", body = ErrorBody),
    )
)]
pub async fn dev_token(
    State(state): State<Shared>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Body,
) -> ApiResult<Json<DevToken>> {
    let Some(secret) = &state.settings.dev_token_secret else {
        return Err(ApiError::new(ErrorCode::NotFound, "dev tokens are off"));
    };
    // A token for any name is for the developer's own machine.
    let peer = peer.map(|Extension(ConnectInfo(a))| a.ip());
    if !may_mint(peer, state.settings.dev_tokens_public) {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "dev tokens are served on loopback only (CHAT_DEV_TOKENS_PUBLIC)",
        ));
    }
    let body: TokenBody = super::body::json(&state, body).await?;
    let user = body.user.trim();
    if user.is_empty()
        || user.len() > 64
        || !user
            .chars()
            .all(|c| c.is_alphanumeric() || "_-.".contains(c))
    {
        return Err(ApiError::bad("user must be 1-64 letters, digits, _ - ."));
    }
    if reserved(user) {
        return Err(ApiError::bad(format!(
            "{user:?} is reserved for the server's own messages"
        )));
    }
    let token = mint_dev_token(secret, user, 3600)
        .map_err(|_| ApiError::new(ErrorCode::Internal, "could not sign"))?;
    Ok(Json(DevToken {
        token,
        user: user.to_owned(),
    }))
}

/// Dev tokens go to loopback peers, or anyone when forced.
fn may_mint(peer: Option<std::net::IpAddr>, public: bool) -> bool {
    public || peer.is_some_and(|ip| ip.is_loopback() || ip.to_canonical().is_loopback())
}

/// Names the server writes as (`system` notices, the `summarizer`) or that
/// readers would take for staff: no dev token impersonates them.
fn reserved(user: &str) -> bool {
    const RESERVED: [&str; 10] = [
        "system",
        "summarizer",
        "summary",
        "admin",
        "administrator",
        "root",
        "moderator",
        "server",
        "support",
        "bot",
    ];
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(user))
}

/// An HS256 token for any room, valid for `ttl` seconds.
pub fn mint_dev_token(
    secret: &[u8],
    user: &str,
    ttl: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let exp = chat_core::clock::now_secs() + ttl;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "exp": exp, "rooms": ["*"]}),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_tokens_are_for_loopback_unless_forced() {
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().expect("ip"));
        assert!(may_mint(ip("127.0.0.1"), false));
        assert!(may_mint(ip("::1"), false));
        assert!(may_mint(ip("::ffff:127.0.0.1"), false));
        assert!(!may_mint(ip("10.0.0.5"), false));
        assert!(!may_mint(ip("::ffff:10.0.0.5"), false));
        assert!(!may_mint(None, false));
        assert!(may_mint(ip("10.0.0.5"), true));
    }

    #[test]
    fn reserved_names_in_any_case() {
        for n in ["system", "SYSTEM", "Admin", "summarizer", "bot"] {
            assert!(reserved(n), "{n}");
        }
        for n in ["alice", "systems", "admin2", "robot"] {
            assert!(!reserved(n), "{n}");
        }
    }
}
