//! Drains and slow consumers: SIGTERM-style shutdown closes sockets 1001 and
//! stops workers; a reader that cannot keep up is closed 4008 and recovers.

use e2e::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_draining_node_closes_its_sockets_1001_and_stops() {
    let mut stack = Stack::builder().start().await;
    let mut c = stack.connect(0, "ann").await;
    c.join("drain").await;
    c.send("drain", "before", "d1").await;
    let node = stack.nodes.remove(0);
    node.shutdown.cancel();
    let (code, _) = c.until_closed().await;
    assert_eq!(code, Some(1001));
    tokio::time::timeout(Duration::from_secs(10), node.handle)
        .await
        .expect("ingress stops within its grace")
        .expect("ingress task");
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", node.addr))
            .await
            .is_err(),
        "a stopped node accepts no sockets"
    );
}

#[tokio::test]
async fn a_worker_stops_on_shutdown_after_its_batch() {
    let mut stack = Stack::builder().start().await;
    let w = stack.workers.remove(0);
    w.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), w.handle)
        .await
        .expect("worker stops within a block interval")
        .expect("worker task");
}

#[tokio::test]
async fn a_reader_too_slow_is_closed_4008_and_recovers_with_since() {
    // Large messages: the flood that fills the kernel's buffers and the
    // queue is a few hundred requests, quick even on a busy machine, so the
    // client reads again well within the close frame's 10 s wait.
    const TOTAL: u64 = 320;
    let stack = Stack::builder()
        .env("CHAT_OUTBOUND_QUEUE", "16")
        .env("CHAT_MAX_TEXT_BYTES", "60000")
        .start()
        .await;
    let mut slow = stack.connect(0, "slow").await;
    let joined = slow.join("flood").await;
    // The slow client stops reading while about 19 MB are published.
    let text = "x".repeat(60_000);
    let url = format!("{}/v1/rooms/flood/messages", stack.http(0));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (url, text) = (url.clone(), text.clone());
        tasks.push(tokio::spawn(async move {
            let http = http();
            for i in 0..TOTAL / 8 {
                http.post(&url)
                    .bearer_auth(API_KEY)
                    .json(&json!({"text": text, "client_id": format!("t{t}-{i}")}))
                    .send()
                    .await
                    .expect("publish");
            }
        }));
    }
    for t in tasks {
        t.await.expect("publisher");
    }
    let (code, frames) = slow.until_closed().await;
    assert_eq!(code, Some(4008), "closed as a slow consumer");
    let last = frames
        .iter()
        .filter(|f| f["type"] == "message")
        .filter_map(|f| f["offset"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(last < TOTAL, "it was cut off before the end");
    // Reconnect and recover exactly what was missed.
    let mut again = stack.connect(0, "slow").await;
    let j = again.join_since("flood", &joined["epoch"], last).await;
    assert_eq!(
        (j["recovered"].clone(), j["offset"].clone()),
        (json!(true), json!(TOTAL))
    );
    let rest = again.messages((TOTAL - last) as usize).await;
    let offsets: Vec<u64> = rest.iter().filter_map(|m| m["offset"].as_u64()).collect();
    assert_eq!(offsets, (last + 1..=TOTAL).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_request_head_that_never_finishes_is_closed_on_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::builder()
        .env("CHAT_HEAD_TIMEOUT", "300ms")
        .start()
        .await;
    // A real client, connected first: a finished handshake is not timed out
    // later, so it outlives the two below.
    let mut c = stack.connect(0, "ok").await;
    c.join("heads").await;
    // Slowloris: a handshake that starts and never ends, and a silent socket.
    let mut slow = tokio::net::TcpStream::connect(stack.nodes[0].addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /v1/ws HTTP/1.1\r\nHost: chat\r\nUpgrade: websocket\r\n")
        .await
        .expect("write");
    let mut silent = tokio::net::TcpStream::connect(stack.nodes[0].addr)
        .await
        .expect("connect");
    let started = std::time::Instant::now();
    for s in [&mut slow, &mut silent] {
        let mut buf = Vec::new();
        // The server closes it (EOF or a reset), whatever it writes first.
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "still open after 5s");
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed in {:?}",
        started.elapsed()
    );
    // Both were closed at the head timeout; the client connected before
    // them is still served.
    c.send("heads", "still here", "h1").await;
}
