//! The ingress as a real process under SIGTERM, against a real Redis: it
//! stops accepting, writes every frame already queued to its sockets, closes
//! them 1001, and exits within the grace.

use super::support::{API_KEY, Node, token};
use futures_util::StreamExt;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const MESSAGES: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_queued_frames_closes_1001_and_exits() {
    let redis = chat_devkit::redis_server::RedisServer::start().expect("redis-server");
    let mut node = Node::start(&redis.url(), &[("CHAT_SHUTDOWN_GRACE", "5s")], None).await;
    let addr = node.addr.clone();
    // No fanout worker: the node hands its own appends to its hub, so what
    // is published here reaches the socket through this process alone.
    let mut req = format!("ws://{addr}/v1/ws")
        .into_client_request()
        .expect("req");
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", token("tess")).parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("ws");
    use futures_util::SinkExt;
    ws.send(Message::Text(
        r#"{"type":"join","room":"drain"}"#.to_owned().into(),
    ))
    .await
    .expect("join");
    // ready, joined (and our own presence): read up to `joined`.
    loop {
        let m = ws.next().await.expect("frame").expect("frame");
        if m.to_text().is_ok_and(|t| t.contains(r#""type":"joined""#)) {
            break;
        }
    }

    // Messages the client does not read yet: they queue at the node.
    let http = reqwest::Client::new();
    for i in 0..MESSAGES {
        let r = http
            .post(format!("http://{addr}/v1/rooms/drain/messages"))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({"text": format!("m{i}")}))
            .send()
            .await
            .expect("publish");
        assert!(r.status().is_success());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.metric("chat_deliveries_total", "").await < MESSAGES as f64 {
        assert!(
            Instant::now() < deadline,
            "messages not delivered to the node"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let term = Command::new("kill")
        .arg("-TERM")
        .arg(node.proc.0.id().to_string())
        .status()
        .expect("kill");
    assert!(term.success());
    let started = Instant::now();
    // It stops accepting at once, while it still drains.
    let deadline = Instant::now() + Duration::from_secs(2);
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Every queued message, in order, then a 1001 close.
    let mut next = 1u64;
    let close = loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("frames within the grace");
        match m {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).expect("json");
                if v["type"] == "message" {
                    assert_eq!(v["offset"], next, "in order, none missing");
                    next += 1;
                }
            }
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("socket ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(next - 1, MESSAGES, "every queued message was written");
    assert_eq!(close, Some(1001));
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "a draining node accepts no new connections"
    );

    // No longer accepting, and gone within the grace.
    let deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(s) = node.proc.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "ingress still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit {status}");
    assert!(started.elapsed() < Duration::from_secs(7));
    // The pub/sub connection going with the node is not a loss: a clean
    // shutdown does not warn about it. (A busy machine may warn that the
    // grace ran out; that one is true.)
    let log = node.log_text();
    assert!(!log.contains("pub/sub connection lost"), "{log}");
}
