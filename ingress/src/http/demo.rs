//! The demo chat page, and (local stack only) a dev token endpoint so a
//! newcomer can chat from two tabs without an auth server.

use super::error::{ApiError, ApiResult};
use crate::state::Shared;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Html;
use chat_core::protocol::ErrorCode;
use serde::Deserialize;
use serde_json::{Value, json};

pub async fn page() -> Html<&'static str> {
    Html(include_str!("demo.html"))
}

/// The JavaScript client (one ES module, no dependencies).
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

#[derive(Deserialize)]
struct TokenBody {
    user: String,
}

pub async fn dev_token(State(state): State<Shared>, body: Bytes) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({"token": token, "user": user})))
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
