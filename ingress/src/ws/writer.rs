//! The socket's writer: drains the outbound queue, batching frames (`feed`
//! then one `flush`), streams recoveries from the room stream, sends pings,
//! and ends with the close code asked for.

use crate::outbound::{Closer, Inbox, Out, Replay, close_reason, message_frame};
use crate::state::Shared;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use chat_core::protocol::close;
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use std::time::Duration;

const BATCH: usize = 64;
/// Messages read from Redis per replay step.
const REPLAY_CHUNK: u64 = 200;
/// A peer that accepts nothing for this long is too slow: it is closed 4008
/// instead of pinning the task and its queue.
const WRITE_STALL: Duration = Duration::from_secs(10);
/// The last frames and the close after the loop ends.
const FINAL_FLUSH: Duration = Duration::from_secs(3);

type Sink = SplitSink<WebSocket, Message>;

enum WriteError {
    /// The peer is gone.
    Socket,
    /// The peer took nothing for `WRITE_STALL`.
    Stalled,
    /// A recovery could not be completed (Redis down, or the range trimmed
    /// meanwhile): the client must reconnect and re-join.
    Replay,
}

pub async fn run(state: Shared, mut sink: Sink, mut rx: Inbox, closer: Closer) {
    let ping_every = state.settings.limits.ping_interval;
    let mut ping = tokio::time::interval(ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    // After a failed replay nothing queued behind it may go out: the client
    // would see a jump in offsets. It re-joins with `since` instead.
    let mut flush_queued = true;
    // Registered once: a fresh wait per turn would lock the token's waiter
    // list for every frame.
    let closed = closer.closed();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            biased;
            _ = &mut closed => break,
            m = rx.recv() => {
                let Some(first) = m else { break };
                let written = {
                    let write = write_batch(&state, &mut sink, &mut rx, first);
                    match guarded(write, closed.as_mut()).await {
                        Some(w) => w,
                        None => break,
                    }
                };
                match written {
                    Ok(bytes) => rx.written(bytes),
                    // The close frame queues behind what the peer has not
                    // taken; it sees 4008 if it ever reads again in time.
                    Err(WriteError::Stalled) => {
                        tracing::info!("peer took nothing for {WRITE_STALL:?}, closing 4008");
                        metrics::counter!("chat_slow_consumers_total").increment(1);
                        closer.close(close::POLICY);
                        break;
                    }
                    Err(WriteError::Socket) => {
                        closer.close(close::GOING_AWAY);
                        return;
                    }
                    Err(WriteError::Replay) => {
                        flush_queued = false;
                        closer.close(close::GOING_AWAY);
                        break;
                    }
                }
            }
            _ = ping.tick() => {
                let ping = async {
                    sink.send(Message::Ping(Default::default()))
                        .await
                        .map_err(|_| WriteError::Socket)
                };
                match guarded(ping, closed.as_mut()).await {
                    None => break,
                    Some(Ok(())) => {}
                    Some(Err(WriteError::Stalled)) => {
                        closer.close(close::POLICY);
                        break;
                    }
                    Some(Err(_)) => {
                        closer.close(close::GOING_AWAY);
                        return;
                    }
                }
            }
        }
    }
    let code = closer.code();
    let frame = (code != 0).then(|| CloseFrame {
        code,
        reason: close_reason(code).into(),
    });
    // A slow consumer's close frame waits behind what it has not read yet:
    // it gets as long as any stalled write to take it, so a client that
    // resumes reading in time learns why (4008) instead of seeing a reset.
    let grace = if code == close::POLICY {
        WRITE_STALL
    } else {
        FINAL_FLUSH
    };
    let _ = tokio::time::timeout(grace, async {
        // Queued frames are flushed (the error that explains the close, the
        // messages before a drain); a slow consumer is cut off at once, and
        // only a drain still streams recoveries.
        if code != close::POLICY && flush_queued {
            while let Some(out) = rx.try_recv() {
                let out = match out {
                    Out::Replay(_) if code != close::GOING_AWAY => continue,
                    out => out,
                };
                if write_one(&state, &mut sink, out, &mut rx.stamps)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let _ = sink.flush().await;
        }
        let _ = sink.send(Message::Close(frame)).await;
        let _ = sink.close().await;
    })
    .await;
}

