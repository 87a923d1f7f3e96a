//! Unread counts (`GET /v1/unread`, all of a user's rooms in one call) and
//! read receipts (`GET /v1/rooms/{room}/receipts`, rooms that allow them).

use super::caller::{Caller, admin_or_member, admin_or_user};
use super::error::{ApiError, ApiResult, ErrorBody, ServerErrors};
use super::rooms::room_name;
use crate::state::Shared;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use chat_core::protocol::ErrorCode;
use serde::Serialize;
use utoipa::ToSchema;

/// At most this many of a user's rooms are counted, newest names last.
const MAX_ROOMS: usize = 500;

#[derive(Serialize, ToSchema)]
pub struct RoomUnread {
    room: String,
    /// The room's current epoch.
    epoch: String,
    /// Messages of others after the user's read marker, up to 100 ("100 or more").
    unread: u64,
    /// The read marker's offset in `epoch` (0 when none).
    read: u64,
    /// The room's last offset.
    last: u64,
}

#[derive(Serialize, ToSchema)]
pub struct UnreadBody {
    /// The user's rooms (joined, or member of), by name.
    rooms: Vec<RoomUnread>,
    /// The sum of `unread` (the app badge).
    total: u64,
}

/// The caller's unread count in each of their rooms: the rooms they joined
/// or were made a member of. Rooms that no longer exist are left out (and
/// forgotten).
#[utoipa::path(
    get,
    path = "/v1/unread",
    tag = "rooms",
    security(("user_jwt" = [])),
    responses(
        (status = 200, description = "Unread counts", body = UnreadBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "An API key: this is a user's call", body = ErrorBody),
        ServerErrors,
    )
)]
pub async fn unread(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> ApiResult<Json<UnreadBody>> {
    let Caller::User(claims) = admin_or_user(&state, &headers).await? else {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "a user's call: send the user's token",
        ));
    };
    let user = claims.sub.as_str();
    let rooms = counts(&state, user).await?;
    let total = rooms.iter().map(|r| r.unread).sum();
    Ok(Json(UnreadBody { rooms, total }))
}

/// Each of `user`'s rooms with its unread count, by name.
pub async fn counts(state: &crate::state::AppState, user: &str) -> ApiResult<Vec<RoomUnread>> {
    let mut conn = state.redis.clone();
    let key = state.keys.user_rooms(user);
    let mut names: Vec<String> = redis::AsyncCommands::smembers(&mut conn, &key).await?;
    names.sort();
    names.truncate(MAX_ROOMS);
    let mut out = Vec::with_capacity(names.len());
    let mut gone = Vec::new();
    for room in names {
        let u = state
            .scripts
            .unread(&mut conn, &state.keys, &room, user)
            .await
            .map_err(|e| ApiError::from(ErrorCode::from(&e)))?;
        if u.epoch.is_empty() {
            gone.push(room);
            continue;
        }
        out.push(RoomUnread {
            room,
            epoch: u.epoch,
            unread: u.unread,
            read: u.read,
            last: u.last,
        });
    }
    if !gone.is_empty() {
        let _: redis::RedisResult<()> = redis::AsyncCommands::srem(&mut conn, &key, gone).await;
    }
    Ok(out)
}

#[derive(Serialize, ToSchema)]
pub struct Receipt {
    user: String,
    /// Read up to this offset of `epoch`.
    offset: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ReceiptsBody {
    room: String,
    epoch: String,
    /// Members' read markers in the current epoch, by user.
    receipts: Vec<Receipt>,
}

/// Members' read markers, for a room whose policy turns read receipts on
/// (`read_receipts` in streams.toml).
#[utoipa::path(
    get,
    path = "/v1/rooms/{room}/receipts",
    tag = "rooms",
    params(("room" = String, Path, description = "Room name")),
    security(("api_key" = []), ("user_jwt" = [])),
    responses(
        (status = 200, description = "Read markers", body = ReceiptsBody),
        (status = 400, description = "Bad room name", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key or token", body = ErrorBody),
        (status = 403, description = "The user may not join the room, or the room does not show read receipts", body = ErrorBody),
        ServerErrors,
    )
)]
pub async fn receipts(
    State(state): State<Shared>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<ReceiptsBody>> {
    room_name(&room)?;
    let viewer = admin_or_member(&state, &headers, &room).await?;
    if viewer.is_some() && !state.settings.common.streams.retention(&room).read_receipts {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "this room does not show read receipts",
        ));
    }
    let mut conn = state.redis.clone();
    let (epoch, marks): (Option<String>, Vec<(String, String)>) = redis::pipe()
        .hget(state.keys.room_meta(&room), "epoch")
        .hgetall(state.keys.room_reads(&room))
        .query_async(&mut conn)
        .await?;
    let epoch = epoch.unwrap_or_default();
    let mut receipts: Vec<Receipt> = marks
        .into_iter()
        .filter_map(|(user, mark)| {
            let (e, o) = mark.rsplit_once(':')?;
            (e == epoch)
                .then(|| o.parse().ok())
                .flatten()
                .map(|offset| Receipt { user, offset })
        })
        .collect();
    receipts.sort_by(|a, b| a.user.cmp(&b.user));
    Ok(Json(ReceiptsBody {
        room,
        epoch,
        receipts,
    }))
}
