//! Room endpoints: publish, history, members, presence.

use super::caller::{admin, admin_or_member};
use super::error::{ApiError, ApiResult, ErrorBody, ServerErrors};
use crate::append::{Entry, append, store_and_deliver};
use crate::moderation::{self, Role};
use crate::state::Shared;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use chat_core::control::Control;
use chat_core::pattern::valid_room;
use chat_core::protocol::ModAction;
use chat_core::protocol::{
    Ack, HistoryCursor, Kind, Message, valid_client_id, valid_emoji, valid_epoch, valid_user_id,
};
use chat_core::scripts::Op;
use chat_core::tombstone::RoomTombstone;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

pub(super) fn room_name(room: &str) -> ApiResult<()> {
    if valid_room(room) {
        Ok(())
    } else {
        Err(ApiError::bad("room must match ^[A-Za-z0-9_.:-]{1,128}$"))
    }
}

pub(super) fn user_id(user: &str) -> ApiResult<()> {
    if valid_user_id(user) {
        Ok(())
    } else {
        Err(ApiError::bad(
            "user must be 1-256 bytes without control or format characters",
        ))
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    /// 1 to `max_text_bytes` (4096) bytes.
    text: String,
    /// Default `system`.
    user: Option<String>,
    /// Default `user` when `user` is given (a person or a bot speaking, as
    /// if sent), `system` when it is not (a notice from the app).
    kind: Option<Kind>,
    /// Idempotency key, 1-64 characters; default a generated one.
    client_id: Option<String>,
    /// A reply: the offset of the message it answers (current epoch).
    #[schema(minimum = 1)]
    reply_to: Option<u64>,
}

/// Publish into a room as if sent; answers the `ack` fields.
#[utoipa::path(
    post,
    path = "/v1/rooms/{room}/messages",
    tag = "rooms",
    params(("room" = String, Path, description = "Room name, `^[A-Za-z0-9_.:-]{1,128}$`")),
    request_body = PublishBody,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Stored, or a duplicate `client_id` (`duplicate: true`)", body = Ack),
        (status = 400, description = "Bad room, body, user or client_id", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 408, description = "The body took longer than `CHAT_BODY_TIMEOUT`", body = ErrorBody),
        (status = 404, description = "`reply_to` names no message of the room's current epoch", body = ErrorBody),
        (status = 413, description = "`too_large`: text over `max_text_bytes`, or a body over 64 KiB", body = ErrorBody),
        ServerErrors,
    )
)]
pub async fn publish(
    State(state): State<Shared>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Ack>> {
    admin(&state, &headers)?;
    room_name(&room)?;
    let body: PublishBody = super::body::json(&state, body).await?;
    text(&state, &body.text)?;
    // A message with an author is that author's; one without is a notice.
    let default_kind = if body.user.is_some() {
        Kind::User
    } else {
        Kind::System
    };
    let kind = body.kind.unwrap_or(default_kind);
    let user = body.user.unwrap_or_else(|| "system".to_owned());
    user_id(&user)?;
    let client_id = client_id(body.client_id)?;
    let op = match body.reply_to {
        Some(0) => return Err(ApiError::bad("reply_to must be an offset of 1 or more")),
        Some(to) => Op::Reply { to },
        None => Op::Post,
    };
    let e = Entry {
        op,
        ..Entry::message(&room, &user, &body.text, &client_id, kind)
    };
    Ok(Json(store_and_deliver(&state, &e).await?))
}

fn text(state: &crate::state::AppState, text: &str) -> ApiResult<()> {
    let max = state.settings.limits.max_text_bytes;
    if text.is_empty() {
        return Err(ApiError::bad("text must not be empty"));
    }
    if text.len() > max {
        return Err(ApiError::new(
            chat_core::protocol::ErrorCode::TooLarge,
            format!("text is over {max} bytes"),
        ));
    }
    Ok(())
}

fn client_id(given: Option<String>) -> ApiResult<String> {
    match given {
        Some(c) if valid_client_id(&c) => Ok(c),
        Some(_) => Err(ApiError::bad("client_id must be 1 to 64 characters")),
        None => Ok(format!("http-{:016x}", rand::random::<u64>())),
    }
}

fn target_epoch(epoch: Option<&str>) -> ApiResult<()> {
    if epoch.is_some_and(|e| !valid_epoch(e)) {
        return Err(ApiError::bad("epoch must match ^[A-Za-z0-9_-]{1,64}$"));
    }
    Ok(())
}

fn offset(offset: u64) -> ApiResult<u64> {
    if offset == 0 {
        return Err(ApiError::bad("offsets start at 1"));
    }
    Ok(offset)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct EditBody {
    /// The message's author: only they may edit it.
    user: String,
    /// The new text, 1 to `max_text_bytes` bytes.
    text: String,
    /// Idempotency key, 1-64 characters; default a generated one.
    client_id: Option<String>,
    /// The epoch of the message; the room's current one when absent.
    epoch: Option<String>,
}

/// Edit a message as its author (a bot's own message, say): stores an
/// `edit` event at the next offset; answers its `ack` fields.
#[utoipa::path(
    patch,
    path = "/v1/rooms/{room}/messages/{offset}",
    tag = "rooms",
    params(
        ("room" = String, Path, description = "Room name"),
        ("offset" = u64, Path, description = "The message's offset"),
    ),
    request_body = EditBody,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Stored, or a duplicate `client_id` (`duplicate: true`)", body = Ack),
        (status = 400, description = "Bad room, offset, body or user; or the offset is an event", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 403, description = "`user` is not the message's author", body = ErrorBody),
        (status = 404, description = "No such message in the epoch, deleted, or no longer in Redis", body = ErrorBody),
        (status = 408, description = "The body took longer than `CHAT_BODY_TIMEOUT`", body = ErrorBody),
        (status = 413, description = "`too_large`: text over `max_text_bytes`, or a body over 64 KiB", body = ErrorBody),
        ServerErrors,
    )
)]
pub async fn edit_message(
    State(state): State<Shared>,
    Path((room, target)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Ack>> {
    admin(&state, &headers)?;
    room_name(&room)?;
    let target = offset(target)?;
    let body: EditBody = super::body::json(&state, body).await?;
    text(&state, &body.text)?;
    user_id(&body.user)?;
    target_epoch(body.epoch.as_deref())?;
    let client_id = client_id(body.client_id)?;
    let e = Entry {
        op: Op::Edit {
            target,
            epoch: body.epoch.as_deref(),
        },
        ..Entry::message(&room, &body.user, &body.text, &client_id, Kind::User)
    };
    Ok(Json(store_and_deliver(&state, &e).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// The epoch of the message; the room's current one when absent.
    epoch: Option<String>,
    /// Idempotency key, 1-64 characters; default a generated one.
    client_id: Option<String>,
}

/// Delete any message, as a moderator would: stores a `delete` event by
/// `system` at the next offset, and removes the message's text (and its
/// edits') from Redis and the archive.
#[utoipa::path(
    delete,
    path = "/v1/rooms/{room}/messages/{offset}",
    tag = "rooms",
    params(
        ("room" = String, Path, description = "Room name"),
        ("offset" = u64, Path, description = "The message's offset"),
        DeleteQuery,
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Deleted, or a duplicate `client_id` (`duplicate: true`)", body = Ack),
        (status = 400, description = "Bad room, offset or query; or the offset is an event", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such message in the epoch, or already deleted", body = ErrorBody),
        ServerErrors,
    )
)]
pub async fn delete_message(
    State(state): State<Shared>,
    Path((room, target)): Path<(String, u64)>,
    headers: HeaderMap,
    query: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Ack>> {
    admin(&state, &headers)?;
    room_name(&room)?;
    let target = offset(target)?;
    let Query(q) = query.map_err(|e| ApiError::bad(format!("invalid query: {e}")))?;
    target_epoch(q.epoch.as_deref())?;
    let client_id = client_id(q.client_id)?;
    let e = Entry {
        op: Op::Delete {
            target,
            epoch: q.epoch.as_deref(),
            staff: true,
        },
        ..Entry::message(&room, "system", "", &client_id, Kind::User)
    };
    Ok(Json(store_and_deliver(&state, &e).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReactBody {
    /// Who reacts.
    user: String,
    /// 1 to 32 bytes, no spaces, control or format characters.
    emoji: String,
    /// Take the reaction back.
    #[serde(default)]
    remove: bool,
    /// Idempotency key, 1-64 characters; default a generated one.
    client_id: Option<String>,
    /// The epoch of the message; the room's current one when absent.
    epoch: Option<String>,
}

/// React to a message as `user` (or take the reaction back): stores a
/// `reaction` event at the next offset. A reaction already as asked
/// stores nothing and answers `duplicate: true` with offset 0.
#[utoipa::path(
    post,
    path = "/v1/rooms/{room}/messages/{offset}/reactions",
    tag = "rooms",
    params(
        ("room" = String, Path, description = "Room name"),
        ("offset" = u64, Path, description = "The message's offset"),
    ),
    request_body = ReactBody,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Stored, unchanged (offset 0) or a duplicate `client_id`", body = Ack),
        (status = 400, description = "Bad room, offset, body, user or emoji; the offset is an event; or the message has 20 different reactions", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such message in the epoch, deleted, or no longer in Redis", body = ErrorBody),
        (status = 408, description = "The body took longer than `CHAT_BODY_TIMEOUT`", body = ErrorBody),
        (status = 413, description = "A body over 64 KiB", body = ErrorBody),
        ServerErrors,
    )
)]
pub async fn react(
    State(state): State<Shared>,
    Path((room, target)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Ack>> {
    admin(&state, &headers)?;
    room_name(&room)?;
    let target = offset(target)?;
    let body: ReactBody = super::body::json(&state, body).await?;
    user_id(&body.user)?;
    if !valid_emoji(&body.emoji) {
        return Err(ApiError::bad(
            "emoji must be 1 to 32 bytes without spaces or control characters",
        ));
    }
    target_epoch(body.epoch.as_deref())?;
    let client_id = client_id(body.client_id)?;
    let e = Entry {
        op: Op::React {
            target,
            epoch: body.epoch.as_deref(),
            emoji: &body.emoji,
            remove: body.remove,
        },
        ..Entry::message(&room, &body.user, "", &client_id, Kind::User)
    };
    Ok(Json(store_and_deliver(&state, &e).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Offset (exclusive) the page ends below; the newest messages without it.
    before: Option<u64>,
    /// The epoch `before` counts in (from a `next` cursor).
    epoch: Option<String>,
    /// Default 50.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// The replies to the message at this offset (current epoch) instead
    /// of the room; `before` then counts among the replies.
    #[param(minimum = 1)]
    thread: Option<u64>,
}

/// A history page, as the `history` frame.
#[derive(Serialize, ToSchema)]
pub struct HistoryBody {
    room: String,
    /// The epoch of this page's messages (`""` for an expired room).
    epoch: String,
    /// Consecutive offsets, oldest first.
    messages: Vec<Message>,
    /// The next older page, null when nothing older exists.
    #[schema(required = true)]
    next: Option<HistoryCursor>,
}

/// History of a room, as the `history` frame.
#[utoipa::path(
    get,
    path = "/v1/rooms/{room}/messages",
    tag = "rooms",
    params(("room" = String, Path, description = "Room name"), HistoryQuery),
    security(("api_key" = []), ("user_jwt" = [])),
    responses(
        (status = 200, description = "A page of messages", body = HistoryBody),
        (status = 400, description = "Bad room, limit, epoch or query", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key or token", body = ErrorBody),
        (status = 403, description = "The user may not join the room", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Redis or the archive unavailable, retry", body = ErrorBody),
    )
)]
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
    let viewer = admin_or_member(&state, &headers, &room).await?;
    target_epoch(q.epoch.as_deref())?;
    let page = match q.thread {
        Some(0) => return Err(ApiError::bad("thread must be an offset of 1 or more")),
        Some(parent) => {
            let viewer = viewer.as_deref().unwrap_or("");
            crate::history::thread(&state, &room, parent, q.before, limit, viewer).await?
        }
        None => {
            crate::history::page(
                &state,
                &room,
                q.epoch.as_deref(),
                q.before,
                limit,
                viewer.as_deref(),
            )
            .await?
        }
    };
    Ok(Json(HistoryBody {
        room,
        epoch: page.epoch,
        messages: page.messages,
        next: page.next,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct DeletedBody {
    room: String,
    /// Archived messages removed (0 without the archive); null when the
    /// archive could not be reached: they are removed in the background.
    #[schema(required = true)]
    archived_messages_deleted: Option<u64>,
}

/// `DELETE /v1/rooms/{room}` (admin): the room goes everywhere. Its sockets
/// get a `system` message saying so, then `left`; its Redis keys, archived
/// messages and summaries are removed. A later `send` starts a new room.
#[utoipa::path(
    delete,
    path = "/v1/rooms/{room}",
    tag = "rooms",
    params(("room" = String, Path, description = "Room name")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Deleted", body = DeletedBody),
        (status = 400, description = "Bad room name", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        ServerErrors,
    )
)]
pub async fn delete_room(
    State(state): State<Shared>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<DeletedBody>> {
    admin(&state, &headers)?;
    room_name(&room)?;
    // Stored like any message, so every node delivers it in offset order.
    let notice = append(
        &state,
        &room,
        "system",
        "this room was deleted",
        &format!("room-deleted-{:016x}", rand::random::<u64>()),
        Kind::System,
    )
    .await?;
    let mut conn = state.redis.clone();
    // The tombstone first: from now on the archive skips what it still has
    // pending of this room up to the notice.
    let _: () = redis::pipe()
        .set_ex(
            state.keys.room_deleted(&room),
            RoomTombstone {
                at_ms: notice.ts,
                epoch: &notice.epoch,
            }
            .encode(),
            30 * 86_400,
        )
        .ignore()
        .publish(
            state.keys.control_channel(),
            Control::RoomDeleted {
                room: room.as_str().into(),
                offset: notice.offset,
                epoch: notice.epoch.as_str().into(),
            }
            .encode(),
        )
        .ignore()
        .query_async(&mut conn)
        .await?;
    let _: () = conn.del(state.keys.room_keys(&room)).await?;
    let archived = match &state.archive {
        Some(a) => {
            let first = a.delete_room(&room).await;
            if let Err(e) = &first {
                tracing::warn!(room, error = %e, "deleting archived messages failed; retrying in the background");
            }
            // Again once a worker that read no tombstone just before it was
            // set has finished its write (or timed out), and until a delete
            // succeeds if the first one failed.
            let (a, r) = (a.clone(), room.clone());
            let wait = state
                .settings
                .mongodb
                .as_ref()
                .map_or(Duration::from_secs(10), |m| m.timeout)
                + Duration::from_secs(5);
            tokio::spawn(async move {
                for _ in 0..30 {
                    tokio::time::sleep(wait).await;
                    match a.delete_room(&r).await {
                        Ok(n) => {
                            if n > 0 {
                                tracing::info!(
                                    room = r,
                                    n,
                                    "archived messages of a deleted room removed"
                                );
                            }
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(room = r, error = %e, "deleting a deleted room's archive failed; retrying")
                        }
                    }
                }
            });
            first.ok()
        }
        None => Some(0),
    };
    tracing::info!(room, archived, "room deleted");
    Ok(Json(DeletedBody {
        room,
        archived_messages_deleted: archived,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    /// `owner`, `moderator` or `member`; a change is a `system` message
    /// in the room. Left out, the role stays as it is.
    role: Option<String>,
}

/// Make a user a member of a room (grants `join`, makes them a push
/// recipient), optionally with a role.
#[utoipa::path(
    put,
    path = "/v1/rooms/{room}/members/{user}",
    tag = "rooms",
    params(
        ("room" = String, Path, description = "Room name"),
        ("user" = String, Path, description = "User id, 1-256 characters without control characters"),
    ),
    request_body(content = Option<MemberBody>, description = "Optional: the member's role"),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "A member"),
        (status = 400, description = "Bad room, user or role", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        ServerErrors,
    )
)]
pub async fn put_member(
    State(state): State<Shared>,
    Path((room, user)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    admin(&state, &headers)?;
    room_name(&room)?;
    user_id(&user)?;
    let body: Option<MemberBody> = super::body::optional_json(&state, body).await?;
    let role = match body.and_then(|b| b.role) {
        Some(r) => Some(
            Role::parse(&r)
                .ok_or_else(|| ApiError::bad("role must be owner, moderator or member"))?,
        ),
        None => None,
    };
    let mut conn = state.redis.clone();
    // A new push recipient, maybe absent: the all-present marker goes after it.
    let _: () = redis::pipe()
        .sadd(state.keys.room_members(&room), &user)
        .ignore()
        .sadd(state.keys.user_rooms(&user), &room)
        .ignore()
        .del(state.keys.room_all_present(&room))
        .ignore()
        .query_async(&mut conn)
        .await?;
    if let Some(role) = role {
        moderation::set_role(&state, &room, &user, role).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ModerateBody {
    user: String,
    /// `mute`, `unmute`, `ban` or `unban`.
    action: String,
    /// How long a mute or ban lasts; without it, until lifted.
    #[schema(minimum = 1)]
    duration_secs: Option<u64>,
}

/// Mute, ban or lift either, as the app's staff: the action is a `system`
/// message in the room; a ban takes the user out of the room on every node.
#[utoipa::path(
    post,
    path = "/v1/rooms/{room}/moderation",
    tag = "rooms",
    params(("room" = String, Path, description = "Room name")),
    request_body = ModerateBody,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Done: the `ack` of its system message", body = Ack),
        (status = 400, description = "Bad room, user, action or duration", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 408, description = "The body took longer than `CHAT_BODY_TIMEOUT`", body = ErrorBody),
        (status = 413, description = "A body over 64 KiB", body = ErrorBody),
        ServerErrors,
    )
)]
pub async fn moderate(
    State(state): State<Shared>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Ack>> {
    admin(&state, &headers)?;
    room_name(&room)?;
    let body: ModerateBody = super::body::json(&state, body).await?;
    user_id(&body.user)?;
    let action = ModAction::parse(&body.action)
        .ok_or_else(|| ApiError::bad("action must be mute, unmute, ban or unban"))?;
    if body.duration_secs == Some(0) {
        return Err(ApiError::bad("duration_secs must be 1 or more"));
    }
    let ack =
        moderation::sanction(&state, &room, None, &body.user, action, body.duration_secs).await?;
    Ok(Json(ack))
}

/// Withdraw a membership: the user's sockets that joined by membership close 4003.
#[utoipa::path(
    delete,
    path = "/v1/rooms/{room}/members/{user}",
    tag = "rooms",
    params(
        ("room" = String, Path, description = "Room name"),
        ("user" = String, Path, description = "User id"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "Not a member (also when it was not one)"),
        (status = 400, description = "Bad room or user", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        ServerErrors,
    )
)]
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
        .srem(state.keys.user_rooms(&user), &room)
        .ignore()
        .publish(
            state.keys.control_channel(),
            Control::Withdrawn {
                room: room.as_str().into(),
                user: user.as_str().into(),
            }
            .encode(),
        )
        .ignore()
        .query_async(&mut conn)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct PresenceBody {
    room: String,
    /// Users with a socket in the room on any node.
    users: Vec<String>,
}

/// Users connected to the room now.
#[utoipa::path(
    get,
    path = "/v1/rooms/{room}/presence",
    tag = "rooms",
    params(("room" = String, Path, description = "Room name")),
    security(("api_key" = []), ("user_jwt" = [])),
    responses(
        (status = 200, description = "Users present", body = PresenceBody),
        (status = 400, description = "Bad room name", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key or token", body = ErrorBody),
        (status = 403, description = "The user may not join the room", body = ErrorBody),
        ServerErrors,
    )
)]
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
