//! The store side shared by the WebSocket and HTTP paths: append and history.

use crate::hub::script_error_code;
use crate::state::AppState;
use chat_core::protocol::{Ack, ErrorCode, Kind, Message};
use chat_core::scripts::AppendRequest;

pub async fn append(
    state: &AppState,
    room: &str,
    user: &str,
    text: &str,
    client_id: &str,
    kind: Kind,
) -> Result<Ack, ErrorCode> {
    let streams = &state.settings.common.streams;
    let req = AppendRequest {
        room,
        user,
        text,
        client_id,
        kind,
        retention: streams.retention(room),
        dedup_window: streams.dedup.window,
        shard_maxlen: streams.fanout.shard_maxlen,
    };
    let mut conn = state.redis.clone();
    state
        .scripts
        .append(&mut conn, &state.keys, &req)
        .await
        .map_err(|e| {
            tracing::warn!(room, user, error = %e, "append failed");
            script_error_code(&e)
        })
}

pub async fn history(
    state: &AppState,
    room: &str,
    before: Option<u64>,
    limit: u32,
) -> Result<(String, Vec<Message>), ErrorCode> {
    let mut conn = state.redis.clone();
    state
        .scripts
        .history(&mut conn, &state.keys, room, before, limit)
        .await
        .map_err(|e| {
            tracing::warn!(room, error = %e, "history failed");
            script_error_code(&e)
        })
}
