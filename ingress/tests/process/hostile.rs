//! Hostile clients against a real ingress process: they cannot take the
//! node down, pin its memory, outlive a revoked session, overshoot the
//! connection cap, flood it with control frames, or lose the close code.

use super::support::{
    API_KEY, DEADLINE, Event, Node, Ws, free_addr, http, http_get, token, token_with, wait_metrics,
};
use chat_devkit::redis_server::RedisServer;
use futures_util::SinkExt;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The test opens hundreds of sockets itself.
fn raise_own_descriptor_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current.is_some() {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
}

/// Reads until the peer closes; the bytes read, or `None` when it stayed
/// open past `within`.
async fn read_to_close(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_cannot_starve_a_node_with_few_descriptors() {
    raise_own_descriptor_limit();
    let redis = RedisServer::start().expect("redis-server");
    // Request heads may take a minute: only the cap can save the node here.
    let node = Node::start(
        &redis.url(),
        &[("CHAT_HEAD_TIMEOUT", "60s"), ("CHAT_BODY_TIMEOUT", "2s")],
        Some(256),
    )
    .await;

    // Anonymous bodies that never come: refused from the headers (401) and
    // closed, not held while the node waits for 60,000 bytes.
    let mut bodies = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(&node.addr).await.expect("connect");
        s.write_all(
            b"POST /v1/rooms/x:1/messages HTTP/1.1\r\nHost: h\r\nContent-Length: 60000\r\n\r\n{",
        )
        .await
        .expect("write");
        bodies.push(s);
    }
    let answers =
        futures_util::future::join_all(bodies.iter_mut().map(|s| read_to_close(s, DEADLINE))).await;
    assert!(
        answers.iter().all(Option::is_some),
        "{} of 300 slow anonymous bodies still open",
        answers.iter().filter(|a| a.is_none()).count()
    );
    let unauthorized = answers
        .iter()
        .flatten()
        .filter(|a| a.starts_with(b"HTTP/1.1 401"))
        .count();
    assert!(unauthorized > 0, "none was answered 401");
    drop(bodies);

    // Heads that never end, more than the node has descriptors for: the
    // oldest make room for newcomers.
    let mut heads = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(&node.addr).await.expect("connect");
        let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: h\r\n").await;
        heads.push(s);
    }
    // The node still serves probes, metrics, users and admins meanwhile.
    let ready = http_get(&node.addr, "/readyz").await.unwrap_or_default();
    assert!(ready.starts_with("HTTP/1.1 200"), "readyz: {ready:?}");
    let metrics = http_get(&node.addr, "/metrics").await.unwrap_or_default();
    assert!(
        metrics.contains("chat_connections_shed_total"),
        "metrics: {metrics:.200}"
    );
    let mut ws = node.connect(&token("alice")).await;
    ws.send(json!({"type": "join", "room": "r"})).await;
    ws.send(json!({"type": "send", "room": "r", "text": "hi", "client_id": "c1", "ref": 1}))
        .await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let f = ws.frame().await;
        if f["type"] == "ack" {
            assert_eq!(f["offset"], 1);
            break;
        }
        assert!(Instant::now() < deadline, "no ack");
    }
    let r = http()
        .post(node.http("/v1/rooms/r/messages"))
        .bearer_auth(API_KEY)
        .json(&json!({"text": "from the admin"}))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 200);
    assert!(
        node.open_fds() < 256,
        "{} descriptors open",
        node.open_fds()
    );
    let still_open = futures_util::future::join_all(
        heads
            .iter_mut()
            .map(|s| read_to_close(s, Duration::from_millis(1))),
    )
    .await
    .iter()
    .filter(|a| a.is_none())
    .count();
    assert!(still_open < 256, "{still_open} slow heads held at once");
    drop(heads);

    // A known caller's body that stalls: 408 after CHAT_BODY_TIMEOUT.
    let mut s = TcpStream::connect(&node.addr).await.expect("connect");
    s.write_all(
        format!(
            "POST /v1/rooms/r/messages HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {API_KEY}\r\nContent-Length: 100\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let answer = read_to_close(&mut s, DEADLINE).await.expect("answered");
    assert!(
        answer.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // Running out of descriptors was never a busy loop of warnings.
    let log = node.log_text();
    let warnings = log.matches("accept failed").count();
    assert!(warnings <= 30, "{warnings} accept warnings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_does_not_read_cannot_pin_the_nodes_memory() {
    let redis = RedisServer::start().expect("redis-server");
    let node = Node::start(&redis.url(), &[], None).await;
    // 100 messages whose JSON is six times their text: a page of them is
    // about 2.4 MB.
    let text = "\u{1}".repeat(4000);
    let client = http();
    for i in 0..100 {
        let r = client
            .post(node.http("/v1/rooms/big/messages"))
            .bearer_auth(API_KEY)
            .json(&json!({"text": text, "client_id": format!("c{i}")}))
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), 200);
    }
    let before = node.rss();
    let mut ws = Ws::connect_small_buffer(&node.addr, &token("hog"), 4096).await;
    assert_eq!(ws.frame().await["type"], "ready");
    // 90 pages asked for, none read; then a ping, handled after them all.
    for i in 0..90 {
        ws.send(json!({"type": "history", "room": "big", "limit": 100, "ref": i}))
            .await;
    }
    ws.send(json!({"type": "ping", "ref": "last"})).await;
    node.wait_metric("chat_frames_in_total", "type=\"ping\"", 1.0)
        .await;
    let grown = node.rss().saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "RSS grew {} MB for one socket",
        grown >> 20
    );

    // Read now: some pages, the rest refused with `rate_limited`, and the
    // socket is still open.
    let (mut pages, mut refused) = (0, 0);
    loop {
        let f = ws.frame().await;
        match (f["type"].as_str(), f["ref"].as_str()) {
            (Some("pong"), Some("last")) => break,
            (Some("history"), _) => pages += 1,
            (Some("error"), _) => {
                assert_eq!(f["code"], "rate_limited", "{f}");
                refused += 1;
            }
            _ => panic!("unexpected {f}"),
        }
    }
    assert_eq!(pages + refused, 90);
    assert!(
        pages >= 1 && refused >= 1,
        "{pages} pages, {refused} refused"
    );
    ws.send(json!({"type": "ping", "ref": "again"})).await;
    assert_eq!(ws.frame().await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_stays_revoked_in_both_session_modes() {
    let redis = RedisServer::start().expect("redis-server");
    for require in ["false", "true"] {
        let node = Node::start(
            &redis.url(),
            &[
                ("CHAT_REQUIRE_SESSION", require),
                ("CHAT_REVOKED_SESSION_TTL", "60s"),
            ],
            None,
        )
        .await;
        let sid = format!("s-{require}");
        node.put_session(&sid, "alice").await;
        let t = token_with("alice", json!({"sid": sid}));
        let mut ws = node.connect(&t).await;
        node.delete_session(&sid).await;
        assert_eq!(ws.until_closed().await.0, Some(4003), "require={require}");

        // The same token again: refused, over WebSocket and HTTP.
        let mut again = Ws::connect(&node.ws_url(), Some(&t)).await;
        let (code, frames) = again.until_closed().await;
        assert_eq!(code, Some(4001), "require={require}: {frames:?}");
        assert_eq!(frames[0]["code"], "unauthorized");
        assert!(
            frames[0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("revoked")),
            "{frames:?}"
        );
        let r = http()
            .get(node.http("/v1/rooms/r/messages"))
            .bearer_auth(&t)
            .send()
            .await
            .expect("history");
        assert_eq!(r.status(), 401);

        // The tombstone lives as long as the token it refused, not just
        // CHAT_REVOKED_SESSION_TTL.
        let mut conn = chat_core::redis_conn::manager(&redis.url())
            .await
            .expect("redis");
        let keys = chat_core::keys::Keys::new("chat", 1);
        let ttl: i64 = redis::AsyncCommands::ttl(&mut conn, keys.session_revoked(&sid))
            .await
            .expect("TTL");
        assert!(ttl > 3000, "tombstone TTL {ttl}");

        // A sid registered again is live again.
        node.put_session(&sid, "alice").await;
        node.connect(&t).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_counts_sockets_from_the_upgrade() {
    let redis = RedisServer::start().expect("redis-server");
    let metrics_addr = free_addr();
    let node = Node::start(
        &redis.url(),
        &[
            ("CHAT_MAX_CONNECTIONS", "3"),
            ("CHAT_METRICS_LISTEN", &metrics_addr),
        ],
        None,
    )
    .await;

    // Ten upgrades first, none authenticated yet; then each authenticates.
    let mut sockets = Vec::new();
    for _ in 0..10 {
        if let Ok(ws) = Ws::try_connect(&node.ws_url(), None).await {
            sockets.push(ws);
        }
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        let auth = json!({"type": "auth", "token": token(&format!("u{i}"))});
        let _ = ws.0.send(Message::Text(auth.to_string().into())).await;
    }
    let (mut ready, mut evicted) = (Vec::new(), 0);
    for mut ws in sockets {
        match ws.event().await {
            Event::Frame(f) if f["type"] == "ready" => ready.push(ws),
            Event::Frame(f) => {
                assert_eq!(f["code"], "unavailable", "{f}");
                assert_eq!(ws.until_closed().await.0, Some(1013));
                evicted += 1;
            }
            Event::Closed(c) => assert_eq!(c, Some(1013)),
        }
    }
    assert_eq!(ready.len(), 3, "{evicted} evicted");
    wait_metrics(&metrics_addr, |m| {
        m.contains("chat_upgrades_refused_total{reason=\"capacity\"} 7")
    })
    .await;

    // At the cap with only authenticated sockets: refused, while the
    // metrics listener still answers.
    let refused = Ws::try_connect(&node.ws_url(), Some(&token("late"))).await;
    assert!(refused.is_err(), "a fourth socket was let in");
    let probe = http_get(&metrics_addr, "/readyz").await.unwrap_or_default();
    assert!(probe.starts_with("HTTP/1.1 200"), "{probe}");

    // Concurrent upgrades, each authenticated by its header: never more
    // than the cap.
    drop(ready);
    wait_metrics(&metrics_addr, |m| {
        m.contains("chat_listener_connections{listener=\"public\"} 0")
    })
    .await;
    let url = node.ws_url();
    let attempts = (0..10).map(|i| {
        let url = url.clone();
        tokio::spawn(async move {
            let mut ws = Ws::try_connect(&url, Some(&token(&format!("c{i}"))))
                .await
                .ok()?;
            match ws.event().await {
                Event::Frame(f) if f["type"] == "ready" => Some(ws),
                _ => None,
            }
        })
    });
    let got: Vec<_> = futures_util::future::join_all(attempts).await;
    let ready = got
        .into_iter()
        .filter_map(|r| r.expect("task"))
        .collect::<Vec<_>>();
    assert!(
        (1..=3).contains(&ready.len()),
        "{} concurrent sockets ready",
        ready.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_frames_count_against_the_rate_limit() {
    let redis = RedisServer::start().expect("redis-server");
    let node = Node::start(
        &redis.url(),
        &[("CHAT_RATE_PER_SEC", "5"), ("CHAT_RATE_BURST", "5")],
        None,
    )
    .await;
    let mut ws = node.connect(&token("pinger")).await;
    for _ in 0..200 {
        if ws.0.send(Message::Ping(Default::default())).await.is_err() {
            break;
        }
    }
    let (code, frames) = ws.until_closed().await;
    assert_eq!(code, Some(4008), "{frames:?}");
}

/// Sends `n` text frames without reading; false when a write hit a reset
/// (the server closed with this input unread).
async fn flood(ws: &mut Ws, n: usize) -> bool {
    let frame = Message::Text(r#"{"type":"ping"}"#.into());
    for _ in 0..n {
        if let Err(e) = ws.0.feed(frame.clone()).await {
            return !matches!(e, WsError::Io(_));
        }
    }
    !matches!(ws.0.flush().await, Err(WsError::Io(_)))
}

/// Reads like a strict client (a browser, asyncio): the close code, and
/// whether the closing handshake ended cleanly, its close reply written and
/// the connection then ended by the server without a reset.
async fn strict_close(
    stream: &mut (impl futures_util::Stream<Item = Result<Message, WsError>> + Unpin),
) -> (Option<u16>, bool) {
    use futures_util::StreamExt;
    loop {
        let m = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("closed in time");
        match m {
            Some(Ok(Message::Close(f))) => {
                let code = f.map(|f| u16::from(f.code));
                // The next read sends the close reply, then sees the end.
                let end = tokio::time::timeout(DEADLINE, stream.next())
                    .await
                    .expect("ended in time");
                return (code, end.is_none());
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return (None, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_codes_reach_clients_whose_input_is_still_unread() {
    let redis = RedisServer::start().expect("redis-server");
    let node = Node::start(&redis.url(), &[], None).await;

    // 4008: a flood past the rate limit.
    let mut ws = node.connect(&token("flood")).await;
    let wrote = flood(&mut ws, 50_000).await;
    assert_eq!(
        (wrote, strict_close(&mut ws.0).await),
        (true, (Some(4008), true)),
        "rate abuse"
    );

    // 4001: frames before `auth`.
    let mut ws = Ws::connect(&node.ws_url(), None).await;
    let wrote = flood(&mut ws, 50_000).await;
    assert_eq!(
        (wrote, strict_close(&mut ws.0).await),
        (true, (Some(4001), true)),
        "unauthenticated"
    );

    // 1009: a frame over the size limit, with more behind it. The rest of
    // that frame cannot be parsed, so the node stops reading and keeps the
    // connection a moment for the close frame to be read (docs/protocol.md).
    let mut ws = node.connect(&token("big")).await;
    let _ =
        ws.0.feed(Message::Text("x".repeat(100 * 1024).into()))
            .await;
    assert!(flood(&mut ws, 1000).await, "reset while sending");
    assert_eq!(strict_close(&mut ws.0).await.0, Some(1009), "too large");

    // 4003: a session revoked while its socket keeps sending.
    node.put_session("busy", "busy").await;
    let ws = node
        .connect(&token_with("busy", json!({"sid": "busy"})))
        .await;
    let (mut sink, mut stream) = futures_util::StreamExt::split(ws.0);
    let sender = tokio::spawn(async move {
        // Within the rate limit, until the socket is closed; a reset fails.
        let frame = Message::Text(r#"{"type":"ping"}"#.into());
        loop {
            match sink.send(frame.clone()).await {
                Ok(()) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(WsError::Io(_)) => return false,
                Err(_) => return true,
            }
        }
    });
    node.delete_session("busy").await;
    let closed = strict_close(&mut stream).await;
    let wrote = sender.await.expect("sender");
    assert_eq!((wrote, closed), (true, (Some(4003), true)), "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_logged_and_counted_and_metrics_can_leave_the_public_port() {
    let redis = RedisServer::start().expect("redis-server");
    let private = free_addr();
    let node = Node::start(
        &redis.url(),
        &[
            ("CHAT_METRICS_LISTEN", &private),
            ("CHAT_PUBLIC_METRICS", "false"),
            ("CHAT_DEV_TOKENS", "1"),
        ],
        None,
    )
    .await;
    let public = http_get(&node.addr, "/metrics").await.unwrap_or_default();
    assert!(public.starts_with("HTTP/1.1 404"), "{public:.100}");

    // A cross-origin upgrade and a bad token: refused, each logged with its
    // reason and counted.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        node.ws_url(),
    )
    .expect("request");
    req.headers_mut()
        .insert("Origin", "https://evil.example".parse().expect("origin"));
    assert!(tokio_tungstenite::connect_async(req).await.is_err(), "403");
    let mut ws = Ws::connect(&node.ws_url(), Some("not-a-token")).await;
    assert_eq!(ws.until_closed().await.0, Some(4001));
    wait_metrics(&private, |m| {
        m.contains("chat_upgrades_refused_total{reason=\"origin\"} 1")
            && m.contains("chat_upgrades_refused_total{reason=\"auth\"} 1")
    })
    .await;
    let log = node.log_text();
    assert!(
        log.contains("upgrade refused: origin not allowed") && log.contains("evil.example"),
        "{log}"
    );
    assert!(
        log.contains("socket refused") && log.contains("reason=\"auth\""),
        "{log}"
    );
    let ready = http_get(&private, "/readyz").await.unwrap_or_default();
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    // The refusal answers a plain GET from that page too, readable from any
    // origin: that is how the browser client tells it from a dropped
    // network (a browser hides a failed handshake's status).
    let probe = http()
        .get(format!("http://{}/v1/ws", node.addr))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .expect("probe");
    assert_eq!(probe.status(), 403);
    assert_eq!(
        probe
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.as_bytes()),
        Some(&b"*"[..])
    );
    let plain = http()
        .get(format!("http://{}/v1/ws", node.addr))
        .send()
        .await
        .expect("plain GET");
    assert!(
        plain.status().is_client_error() && plain.status() != 403,
        "{}",
        plain.status()
    );

    // Dev tokens: not for names the server writes as.
    for user in ["system", "Admin", "summarizer"] {
        let r = http()
            .post(node.http("/dev/token"))
            .json(&json!({"user": user}))
            .send()
            .await
            .expect("dev token");
        assert_eq!(r.status(), 400, "{user}");
    }
    let r = http()
        .post(node.http("/dev/token"))
        .json(&json!({"user": "carol"}))
        .send()
        .await
        .expect("dev token");
    assert_eq!(r.status(), 200);

    // A body over the limit answers the contract's JSON error.
    let r = http()
        .post(node.http("/v1/rooms/r/messages"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(vec![b' '; 70 * 1024])
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "too_large", "{body}");
}
