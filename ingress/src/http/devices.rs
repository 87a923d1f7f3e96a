//! Device tokens for push: `POST /v1/devices`, `DELETE /v1/devices/{token}`,
//! authenticated with the user's JWT. Tokens are kept per user, scored by
//! when they were last registered; past `notify.max_devices_per_user` the
//! least recently seen are dropped. A token registered by another user moves.

use super::caller::{Caller, admin_or_user};
use super::error::{ApiError, ApiResult, ErrorBody, ServerErrors};
use crate::state::Shared;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chat_core::protocol::ErrorCode;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DeviceBody {
    /// The FCM registration token, 1-4096 printable ASCII characters.
    token: String,
    /// `android`, `ios` or `web`.
    platform: String,
}

#[derive(Serialize, ToSchema)]
pub struct Device {
    token: String,
    platform: String,
    /// When it was last registered, in ms since the epoch.
    last_seen: u64,
}

const PLATFORMS: [&str; 3] = ["android", "ios", "web"];

/// FCM registration tokens are printable ASCII; braces would break the key's hash tag.
fn token_ok(token: &str) -> ApiResult<()> {
    if token.is_empty()
        || token.len() > 4096
        || !token
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
    {
        return Err(ApiError::bad(
            "token must be 1-4096 printable ASCII characters",
        ));
    }
    Ok(())
}

async fn user(state: &Shared, headers: &HeaderMap) -> ApiResult<String> {
    match admin_or_user(state, headers).await? {
        Caller::User(claims) => Ok(claims.sub),
        Caller::Admin => Err(ApiError::new(
            ErrorCode::Forbidden,
            "devices belong to users: use the user's token",
        )),
    }
}

use chat_core::clock::now_ms;

/// Register (or refresh) a push device token of the calling user.
#[utoipa::path(
    post,
    path = "/v1/devices",
    tag = "devices",
    request_body = DeviceBody,
    security(("user_jwt" = [])),
    responses(
        (status = 200, description = "Registered", body = Device),
        (status = 400, description = "Bad body, token or platform", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "An admin API key: devices belong to users", body = ErrorBody),
        (status = 408, description = "The body took longer than `CHAT_BODY_TIMEOUT`", body = ErrorBody),
        (status = 413, description = "`too_large`: body over 64 KiB", body = ErrorBody),
        ServerErrors,
    )
)]
pub async fn register(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Device>> {
    let user = user(&state, &headers).await?;
    let body: DeviceBody = super::body::json(&state, body).await?;
    token_ok(&body.token)?;
    if !PLATFORMS.contains(&body.platform.as_str()) {
        return Err(ApiError::bad("platform must be android, ios or web"));
    }
    let k = &state.keys;
    let (devices, platforms) = (k.user_devices(&user), k.user_device_platforms(&user));
    let now = now_ms();
    let mut conn = state.redis.clone();
    let (previous, count): (Option<String>, u64) = redis::pipe()
        .cmd("SET")
        .arg(k.device_owner(&body.token))
        .arg(&user)
        .arg("GET")
        .zadd(&devices, &body.token, now)
        .ignore()
        .hset(&platforms, &body.token, &body.platform)
        .ignore()
        .zcard(&devices)
        .query_async(&mut conn)
        .await?;
    if let Some(prev) = previous.filter(|p| *p != user) {
        let _: () = redis::pipe()
            .zrem(k.user_devices(&prev), &body.token)
            .ignore()
            .hdel(k.user_device_platforms(&prev), &body.token)
            .ignore()
            .query_async(&mut conn)
            .await?;
    }
    let max = state.settings.common.streams.notify.max_devices_per_user;
    if count > max {
        let dropped: Vec<(String, f64)> = conn.zpopmin(&devices, (count - max) as isize).await?;
        let mut pipe = redis::pipe();
        for (token, _) in &dropped {
            pipe.hdel(&platforms, token)
                .ignore()
                .del(k.device_owner(token))
                .ignore();
        }
        let _: () = pipe.query_async(&mut conn).await?;
    }
    Ok(Json(Device {
        token: body.token,
        platform: body.platform,
        last_seen: now,
    }))
}

/// Drop a push device token of the calling user.
#[utoipa::path(
    delete,
    path = "/v1/devices/{token}",
    tag = "devices",
    params(("token" = String, Path, description = "The device token")),
    security(("user_jwt" = [])),
    responses(
        (status = 204, description = "Dropped"),
        (status = 400, description = "Bad token", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "An admin API key: devices belong to users", body = ErrorBody),
        (status = 404, description = "Not a device of this user", body = ErrorBody),
        ServerErrors,
    )
)]
pub async fn unregister(
    State(state): State<Shared>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let user = user(&state, &headers).await?;
    token_ok(&token)?;
    let k = &state.keys;
    let mut conn = state.redis.clone();
    let removed: u64 = conn.zrem(k.user_devices(&user), &token).await?;
    if removed == 0 {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "no such device for this user",
        ));
    }
    let owner: Option<String> = redis::pipe()
        .hdel(k.user_device_platforms(&user), &token)
        .ignore()
        .get(k.device_owner(&token))
        .query_async::<(Option<String>,)>(&mut conn)
        .await?
        .0;
    if owner.as_deref() == Some(user.as_str()) {
        let _: () = conn.del(k.device_owner(&token)).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
