//! webhook-worker as its own process: a bad setting or an endpoint without
//! its signing secret stops it with the setting named and no panic; it runs
//! until SIGTERM and exits cleanly. (Delivery, retries, dead letters and
//! replay: chatctl/tests/operator/webhooks.rs.)

use chat_devkit::redis_server::RedisServer;
use chat_devkit::testing::process;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_webhook-worker");

#[tokio::test]
async fn a_bad_setting_stops_it_with_the_setting_named() {
    process::refuses_bad_setting(BIN, "CHAT_WEBHOOK_BLOCK", "0s").await;
}

#[tokio::test]
async fn an_endpoint_without_its_secret_stops_it_naming_the_variable() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let streams = dir.path().join("streams.toml");
    std::fs::write(
        &streams,
        "[[webhooks.endpoints]]\nname = \"app\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret_env = \"APP_HOOK_SECRET\"\n",
    )
    .expect("write");
    for secret in [None, Some("short")] {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.env_clear()
            .env("CHAT_REDIS_URL", redis.url())
            .env("CHAT_STREAMS", &streams)
            .kill_on_drop(true);
        if let Some(s) = secret {
            cmd.env("APP_HOOK_SECRET", s);
        }
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .expect("it stops instead of running")
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("APP_HOOK_SECRET"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn it_runs_until_sigterm_and_exits_cleanly() {
    process::stops_cleanly_on_sigterm(BIN, "webhook worker ready").await;
}
