//! Request bodies, read only after the caller is known: handlers take the
//! unread `Body`, check the credentials in the headers, and then read the
//! body here against a size limit and a deadline. So an anonymous client
//! cannot hold a connection by trickling a body, and a known one only for
//! `CHAT_BODY_TIMEOUT`.

use super::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::body::Body;
use axum::http::StatusCode;
use chat_core::protocol::ErrorCode;
use serde::de::DeserializeOwned;

/// The largest request body any route takes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads the whole body within the deadline and parses it as JSON.
pub async fn json<T: DeserializeOwned>(state: &AppState, body: Body) -> ApiResult<T> {
    let bytes = read(state, body).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(format!("invalid body: {e}")))
}

/// As `json`, for a route whose body may be left out (`None`).
pub async fn optional_json<T: DeserializeOwned>(
    state: &AppState,
    body: Body,
) -> ApiResult<Option<T>> {
    let bytes = read(state, body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ApiError::bad(format!("invalid body: {e}")))
}

async fn read(state: &AppState, body: Body) -> ApiResult<axum::body::Bytes> {
    let deadline = state.settings.limits.body_timeout;
    let bytes = tokio::time::timeout(deadline, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
        .map_err(|_| {
            ApiError::bad(format!(
                "request body not received within {}",
                humantime::format_duration(deadline)
            ))
            .with_status(StatusCode::REQUEST_TIMEOUT)
        })?
        .map_err(|e| {
            // The limit shows as a length error somewhere in the source chain.
            let mut source: Option<&dyn std::error::Error> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return ApiError::new(
                        ErrorCode::TooLarge,
                        format!("body is over {MAX_BODY_BYTES} bytes"),
                    );
                }
                source = s.source();
            }
            ApiError::bad(format!("could not read the body: {e}"))
        })?;
    Ok(bytes)
}
