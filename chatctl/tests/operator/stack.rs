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
    let (mut addr, mut pids, mut exports) = (None, Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut banner_done = false;
    while !banner_done {
        let line = tokio::time::timeout_at(deadline, stack.stdout.next_line())
            .await
            .expect("the stack's banner within 60 s")
            .expect("read stdout")
            .expect("stdout open until the banner");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [name, "pid", pid] => pids.push((name.to_string(), pid.parse::<u32>().expect("pid"))),
            ["demo", "page:", page, ..] => addr = Some(page.trim_end_matches('/').to_owned()),
            ["export", assignment] => {
                let (k, v) = assignment.split_once('=').expect("K=V");
                exports.push((k.to_owned(), v.trim_matches(['\'', '"']).to_owned()));
            }
            ["mint", ..] => banner_done = true,
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

    // The banner's export lines are all a second terminal needs: chatctl
    // on the PATH, reading the room with nothing else set.
    let path = exports
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.replace(":$PATH", ""))
        .expect("PATH export");
    let keys: Vec<&str> = exports.iter().map(|(k, _)| k.as_str()).collect();
    for k in [
        "CHAT_REDIS_URL",
        "CHAT_JWT_SECRET",
        "CHAT_API_KEYS",
        "CHAT_URL",
    ] {
        assert!(keys.contains(&k), "{k} in {keys:?}");
    }
    let out = tokio::process::Command::new(format!("{path}/chatctl"))
        .env_clear()
        .envs(exports.iter().filter(|(k, _)| k != "PATH").cloned())
        .current_dir(std::env::temp_dir())
        .args(["rooms", "history", "lobby", "--json"])
        .output()
        .await
        .expect("chatctl from the banner's PATH");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("through every process"), "{stdout}");

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
