//! Room endpoints: publish, history, members, presence.

use super::caller::{admin, admin_or_member};
use super::error::{ApiError, ApiResult};
use crate::append::{append, history};
use crate::control::withdraw_payload;
use crate::state::Shared;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use chat_core::pattern::valid_room;
use chat_core::protocol::{Ack, Kind, Message, valid_client_id};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

fn room_name(room: &str) -> ApiResult<()> {
    if valid_room(room) {
        Ok(())
    } else {
        Err(ApiError::bad("room must match ^[A-Za-z0-9_.:-]{1,128}$"))
    }
}

fn user_id(user: &str) -> ApiResult<()> {
    if user.is_empty() || user.len() > 256 || user.chars().any(char::is_control) {
        Err(ApiError::bad(
            "user must be 1-256 characters without control characters",
        ))
    } else {
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    text: String,
    user: Option<String>,
    kind: Option<Kind>,
    client_id: Option<String>,
}

pub async fn publish(
    State(state): State<Shared>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Ack>> {
    admin(&state, &headers)?;
    room_name(&room)?;
    let body: PublishBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("invalid body: {e}")))?;
    let max = state.settings.limits.max_text_bytes;
    if body.text.is_empty() {
        return Err(ApiError::bad("text must not be empty"));
    }
    if body.text.len() > max {
        return Err(ApiError::new(
            chat_core::protocol::ErrorCode::TooLarge,
            format!("text is over {max} bytes"),
        ));
    }
    let user = body.user.unwrap_or_else(|| "system".to_owned());
    user_id(&user)?;
    let kind = body.kind.unwrap_or(Kind::System);
    let client_id = match body.client_id {
        Some(c) if valid_client_id(&c) => c,
        Some(_) => return Err(ApiError::bad("client_id must be 1 to 64 characters")),
        None => format!("http-{:016x}", rand::random::<u64>()),
    };
    let ack = append(&state, &room, &user, &body.text, &client_id, kind).await?;
    Ok(Json(ack))
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    before: Option<u64>,
    limit: Option<u32>,
}

#[derive(Serialize)]
pub struct HistoryBody {
    room: String,
    epoch: String,
    messages: Vec<Message>,
}

pub async fn get_history(
    State(state): State<Shared>,
    Path(room): Path<String>,
    headers: HeaderMap,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<HistoryBody>> {
    room_name(&room)?;
    let Query(q) = query.map_err(|e| ApiError::bad(format!("invalid query: {e}")))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad("limit must be 1 to 100"));
    }
    admin_or_member(&state, &headers, &room).await?;
    let (epoch, messages) = history(&state, &room, q.before, limit).await?;
    Ok(Json(HistoryBody {
        room,
        epoch,
        messages,
    }))
}

pub async fn put_member(
    State(state): State<Shared>,
    Path((room, user)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    admin(&state, &headers)?;
    room_name(&room)?;
    user_id(&user)?;
    let mut conn = state.redis.clone();
    let _: () = conn.sadd(state.keys.room_members(&room), &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete_member(
    State(state): State<Shared>,
    Path((room, user)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    admin(&state, &headers)?;
    room_name(&room)?;
    user_id(&user)?;
    let mut conn = state.redis.clone();
    let _: () = redis::pipe()
        .srem(state.keys.room_members(&room), &user)
        .ignore()
        // No more pushes from this room either.
        .srem(state.keys.room_joined(&room), &user)
        .ignore()
        .publish(state.keys.control_channel(), withdraw_payload(&room, &user))
        .ignore()
        .query_async(&mut conn)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
pub struct PresenceBody {
    room: String,
    users: Vec<String>,
}

pub async fn presence(
    State(state): State<Shared>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<PresenceBody>> {
    room_name(&room)?;
    admin_or_member(&state, &headers, &room).await?;
    let users = state.presence.users(&room).await?;
    Ok(Json(PresenceBody { room, users }))
}
