//! A service binary as an operator runs it: a bad setting must stop it with
//! the setting named and no panic; a good one runs until SIGTERM and exits 0.

use crate::redis_server::RedisServer;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Runs `bin` against a fresh Redis with `key=value`; it must refuse to start.
pub async fn refuses_bad_setting(bin: &str, key: &str, value: &str) {
    let redis = RedisServer::start().expect("redis-server");
    let run = Command::new(bin)
        .env_clear()
        .env("CHAT_REDIS_URL", redis.url())
        .env(key, value)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("it stops within 30 s instead of running")
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(key), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Starts `bin` against a fresh Redis, waits for a log line containing
/// `ready`, sends SIGTERM and expects a clean exit.
pub async fn stops_cleanly_on_sigterm(bin: &str, ready: &str) {
    let redis = RedisServer::start().expect("redis-server");
    let mut child = Command::new(bin)
        .env_clear()
        .env("CHAT_REDIS_URL", redis.url())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let started = async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if line.contains(ready) {
                return;
            }
        }
        panic!("exited before {ready:?}");
    };
    tokio::time::timeout(Duration::from_secs(30), started)
        .await
        .expect("ready within 30 s");
    let pid = child.id().expect("running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits within 20 s of SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}
