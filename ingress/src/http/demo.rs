//! The demo chat page, and (local stack only) a dev token endpoint so a
//! newcomer can chat from two tabs without an auth server.

use super::error::{ApiError, ApiResult, ErrorBody};
use crate::state::Shared;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Html;
use chat_core::protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
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
        (status = 400, description = "Invalid body or user name", body = ErrorBody),
        (status = 404, description = "Dev tokens are off", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", content_type = "text/plain", body = String),
        (status = 500, description = "Could not sign", body = ErrorBody),
    )
)]
pub async fn dev_token(State(state): State<Shared>, body: Bytes) -> ApiResult<Json<DevToken>> {
    let Some(secret) = &state.settings.dev_token_secret else {
        return Err(ApiError::new(ErrorCode::NotFound, "dev tokens are off"));
    };
    let body: TokenBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("invalid body: {e}")))?;
    let user = body.user.trim();
    if user.is_empty()
        || user.len() > 64
        || !user
            .chars()
            .all(|c| c.is_alphanumeric() || "_-.".contains(c))
    {
        return Err(ApiError::bad("user must be 1-64 letters, digits, _ - ."));
    }
    let token = mint_dev_token(secret, user, 3600)
        .map_err(|_| ApiError::new(ErrorCode::Internal, "could not sign"))?;
    Ok(Json(DevToken {
        token,
        user: user.to_owned(),
    }))
}

/// An HS256 token for any room, valid for `ttl` seconds.
pub fn mint_dev_token(
    secret: &[u8],
    user: &str,
    ttl: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let exp = crate::ws::now_secs() + ttl;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "exp": exp, "rooms": ["*"]}),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
}
