//! The ingress as a real process under SIGTERM, against a real Redis: it
//! stops accepting, writes every frame already queued to its sockets, closes
//! them 1001, and exits within the grace.

use futures_util::StreamExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "process-test-secret-0123456789abcdef";
const API_KEY: &str = "process-test-api-key-0123";
const MESSAGES: u64 = 200;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": user, "exp": exp, "rooms": ["*"]}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    Some(out)
}

async fn deliveries(addr: &str) -> u64 {
    let metrics = http_get(addr, "/metrics").await.unwrap_or_default();
    metrics
        .lines()
        .find(|l| l.starts_with("chat_deliveries_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_queued_frames_closes_1001_and_exits() {
    let redis = chat_core::redis_server::RedisServer::start().expect("redis-server");
    let port = chat_core::redis_server::free_port().expect("port");
    let addr = format!("127.0.0.1:{port}");
    let mut ingress = Proc(
        Command::new(env!("CARGO_BIN_EXE_ingress"))
            .env("CHAT_REDIS_URL", redis.url())
            .env("CHAT_LISTEN", &addr)
            .env("CHAT_JWT_SECRET", SECRET)
            .env("CHAT_API_KEYS", API_KEY)
            .env("CHAT_SHUTDOWN_GRACE", "5s")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("ingress starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(&addr, "/readyz")
        .await
        .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    {
        assert!(Instant::now() < deadline, "ingress not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The fanout worker runs in this process: the ingress is the one under test.
    let env: std::collections::HashMap<String, String> =
        [("CHAT_REDIS_URL".to_owned(), redis.url())].into();
    let settings = fanout_worker::settings::FanoutSettings::from_strings(&env).expect("settings");
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = fanout_worker::Fanout::build(settings)
        .await
        .expect("fanout");
    tokio::spawn(worker.run(stop.clone()));

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
    while deliveries(&addr).await < MESSAGES {
        assert!(
            Instant::now() < deadline,
            "messages not delivered to the node"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let term = Command::new("kill")
        .arg("-TERM")
        .arg(ingress.0.id().to_string())
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
        if let Some(s) = ingress.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "ingress still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit {status}");
    assert!(started.elapsed() < Duration::from_secs(7));
    stop.cancel();
}