/// Runs a write. Most finish at once (the kernel takes the bytes); only one
/// that has to wait races the closer and a stall deadline, so a peer that
/// stops reading cannot hold this task, and the common case arms no timer.
/// `None`: the socket was closed meanwhile.
async fn guarded<T>(
    write: impl Future<Output = Result<T, WriteError>>,
    closed: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<Result<T, WriteError>> {
    let mut write = std::pin::pin!(write);
    if let Some(w) = poll_once(&mut write).await {
        return Some(w);
    }
    tokio::select! {
        biased;
        _ = closed => None,
        w = tokio::time::timeout(WRITE_STALL, write) => Some(w.unwrap_or(Err(WriteError::Stalled))),
    }
}

/// Polls a future once: its output if it is ready, `None` if it would wait.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *f).poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// Writes `first` and what else is queued, up to a batch; returns the bytes
/// written, which stay counted against the socket until the flush is done.
async fn write_batch(
    state: &Shared,
    sink: &mut Sink,
    rx: &mut Inbox,
    first: Out,
) -> Result<usize, WriteError> {
    rx.stamps.clear();
    let mut bytes = Inbox::bytes_of(&first);
    write_one(state, sink, first, &mut rx.stamps).await?;
    for _ in 1..BATCH {
        match rx.try_recv() {
            Some(out) => {
                bytes += Inbox::bytes_of(&out);
                write_one(state, sink, out, &mut rx.stamps).await?
            }
            None => break,
        }
    }
    sink.flush().await.map_err(|_| WriteError::Socket)?;
    crate::hops::written(&rx.stamps, crate::hops::unix_us());
    Ok(bytes)
}

async fn write_one(
    state: &Shared,
    sink: &mut Sink,
    out: Out,
    stamps: &mut Vec<crate::hops::Stamp>,
) -> Result<(), WriteError> {
    match out {
        Out::Frame(t) => sink
            .feed(Message::Text(t))
            .await
            .map_err(|_| WriteError::Socket),
        Out::Live(t, stamp) => {
            stamps.push(stamp);
            sink.feed(Message::Text(t))
                .await
                .map_err(|_| WriteError::Socket)
        }
        // Boxed while it runs: rare, and inline it would sit in every
        // writer task's state for the socket's whole life.
        Out::Replay(r) => Box::pin(replay(state, sink, &r)).await,
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
        // Another epoch, or the next offset trimmed meanwhile: the client
        // re-joins and is told `recovered: false`.
        let (Some(from), Some(to)) = (range.read_from, range.read_to) else {
            tracing::warn!(room = %r.room, want = next, "recovery range gone meanwhile");
            return Err(WriteError::Replay);
        };
        // A read of consecutive offsets holds no hole: the offsets it has no
        // message for are entries that did not parse (skipped with a
        // warning), passed over as the live path does. A hole (an offset
        // with no entry) fails the replay, as a trim does.
        if range.epoch != r.epoch || from != next || range.read != to.saturating_sub(from) + 1 {
            tracing::warn!(room = %r.room, want = next, got = from, "recovery range trimmed meanwhile");
            return Err(WriteError::Replay);
        }
        for m in range.messages.iter().take_while(|m| m.offset <= r.to) {
            sink.feed(Message::Text(message_frame(m)))
                .await
                .map_err(|_| WriteError::Socket)?;
        }
        next = to.min(r.to) + 1;
        sink.flush().await.map_err(|_| WriteError::Socket)?;
    }
    Ok(())
}
