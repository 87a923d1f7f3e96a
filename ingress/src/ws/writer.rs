//! The socket's writer: drains the outbound queue, batching frames (`feed`
//! then one `flush`), streams recoveries from the room stream, sends pings,
//! and ends with the close code asked for.

use super::outbound::{Closer, Out, Replay, close_reason};
use crate::hub::message_frame;
use crate::state::Shared;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use chat_core::protocol::close;
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use std::time::Duration;
use tokio::sync::mpsc;

const BATCH: usize = 64;
/// Messages read from Redis per replay step.
const REPLAY_CHUNK: u64 = 200;

type Sink = SplitSink<WebSocket, Message>;

enum WriteError {
    /// The peer is gone.
    Socket,
    /// A recovery could not be completed (Redis down, or the range trimmed
    /// meanwhile): the client must reconnect and re-join.
    Replay,
}

pub async fn run(state: Shared, mut sink: Sink, mut rx: mpsc::Receiver<Out>, closer: Closer) {
    let ping_every = state.settings.limits.ping_interval;
    let mut ping = tokio::time::interval(ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    loop {
        tokio::select! {
            biased;
            _ = closer.closed() => break,
            m = rx.recv() => {
                let Some(first) = m else { break };
                match write_batch(&state, &mut sink, &mut rx, first).await {
                    Ok(()) => {}
                    Err(WriteError::Socket) => {
                        closer.close(close::GOING_AWAY);
                        return;
                    }
                    Err(WriteError::Replay) => {
                        closer.close(close::GOING_AWAY);
                        break;
                    }
                }
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    closer.close(close::GOING_AWAY);
                    return;
                }
            }
        }
    }
    let code = closer.code();
    // A drain or an auth failure flushes what was queued (the error frame
    // that explains the close); a slow consumer is cut off at once.
    if code != close::POLICY {
        while let Ok(out) = rx.try_recv() {
            if write_one(&state, &mut sink, out).await.is_err() {
                break;
            }
        }
        let _ = sink.flush().await;
    }
    let frame = (code != 0).then(|| CloseFrame {
        code,
        reason: close_reason(code).into(),
    });
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = sink.send(Message::Close(frame)).await;
        let _ = sink.close().await;
    })
    .await;
}

async fn write_batch(
    state: &Shared,
    sink: &mut Sink,
    rx: &mut mpsc::Receiver<Out>,
    first: Out,
) -> Result<(), WriteError> {
    write_one(state, sink, first).await?;
    for _ in 1..BATCH {
        match rx.try_recv() {
            Ok(out) => write_one(state, sink, out).await?,
            Err(_) => break,
        }
    }
    sink.flush().await.map_err(|_| WriteError::Socket)
}

async fn write_one(state: &Shared, sink: &mut Sink, out: Out) -> Result<(), WriteError> {
    match out {
        Out::Frame(t) => sink
            .feed(Message::Text(t))
            .await
            .map_err(|_| WriteError::Socket),
        Out::Replay(r) => replay(state, sink, &r).await,
    }
}

/// Streams messages `from..=to` in chunks, checking that none is missing.
async fn replay(state: &Shared, sink: &mut Sink, r: &Replay) -> Result<(), WriteError> {
    let mut conn = state.redis.clone();
    let mut next = r.from;
    while next <= r.to {
        let want = (r.to - next + 1).min(REPLAY_CHUNK);
        let range = state
            .scripts
            .range(&mut conn, &state.keys, &r.room, next - 1, want)
            .await
            .map_err(|e| {
                tracing::warn!(room = %r.room, error = %e, "recovery read failed");
                WriteError::Replay
            })?;
        if range.epoch != r.epoch {
            return Err(WriteError::Replay);
        }
        for m in range.messages.iter().take_while(|m| m.offset <= r.to) {
            if m.offset != next {
                tracing::warn!(room = %r.room, want = next, got = m.offset, "recovery range trimmed meanwhile");
                return Err(WriteError::Replay);
            }
            sink.feed(Message::Text(message_frame(m)))
                .await
                .map_err(|_| WriteError::Socket)?;
            next += 1;
        }
        if range.messages.is_empty() {
            return Err(WriteError::Replay);
        }
        sink.flush().await.map_err(|_| WriteError::Socket)?;
    }
    Ok(())
}
