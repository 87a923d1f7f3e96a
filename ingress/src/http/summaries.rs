//! Summaries: batch submission, job status, a room's latest summary.

use super::caller::{admin, admin_or_member};
use super::error::{ApiError, ApiResult};
use crate::state::Shared;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chat_core::pattern::valid_room;
use chat_core::protocol::ErrorCode;
use serde::Deserialize;
use serde_json::{Value, json};
use summarizer_worker::jobs::{JobStatus, JobsError};

/// Rooms in one batch.
const MAX_BATCH: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    rooms: Vec<String>,
    /// Only messages at or after this time (ms since the epoch).
    since: Option<u64>,
    /// Only messages at or before this time (ms since the epoch).
    until: Option<u64>,
}

impl From<JobsError> for ApiError {
    fn from(e: JobsError) -> Self {
        match e {
            JobsError::BadRequest(m) => ApiError::bad(m),
            JobsError::Redis(r) => r.into(),
            JobsError::Queue(m) => {
                tracing::warn!(error = %m, "summary queue error");
                ApiError::new(ErrorCode::Unavailable, "summary queue unavailable, retry")
            }
        }
    }
}

/// `202 {"jobs": [{"room", "job_id", "existing"}]}`; a room with a pending
/// or running job gets that job back.
pub async fn submit(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    admin(&state, &headers)?;
    let batch: Batch =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("invalid body: {e}")))?;
    if batch.rooms.is_empty() || batch.rooms.len() > MAX_BATCH {
        return Err(ApiError::bad(format!(
            "rooms must list 1 to {MAX_BATCH} rooms"
        )));
    }
    if let Some(bad) = batch.rooms.iter().find(|r| !valid_room(r)) {
        return Err(ApiError::bad(format!("{bad:?} is not a room name")));
    }
    if let (Some(s), Some(u)) = (batch.since, batch.until)
        && s > u
    {
        return Err(ApiError::bad("since must not be after until"));
    }
    let mut rooms = batch.rooms;
    let mut seen = std::collections::HashSet::new();
    rooms.retain(|r| seen.insert(r.clone()));
    let mut jobs = Vec::with_capacity(rooms.len());
    for room in &rooms {
        jobs.push(
            state
                .jobs
                .submit(room, batch.since, batch.until, "api")
                .await?,
        );
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"jobs": jobs}))))
}

pub async fn status(
    State(state): State<Shared>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<JobStatus>> {
    admin(&state, &headers)?;
    match state.jobs.status(&job_id).await? {
        Some(s) => Ok(Json(s)),
        None => Err(ApiError::new(ErrorCode::NotFound, "no such job")),
    }
}

pub async fn latest(
    State(state): State<Shared>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    if !valid_room(&room) {
        return Err(ApiError::bad("room must match ^[A-Za-z0-9_.:-]{1,128}$"));
    }
    admin_or_member(&state, &headers, &room).await?;
    match state.jobs.latest(&room).await? {
        Some(s) => Ok(Json(s)),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            "no summary for this room",
        )),
    }
}
