//! What an operator reads when the ingress cannot start: the address taken
//! and the setting that chose it, and each cause once.

use chat_devkit::redis_server::RedisServer;

const BIN: &str = env!("CARGO_BIN_EXE_ingress");

/// Runs the ingress with `redis_url` and `listen`; it must fail. Its stderr.
async fn fails(redis_url: &str, listen: &str) -> String {
    let out = tokio::process::Command::new(BIN)
        .env_clear()
        .env("CHAT_REDIS_URL", redis_url)
        .env("CHAT_LISTEN", listen)
        .env("CHAT_JWT_SECRET", "a-test-secret-0123456789abcdef")
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    stderr
}

#[tokio::test]
async fn a_taken_address_is_named_with_its_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let redis = RedisServer::start().expect("redis-server");
    let stderr = fails(&redis.url(), &addr).await;
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (set by CHAT_LISTEN)")),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
}

#[tokio::test]
async fn redis_down_is_said_once() {
    let port = {
        let redis = RedisServer::start().expect("redis-server");
        redis.port()
    };
    let stderr = fails(&format!("redis://127.0.0.1:{port}/"), "127.0.0.1:0").await;
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
}
