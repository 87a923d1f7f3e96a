//! `chatctl abuse`: hostile load against one ingress node, for the figures
//! in docs/operations.md ("Limits and abuse"); `bench/abuse.sh` runs it.
//!
//! - `slow`: opens N connections that send a request head and never finish
//!   it (with `--churn`, each one the node closes is reopened at once),
//!   while a prober asks `/readyz` and a user connects, authenticates and
//!   gets a message acked, over and over. Reports how often and how fast
//!   both were served.
//! - `hog`: M sockets with a 4 KiB receive buffer each ask for pages of
//!   history far faster than they read them (they never read); reports the
//!   node's memory per such socket.

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// How long one probe may take before it counts as not served.
const PROBE_DEADLINE: Duration = Duration::from_secs(2);

fn hist() -> Histogram<u64> {
    super::bench::hist()
}

/// `slow`: the node at `addr` under `connections` slow request heads.
pub async fn slow(
    addr: &str,
    secret: &str,
    connections: usize,
    churn: bool,
    duration: Duration,
    pid: Option<u32>,
) -> anyhow::Result<Value> {
    let opened = Arc::new(AtomicU64::new(0));
    let closed_by_node = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (addr, opened, closed, refused) = (
            addr.to_owned(),
            opened.clone(),
            closed_by_node.clone(),
            refused.clone(),
        );
        attackers.push(tokio::spawn(async move {
            loop {
                let Ok(mut s) = TcpStream::connect(&addr).await else {
                    refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: h\r\n")
                    .await
                    .is_err()
                {
                    closed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                // A header line a second, so it looks alive; never the end.
                let mut buf = [0u8; 512];
                loop {
                    tokio::select! {
                        r = s.read(&mut buf) => {
                            if !matches!(r, Ok(n) if n > 0) {
                                closed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {
                            if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                                closed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                }
                if !churn {
                    return;
                }
            }
        }));
    }
    // Let the crowd build up before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = pid.and_then(super::bench::rss_kib);
    let t0 = Instant::now();
    let (mut ready_ok, mut ready_failed, mut ready_ms) = (0u64, 0u64, hist());
    let (mut user_ok, mut user_failed, mut user_ms) = (0u64, 0u64, hist());
    let mut n = 0u64;
    while t0.elapsed() < duration {
        let started = Instant::now();
        match tokio::time::timeout(PROBE_DEADLINE, readyz(addr)).await {
            Ok(true) => {
                ready_ok += 1;
                let _ = ready_ms.record(started.elapsed().as_micros() as u64);
            }
            _ => ready_failed += 1,
        }
        let started = Instant::now();
        let token = super::bench::token(secret, &format!("user{n}"))?;
        match tokio::time::timeout(PROBE_DEADLINE, user_round_trip(addr, &token, n)).await {
            Ok(Ok(())) => {
                user_ok += 1;
                let _ = user_ms.record(started.elapsed().as_micros() as u64);
            }
            _ => user_failed += 1,
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for a in &attackers {
        a.abort();
    }
    let node = pid.map(|p| {
        json!({
            "rss_before_kib": rss_before,
            "rss_after_kib": super::bench::rss_kib(p),
            "open_descriptors": std::fs::read_dir(format!("/proc/{p}/fd")).map(|d| d.count()).ok(),
        })
    });
    Ok(json!({
        "slow_connections": connections,
        "reopened_when_closed": churn,
        "seconds": t0.elapsed().as_secs_f64(),
        "attacker": {
            "connections_opened": opened.load(Ordering::Relaxed),
            "closed_by_node": closed_by_node.load(Ordering::Relaxed),
            "connect_failed": refused.load(Ordering::Relaxed),
        },
        "readyz": {"served": ready_ok, "not_served": ready_failed, "ms": super::bench::quantiles(&Some(ready_ms))},
        "user": {"served": user_ok, "not_served": user_failed, "ms": super::bench::quantiles(&Some(user_ms))},
        "node": node,
    }))
}

async fn readyz(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    out.starts_with(b"HTTP/1.1 200")
}

/// Connect, authenticate, join, send, and wait for the ack.
async fn user_round_trip(addr: &str, token: &str, n: u64) -> anyhow::Result<()> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws")).await?;
    let room = "bench:abuse";
    for frame in [
        json!({"type": "auth", "token": token}),
        json!({"type": "join", "room": room}),
        json!({"type": "send", "room": room, "text": "probe", "client_id": format!("p{n}")}),
    ] {
        ws.send(Ws::Text(frame.to_string().into())).await?;
    }
    while let Some(m) = ws.next().await {
        if let Ws::Text(t) = m? {
            let v: Value = serde_json::from_str(&t)?;
            match v["type"].as_str() {
                Some("ack") => {
                    let _ = ws.close(None).await;
                    return Ok(());
                }
                Some("error") => anyhow::bail!("refused: {v}"),
                _ => {}
            }
        }
    }
    anyhow::bail!("closed before the ack")
}

/// `hog`: `sockets` sockets that ask for history and never read.
pub async fn hog(
    addr: &str,
    secret: &str,
    api_key: &str,
    sockets: usize,
    pid: u32,
) -> anyhow::Result<Value> {
    // 100 messages whose JSON is six times their text: pages of ~2.4 MB.
    let room = "bench:hog";
    let text = "\u{1}".repeat(4000);
    let http = reqwest::Client::new();
    for i in 0..100 {
        let r = http
            .post(format!("http://{addr}/v1/rooms/{room}/messages"))
            .bearer_auth(api_key)
            .json(&json!({"text": text, "client_id": format!("h{i}")}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "publish: {}", r.status());
    }
    let before = super::bench::rss_kib(pid);
    let mut held = Vec::with_capacity(sockets);
    for i in 0..sockets {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.set_recv_buffer_size(4096)?;
        let tcp = sock.connect(addr.parse()?).await?;
        let mut req = format!("ws://{addr}/v1/ws").into_client_request()?;
        req.headers_mut().insert(
            "Authorization",
            format!(
                "Bearer {}",
                super::bench::token(secret, &format!("hog{i}"))?
            )
            .parse()?,
        );
        let (mut ws, _) =
            tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
                .await?;
        for r in 0..90 {
            let frame = json!({"type": "history", "room": room, "limit": 100, "ref": r});
            ws.send(Ws::Text(frame.to_string().into())).await?;
        }
        held.push(ws);
    }
    // What the node takes in while they do not read, at its highest.
    let t0 = Instant::now();
    let mut peak = before.unwrap_or(0);
    while t0.elapsed() < Duration::from_secs(5) {
        peak = peak.max(super::bench::rss_kib(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(held);
    let grown = peak.saturating_sub(before.unwrap_or(0));
    Ok(json!({
        "sockets": sockets,
        "pages_asked_per_socket": 90,
        "page_bytes": 2_400_000,
        "rss_before_kib": before,
        "rss_peak_kib": peak,
        "rss_per_socket_kib": grown / sockets.max(1) as u64,
    }))
}
