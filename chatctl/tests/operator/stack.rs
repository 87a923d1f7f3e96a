//! `chatctl stack`: every service as its own process from the binaries next
//! to chatctl, live delivery through the fanout worker, and SIGTERM stops
//! them all.

use crate::cli::Cli;
use chat_devkit::redis_server::RedisServer;
use e2e::{API_KEY, Client, SECRET, http, token};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn the_stack_runs_every_service_as_a_process_and_stops_them_on_sigterm() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let cli = Cli::with_env(&[
        ("CHAT_REDIS_URL", &url),
        ("CHAT_LISTEN", "127.0.0.1:0"),
        ("CHAT_JWT_SECRET", SECRET),
        ("CHAT_API_KEYS", API_KEY),
        ("RUST_LOG", "warn"),
    ]);
    let mut stack = cli.spawn(&["stack"]);
    let (mut addr, mut pids) = (None, Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while addr.is_none() {
        let line = tokio::time::timeout_at(deadline, stack.stdout.next_line())
            .await
            .expect("the stack's banner within 60 s")
            .expect("read stdout")
            .expect("stdout open until the banner");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [name, "pid", pid] => pids.push((name.to_string(), pid.parse::<u32>().expect("pid"))),
            ["demo", "page:", page, ..] => addr = Some(page.trim_end_matches('/').to_owned()),
            _ => {}
        }
    }
    let base = addr.expect("address");
    let names: Vec<&str> = pids.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "ingress",
            "fanout-worker",
            "notifier-worker",
            "summarizer-worker"
        ]
    );

    // Live delivery crosses the fanout worker's process.
    let ws = format!("{}/v1/ws", base.replace("http://", "ws://"));
    let mut c = Client::connect_with_header(&ws, Some(&token("ann", &["*"]))).await;
    assert_eq!(c.recv().await["type"], "ready");
    c.join("lobby").await;
    let r = http()
        .post(format!("{base}/v1/rooms/lobby/messages"))
        .bearer_auth(API_KEY)
        .json(&json!({"text": "through every process", "client_id": "s1"}))
        .send()
        .await
        .expect("publish");
    assert!(r.status().is_success(), "{}", r.status());
    let m = c.messages(1).await;
    assert_eq!(m[0]["text"], "through every process");

    let status = stack.stop("-TERM").await;
    assert!(status.success(), "{status:?}");
    // Every child was waited for, so none is left, not even as a zombie.
    for (name, pid) in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{name} (pid {pid}) outlived the stack"
        );
    }
}

#[tokio::test]
async fn a_bad_setting_stops_the_stack_before_any_service_starts() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let cli = Cli::with_env(&[("CHAT_REDIS_URL", &url), ("CHAT_RATE_PER_SEC", "fast")]);
    let out = cli.run(&["stack"]).await;
    out.refused();
    assert!(
        out.stderr().contains("CHAT_RATE_PER_SEC"),
        "{}",
        out.stderr()
    );
    assert!(!out.stdout().contains("pid"), "{}", out.stdout());
}
