//! summarizer-worker as its own process: a bad setting stops it with the setting
//! named and no panic; a good one runs until SIGTERM and exits cleanly, and a
//! job in hand at SIGTERM (Gemini still answering) is finished first.

use chat_core::config::StreamsConfig;
use chat_core::keys::Keys;
use chat_core::protocol::Kind;
use chat_core::redis_conn;
use chat_core::scripts::{AppendRequest, Scripts};
use chat_devkit::fake_gemini::FakeGemini;
use chat_devkit::redis_server::RedisServer;
use chat_devkit::testing::process::{self, Service};
use chat_devkit::testing::wait_until;
use chat_jobs::Jobs;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_summarizer-worker");

#[tokio::test]
async fn a_bad_setting_stops_it_with_the_setting_named() {
    process::refuses_bad_setting(BIN, "CHAT_SUMMARY_MAX_ATTEMPTS", "lots").await;
}

#[tokio::test]
async fn it_runs_until_sigterm_and_exits_cleanly() {
    process::stops_cleanly_on_sigterm(BIN, "summarizer ready").await;
}

#[tokio::test]
async fn sigterm_lets_the_job_in_hand_finish() {
    let redis = RedisServer::start().expect("redis-server");
    let gemini = FakeGemini::start("test-key").await;
    let streams = StreamsConfig::default();
    let keys = Keys::new("chat", streams.fanout.shards);
    let mut conn = redis_conn::manager(&redis.url()).await.expect("redis");
    let scripts = Scripts::default();
    for (i, text) in ["shall we ship friday", "yes, after the demo"]
        .iter()
        .enumerate()
    {
        let client_id = format!("c{i}");
        let req = AppendRequest {
            room: "drain",
            user: "alice",
            text,
            client_id: &client_id,
            kind: Kind::User,
            retention: streams.retention("drain"),
            dedup_window: streams.dedup.window,
            shard_maxlen: streams.fanout.shard_maxlen,
            op: Default::default(),
            checks: Default::default(),
        };
        scripts
            .append(&mut conn, &keys, &req)
            .await
            .expect("append");
    }
    let env = [
        ("CHAT_REDIS_URL", redis.url()),
        ("CHAT_GEMINI_API_KEY", "test-key".to_owned()),
        ("CHAT_GEMINI_ENDPOINT", gemini.endpoint()),
        ("CHAT_SUMMARIZER_POLL", "100ms".to_owned()),
        ("CHAT_SHUTDOWN_GRACE", "10s".to_owned()),
    ];
    let mut summarizer = Service::start(BIN, &env, "summarizer ready").await;
    // Gemini takes 1.5 s to answer: SIGTERM lands while the job is in hand.
    gemini.set_delay(Duration::from_millis(1500));
    let jobs = Jobs::connect(keys, conn, &redis.url()).await.expect("jobs");
    let job = jobs
        .submit("drain", None, None, "api")
        .await
        .expect("submit");
    wait_until(Duration::from_secs(20), "the Gemini call", || async {
        (gemini.call_count() == 1).then_some(())
    })
    .await;
    summarizer.signal("TERM");
    let status = summarizer.exits_within(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    let s = jobs
        .status(&job.job_id)
        .await
        .expect("status")
        .expect("the job");
    assert_eq!(s.status, "done", "{s:?}");
    assert!(s.summary.is_some_and(|t| !t.is_empty()));
}
