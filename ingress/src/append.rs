//! The append shared by the WebSocket and HTTP paths.

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
    if let Some(lag) = state.backpressure.behind(chat_core::clock::now_ms()) {
        tracing::debug!(room, user, lag_ms = lag, "refused: deliveries are behind");
        metrics::counter!("chat_sends_refused_total", "reason" => "overloaded").increment(1);
        return Err(ErrorCode::Unavailable);
    }
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
    let r = state.scripts.append(&mut conn, &state.keys, &req).await;
    let result = match &r {
        Ok(a) if a.duplicate => "duplicate",
        Ok(_) => "stored",
        Err(_) => "error",
    };
    metrics::counter!("chat_appends_total", "result" => result).increment(1);
    r.map_err(|e| {
        tracing::warn!(room, user, error = %e, "append failed");
        metrics::counter!("chat_redis_errors_total", "service" => "ingress").increment(1);
        ErrorCode::from(&e)
    })
}

/// This node's sockets in the room get a message appended here at once,
/// without waiting for the fanout's round trip (called after the `ack` is
/// queued, so the sender sees its `ack` before its message): the hub delivers it only
/// when it is the next offset of the current epoch, and drops the fanout's
/// copy later as a duplicate (any other case is left to the fanout's copy,
/// which remains the delivery guarantee). The frame is the one the fanout
/// worker would publish (`chat_core::live`).
pub fn deliver_here(state: &AppState, ack: &Ack, user: &str, text: &str, kind: Kind) {
    if ack.duplicate {
        return;
    }
    let rooms = state.hubs.rooms();
    if !rooms.contains(&ack.room) {
        return;
    }
    let m = Message {
        room: ack.room.clone(),
        offset: ack.offset,
        id: ack.id.clone(),
        epoch: ack.epoch.clone(),
        user: user.to_owned(),
        text: text.to_owned(),
        ts: ack.ts,
        client_id: ack.client_id.clone(),
        kind,
    };
    rooms.dispatch_local(&ack.room, chat_core::live::local(&m).into());
}
