//! notifier-worker as its own process, against a real redis-server and the
//! wiremock FCM: a bad setting stops it with the setting named and no panic;
//! SIGTERM lets the push in flight finish and be acknowledged; a notifier
//! SIGKILLed mid-send leaves its work pending, and the next one sends it once.

use chat_core::config::StreamsConfig;
use chat_core::jwt::testkeys::{RSA_PRIVATE_PEM, RSA_PUBLIC_PEM};
use chat_core::keys::Keys;
use chat_core::protocol::{Kind, Message};
use chat_core::redis_conn::{self, Conn};
use chat_core::scripts::NotifyArgs;
use chat_core::scripts::Scripts;
use chat_devkit::fake_fcm::{FakeFcm, FakeResponse};
use chat_devkit::redis_server::RedisServer;
use chat_devkit::testing::process::{self, Service};
use chat_devkit::testing::wait_until;
use redis::AsyncCommands;
use std::path::PathBuf;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_notifier-worker");
const READY: &str = "notifier ready";
const STREAMS_TOML: &str = "[notify]\nclaim_idle = \"1s\"\n";

#[tokio::test]
async fn a_bad_setting_stops_it_with_the_setting_named() {
    process::refuses_bad_setting(BIN, "CHAT_FCM_SERVICE_ACCOUNT", "/nonexistent/sa.json").await;
}

#[tokio::test]
async fn it_runs_until_sigterm_and_exits_cleanly() {
    process::stops_cleanly_on_sigterm(BIN, READY).await;
}

#[tokio::test]
async fn sigterm_lets_the_push_in_flight_finish_and_be_acknowledged() {
    let env = Env::start().await;
    let mut notifier = env.notifier("n1").await;
    // FCM takes 1.5 s to answer: SIGTERM lands while the push is in flight.
    env.fcm.set_accept_delay(Duration::from_millis(1500));
    env.queue_push("drain", "carol", "carol-phone").await;
    env.send_attempts(1).await;
    assert_eq!(env.pending().await, 1, "held while FCM answers");
    notifier.signal("TERM");
    let status = notifier.exits_within(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(env.fcm.sent_to("carol-phone").len(), 1);
    assert_eq!(env.pending().await, 0, "acknowledged before it exited");
}

#[tokio::test]
async fn a_notifier_killed_mid_send_leaves_it_pending_and_the_next_sends_it_once() {
    let env = Env::start().await;
    let mut first = env.notifier("n1").await;
    // Its request hangs; it is SIGKILLed while it holds the work.
    env.fcm.fail_next(1, FakeResponse::Hang).await;
    env.queue_push("ko", "carol", "carol-phone").await;
    env.send_attempts(1).await;
    assert_eq!(env.pending().await, 1, "held by the first notifier");
    first.signal("KILL");
    first.exits_within(Duration::from_secs(10)).await;
    assert_eq!(env.pending().await, 1, "a kill acknowledges nothing");
    // The next one takes it over once it has been idle for claim_idle (1 s),
    // and sends it once the first one's send lease has run out.
    let _second = env.notifier("n2").await;
    wait_until(Duration::from_secs(30), "the takeover's push", || async {
        (!env.fcm.sent_to("carol-phone").is_empty()).then_some(())
    })
    .await;
    wait_until(Duration::from_secs(10), "nothing pending", || async {
        (env.pending().await == 0).then_some(())
    })
    .await;
    assert_eq!(env.fcm.sent_to("carol-phone").len(), 1, "no duplicate push");
}

struct Env {
    redis: RedisServer,
    fcm: FakeFcm,
    _dir: tempfile::TempDir,
    service_account: PathBuf,
    streams_file: PathBuf,
    streams: StreamsConfig,
    keys: Keys,
    conn: Conn,
}

impl Env {
    async fn start() -> Env {
        let redis = RedisServer::start().expect("redis-server");
        let fcm = FakeFcm::start(RSA_PUBLIC_PEM, "push@test.iam.gserviceaccount.com", "test").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let service_account = dir.path().join("service-account.json");
        std::fs::write(&service_account, fcm.service_account_json(RSA_PRIVATE_PEM))
            .expect("write service account");
        let streams_file = dir.path().join("streams.toml");
        std::fs::write(&streams_file, STREAMS_TOML).expect("write streams.toml");
        let streams = StreamsConfig::load(&streams_file).expect("streams.toml");
        let keys = Keys::new("chat", streams.fanout.shards);
        let conn = redis_conn::manager(&redis.url()).await.expect("redis");
        Env {
            redis,
            fcm,
            _dir: dir,
            service_account,
            streams_file,
            streams,
            keys,
            conn,
        }
    }

    /// A notifier process named `consumer`, once it is ready.
    async fn notifier(&self, consumer: &str) -> Service {
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        let env = [
            ("CHAT_REDIS_URL", self.redis.url()),
            ("CHAT_STREAMS", path(&self.streams_file)),
            ("CHAT_FCM_SERVICE_ACCOUNT", path(&self.service_account)),
            ("CHAT_FCM_ENDPOINT", self.fcm.endpoint()),
            ("CHAT_NOTIFIER_CONSUMER", consumer.to_owned()),
            ("CHAT_NOTIFIER_BLOCK", "200ms".to_owned()),
            // A send lease is two request timeouts (at least the longest
            // backoff): a killed notifier's runs out 6 s after its attempt.
            ("CHAT_FCM_TIMEOUT", "3s".to_owned()),
            ("CHAT_FCM_BACKOFF", "50ms".to_owned()),
            ("CHAT_FCM_BACKOFF_MAX", "2s".to_owned()),
            ("CHAT_SHUTDOWN_GRACE", "10s".to_owned()),
        ];
        Service::start(BIN, &env, READY).await
    }

    /// `user`, a member of `room` with one Android device and no presence,
    /// is pushed a message from alice: queued by notify.lua, as the fanout
    /// worker queues it.
    async fn queue_push(&self, room: &str, user: &str, device: &str) {
        let mut conn = self.conn.clone();
        let _: () = conn
            .sadd(self.keys.room_members(room), user)
            .await
            .expect("sadd");
        // The device, as the devices API registers it.
        let _: () = redis::pipe()
            .zadd(
                self.keys.user_devices(user),
                device,
                chat_core::clock::now_ms(),
            )
            .hset(self.keys.user_device_platforms(user), device, "android")
            .query_async(&mut conn)
            .await
            .expect("register device");
        let message = Message {
            room: room.to_owned(),
            offset: 1,
            id: "1-0".to_owned(),
            epoch: "e1".to_owned(),
            user: "alice".to_owned(),
            text: "are you there".to_owned(),
            ts: chat_core::clock::now_ms(),
            client_id: "c1".to_owned(),
            kind: Kind::User,
            ..Default::default()
        };
        let args = NotifyArgs {
            policy: &self.streams.notify,
            preview_bytes: 100,
            summarize_every: 0,
        };
        let scripts = Scripts::default();
        let _: redis::Value = scripts
            .notify_batch(&self.keys, &args, &[(room, vec![&message])])
            .invoke_async(&mut conn)
            .await
            .expect("notify.lua");
    }

    /// Waits until FCM has seen `n` send requests.
    async fn send_attempts(&self, n: usize) {
        wait_until(Duration::from_secs(20), "the send request", || async {
            (self.fcm.send_attempts() == n).then_some(())
        })
        .await;
    }

    /// Push work delivered to a notifier and not acknowledged.
    async fn pending(&self) -> u64 {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamPendingReply = conn
            .xpending(self.keys.notify_stream(), &self.streams.notify.group)
            .await
            .expect("xpending");
        reply.count() as u64
    }
}
