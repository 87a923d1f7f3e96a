//! Summaries: batch submission, job status, a room's latest summary.

use super::caller::{admin, admin_or_member};
use super::error::{ApiError, ApiResult, ErrorBody, ServerErrors};
use crate::state::Shared;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chat_core::pattern::valid_room;
use chat_core::protocol::ErrorCode;
use chat_jobs::{JobStatus, JobsError, RoomSummary, Submitted};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Rooms in one batch.
const MAX_BATCH: usize = 1000;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SummaryBatch)]
struct Batch {
    /// Room names; duplicates count once.
    #[schema(min_items = 1, max_items = 1000)]
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
            e @ (JobsError::Queue(_) | JobsError::Reply(_) | JobsError::Contended) => {
                tracing::warn!(error = %e, "summary queue error");
                ApiError::new(ErrorCode::Unavailable, "summary queue unavailable, retry")
            }
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SubmittedJobs {
    /// One per distinct room, in the order given.
    jobs: Vec<Submitted>,
}

/// Batch-submit summarization jobs.
///
/// `202 {"jobs": [{"room", "job_id", "existing"}]}`; a room with a pending
/// or running job gets that job back.
#[utoipa::path(
    post,
    path = "/v1/summaries",
    tag = "summaries",
    operation_id = "submit_summaries",
    request_body = Batch,
    security(("api_key" = [])),
    responses(
        (status = 202, description = "Submitted", body = SubmittedJobs),
        (status = 400, description = "Bad body, room list or time window", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 408, description = "The body took longer than `CHAT_BODY_TIMEOUT`", body = ErrorBody),
        (status = 413, description = "`too_large`: body over 64 KiB", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Redis or the job queue unavailable, retry", body = ErrorBody),
    )
)]
pub async fn submit(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<SubmittedJobs>)> {
    admin(&state, &headers)?;
    let batch: Batch = super::body::json(&state, body).await?;
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
    Ok((StatusCode::ACCEPTED, Json(SubmittedJobs { jobs })))
}

/// A summarization job's status.
#[utoipa::path(
    get,
    path = "/v1/summaries/{job_id}",
    tag = "summaries",
    operation_id = "summary_job",
    params(("job_id" = String, Path, description = "A `job_id` from the submission")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The job", body = JobStatus),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such job (or its record expired)", body = ErrorBody),
        ServerErrors,
    )
)]
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

/// The latest summary of a room.
#[utoipa::path(
    get,
    path = "/v1/rooms/{room}/summary",
    tag = "summaries",
    operation_id = "latest_summary",
    params(("room" = String, Path, description = "Room name")),
    security(("api_key" = []), ("user_jwt" = [])),
    responses(
        (status = 200, description = "The stored summary", body = RoomSummary),
        (status = 400, description = "Bad room name", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key or token", body = ErrorBody),
        (status = 403, description = "The user may not join the room", body = ErrorBody),
        (status = 404, description = "No summary for this room", body = ErrorBody),
        ServerErrors,
    )
)]
pub async fn latest(
    State(state): State<Shared>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<RoomSummary>> {
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
