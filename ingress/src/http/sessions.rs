//! The auth server's session handoff.

use super::caller::admin;
use super::error::{ApiError, ApiResult, ErrorBody, ServerErrors};
use crate::state::Shared;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chat_core::sessions::{SessionRecord, revoke_session, valid_sid};
use serde::Deserialize;
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    /// The session's user, 1-256 characters.
    user: String,
    /// Up to 30 days; activity on its sockets slides it.
    #[schema(minimum = 1, maximum = 2_592_000)]
    ttl_secs: u64,
}

fn sid_ok(sid: &str) -> ApiResult<()> {
    if !valid_sid(sid) {
        Err(ApiError::bad(
            "sid must be 1-128 printable ASCII characters",
        ))
    } else {
        Ok(())
    }
}

/// Register a session (the auth server's handoff).
#[utoipa::path(
    put,
    path = "/v1/sessions/{sid}",
    tag = "sessions",
    operation_id = "put_session",
    params(("sid" = String, Path, description = "Session id, 1-128 printable ASCII characters")),
    request_body = SessionBody,
    security(("api_key" = [])),
    responses(
        (status = 204, description = "Stored with its TTL"),
        (status = 400, description = "Bad sid or body", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 408, description = "The body took longer than `CHAT_BODY_TIMEOUT`", body = ErrorBody),
        (status = 413, description = "`too_large`: body over 64 KiB", body = ErrorBody),
        ServerErrors,
    )
)]
pub async fn put(
    State(state): State<Shared>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    admin(&state, &headers)?;
    sid_ok(&sid)?;
    let body: SessionBody = super::body::json(&state, body).await?;
    super::rooms::user_id(&body.user)?;
    if !(1..=30 * 86_400).contains(&body.ttl_secs) {
        return Err(ApiError::bad("ttl_secs must be 1 to 2592000"));
    }
    let mut conn = state.redis.clone();
    // Registering a sid again lifts an earlier revocation of it.
    let _: () = redis::pipe()
        .set_ex(
            state.keys.session(&sid),
            SessionRecord {
                user: &body.user,
                ttl_secs: body.ttl_secs,
            }
            .encode(),
            body.ttl_secs,
        )
        .ignore()
        .del(state.keys.session_revoked(&sid))
        .ignore()
        .query_async(&mut conn)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes the session and tells every node to close its sockets (4003).
#[utoipa::path(
    delete,
    path = "/v1/sessions/{sid}",
    tag = "sessions",
    operation_id = "delete_session",
    params(("sid" = String, Path, description = "Session id")),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "Deleted (also when it did not exist); its sockets close 4003 within 1 s, and its tokens are refused for `CHAT_REVOKED_SESSION_TTL` (or their `exp`, if later) unless the sid is registered again"),
        (status = 400, description = "Bad sid", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        ServerErrors,
    )
)]
pub async fn delete(
    State(state): State<Shared>,
    Path(sid): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    admin(&state, &headers)?;
    sid_ok(&sid)?;
    revoke_session(
        &mut state.redis.clone(),
        &state.keys,
        &sid,
        state.settings.revoked_session_ttl,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
