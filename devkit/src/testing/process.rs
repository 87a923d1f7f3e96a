//! A service binary as an operator runs it: a bad setting must stop it with
//! the setting named and no panic; a good one runs until SIGTERM and exits 0.

use crate::redis_server::RedisServer;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Runs `bin` against a fresh Redis with `key=value`; it must refuse to
/// start. Returns what it wrote to stderr.
pub async fn refuses_bad_setting(bin: &str, key: &str, value: &str) -> String {
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
    stderr.into_owned()
}

/// Starts `bin` against a fresh Redis, waits for a log line containing
/// `ready`, sends SIGTERM and expects a clean exit.
pub async fn stops_cleanly_on_sigterm(bin: &str, ready: &str) {
    let redis = RedisServer::start().expect("redis-server");
    let mut service = Service::start(bin, &[("CHAT_REDIS_URL", redis.url())], ready).await;
    service.signal("TERM");
    let status = service.exits_within(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
}

/// A service binary running as its own process, with only the environment
/// it is given. Killed when dropped.
pub struct Service {
    child: Child,
}

impl Service {
    /// Starts `bin` with `env` (and `RUST_LOG=info`) and waits up to 30 s
    /// for a log line containing `ready`. Its output is read to the end
    /// from then on, so that it never blocks on a full pipe.
    pub async fn start(bin: &str, env: &[(&str, String)], ready: &str) -> Service {
        let mut child = Command::new(bin)
            .env_clear()
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        // TEST_LOG=1 shows what the service logs.
        let echo = std::env::var_os("TEST_LOG").is_some();
        let started = async {
            while let Some(line) = lines.next_line().await.expect("read") {
                if echo {
                    eprintln!("{line}");
                }
                if line.contains(ready) {
                    return;
                }
            }
            panic!("{bin} exited before {ready:?}");
        };
        tokio::time::timeout(Duration::from_secs(30), started)
            .await
            .expect("ready within 30 s");
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if echo {
                    eprintln!("{line}");
                }
            }
        });
        Service { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// Sends it `SIG<name>` by its pid.
    pub fn signal(&self, name: &str) {
        let sent = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{name}");
    }

    /// Waits for it to exit; fails the test if it runs on past `within`.
    pub async fn exits_within(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("still running {within:?} later"))
            .expect("wait")
    }
}
