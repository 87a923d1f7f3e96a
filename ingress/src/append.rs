//! The append shared by the WebSocket and HTTP paths: messages, replies
//! and the events acting on messages (edit, delete, react).

use crate::state::AppState;
use chat_core::protocol::{Ack, ErrorCode, Kind, Message, Refusal};
use chat_core::scripts::{AppendRequest, Checks, Op, ScriptError};

/// One entry to store.
#[derive(Clone, Copy)]
pub struct Entry<'a> {
    pub room: &'a str,
    pub user: &'a str,
    pub text: &'a str,
    pub client_id: &'a str,
    /// The kind of a message; an event's comes from `op`.
    pub kind: Kind,
    pub op: Op<'a>,
    /// A user's own frame: their mute, the room's slow mode.
    pub checks: Checks,
}

impl<'a> Entry<'a> {
    /// A message.
    pub fn message(
        room: &'a str,
        user: &'a str,
        text: &'a str,
        client_id: &'a str,
        kind: Kind,
    ) -> Self {
        Self {
            room,
            user,
            text,
            client_id,
            kind,
            op: Op::Post,
            checks: Checks::default(),
        }
    }
}

pub async fn append(
    state: &AppState,
    room: &str,
    user: &str,
    text: &str,
    client_id: &str,
    kind: Kind,
) -> Result<Ack, ErrorCode> {
    store(state, &Entry::message(room, user, text, client_id, kind))
        .await
        .map_err(|r| r.code)
}

/// Stores `e`; a refusal names what was wrong (an event's target).
pub async fn store(state: &AppState, e: &Entry<'_>) -> Result<Ack, Refusal> {
    let (room, user) = (e.room, e.user);
    if let Some(lag) = state.backpressure.behind(chat_core::clock::now_ms()) {
        tracing::debug!(room, user, lag_ms = lag, "refused: deliveries are behind");
        metrics::counter!("chat_sends_refused_total", "reason" => "overloaded").increment(1);
        return Err(Refusal::new(
            ErrorCode::Unavailable,
            "deliveries are behind; retry with the same client_id",
        ));
    }
    let streams = &state.settings.common.streams;
    let req = AppendRequest {
        room,
        user,
        text: e.text,
        client_id: e.client_id,
        kind: e.kind,
        retention: streams.retention(room),
        dedup_window: streams.dedup.window,
        shard_maxlen: streams.fanout.shard_maxlen,
        op: e.op,
        checks: e.checks,
    };
    let mut conn = state.redis.clone();
    let r = match e.op {
        Op::Post | Op::Reply { .. } | Op::StaffPost { .. } | Op::Notice { .. } => {
            state.scripts.append(&mut conn, &state.keys, &req).await
        }
        _ => state.scripts.act(&mut conn, &state.keys, &req).await,
    };
    let result = match &r {
        Ok(a) if a.duplicate => "duplicate",
        Ok(_) => "stored",
        Err(ScriptError::Refused(_)) => "refused",
        Err(_) => "error",
    };
    metrics::counter!("chat_appends_total", "result" => result).increment(1);
    r.map_err(|err| match err {
        ScriptError::Refused(r) => r,
        err => {
            tracing::warn!(room, user, error = %err, "append failed");
            metrics::counter!("chat_redis_errors_total", "service" => "ingress").increment(1);
            Refusal::new(ErrorCode::from(&err), "not stored")
        }
    })
}

/// Stores `e` and hands it to this node's sockets: the HTTP paths, whose
/// caller is not one of those sockets (a socket's own `send` queues its
/// `ack` first).
pub async fn store_and_deliver(state: &AppState, e: &Entry<'_>) -> Result<Ack, Refusal> {
    let ack = store(state, e).await?;
    deliver_here(state, &ack, e);
    Ok(ack)
}

/// This node's sockets in the room get a message appended here at once,
/// without waiting for the fanout's round trip (called after the `ack` is
/// queued, so the sender sees its `ack` before its message): the hub delivers it only
/// when it is the next offset of the current epoch, and drops the fanout's
/// copy later as a duplicate (any other case is left to the fanout's copy,
/// which remains the delivery guarantee). The frame is the one the fanout
/// worker would publish (`chat_core::live`).
pub fn deliver_here(state: &AppState, ack: &Ack, e: &Entry<'_>) {
    if ack.duplicate {
        return;
    }
    let rooms = state.hubs.rooms();
    if !rooms.contains(&ack.room) {
        return;
    }
    let mut m = Message {
        room: ack.room.clone(),
        offset: ack.offset,
        id: ack.id.clone(),
        epoch: ack.epoch.clone(),
        user: e.user.to_owned(),
        text: e.text.to_owned(),
        ts: ack.ts,
        client_id: ack.client_id.clone(),
        kind: e.op.kind(e.kind),
        ..Default::default()
    };
    match e.op {
        Op::Post | Op::StaffPost { reply_to: None } => {}
        Op::Reply { to } | Op::StaffPost { reply_to: Some(to) } => m.reply_to = Some(to),
        Op::Notice { action } => m.notice = serde_json::from_str(action).ok(),
        Op::Edit { target, .. } | Op::Delete { target, .. } => m.target = Some(target),
        Op::React {
            target,
            emoji,
            remove,
            ..
        } => {
            m.target = Some(target);
            m.emoji = Some(emoji.to_owned());
            m.removed = remove;
        }
    }
    rooms.dispatch_local(&ack.room, chat_core::live::local(&m).into());
}
