//! `GET /v1/rooms/{room}/export` (admin): the whole archived room as NDJSON,
//! one `message` object (without `type`) per line, oldest first. Streamed
//! from a MongoDB cursor, so the room is never held in memory.

use super::caller::admin;
use super::error::{ApiError, ApiResult, ErrorBody};
use crate::state::Shared;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chat_core::protocol::{ErrorCode, Message};
use futures_util::StreamExt;

/// The archived room as NDJSON.
#[utoipa::path(
    get,
    path = "/v1/rooms/{room}/export",
    tag = "rooms",
    params(("room" = String, Path, description = "Room name")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "One `message` object (without `type`) per line, oldest first, streamed",
            content_type = "application/x-ndjson", body = Message),
        (status = 400, description = "Bad room name", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "The archive is off", body = ErrorBody),
        (status = 503, description = "The archive is unavailable, retry", body = ErrorBody),
    )
)]
pub async fn export(
    State(state): State<Shared>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    admin(&state, &headers)?;
    super::rooms::room_name(&room)?;
    let Some(archive) = &state.archive else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "the archive is off (CHAT_MONGODB_URL is not set)",
        ));
    };
    let cursor = archive.room_cursor(&room).await.map_err(|e| {
        tracing::warn!(room, error = %e, "export failed");
        ApiError::from(ErrorCode::Unavailable)
    })?;
    let lines = cursor.map(move |d| {
        let d = d.map_err(|e| std::io::Error::other(e.to_string()))?;
        let m = chat_archive::message(&d).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut line = serde_json::to_vec(&m).map_err(std::io::Error::other)?;
        line.push(b'\n');
        Ok::<Bytes, std::io::Error>(Bytes::from(line))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}
