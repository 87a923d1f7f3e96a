//! The socket's writer: drains the outbound queue, batching frames (`feed`
//! then one `flush`), sends pings, and ends with the close code asked for.

use super::outbound::{Closer, Out, close_reason};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use chat_core::protocol::close;
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use std::time::Duration;
use tokio::sync::mpsc;

const BATCH: usize = 64;

pub async fn run(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Out>,
    closer: Closer,
    ping_every: Duration,
) {
    let mut ping = tokio::time::interval(ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    loop {
        tokio::select! {
            biased;
            _ = closer.closed() => break,
            m = rx.recv() => {
                let Some(first) = m else { break };
                if write_batch(&mut sink, &mut rx, first).await.is_err() {
                    closer.close(close::GOING_AWAY);
                    return;
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
        while let Ok(t) = rx.try_recv() {
            if sink.feed(Message::Text(t)).await.is_err() {
                return;
            }
        }
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
    sink: &mut SplitSink<WebSocket, Message>,
    rx: &mut mpsc::Receiver<Out>,
    first: Out,
) -> Result<(), axum::Error> {
    sink.feed(Message::Text(first)).await?;
    for _ in 1..BATCH {
        match rx.try_recv() {
            Ok(t) => sink.feed(Message::Text(t)).await?,
            Err(_) => break,
        }
    }
    sink.flush().await
}
