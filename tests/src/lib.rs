//! Test support for the end-to-end tests: a real `redis-server`, ingress
//! nodes and fanout workers started in-process on ephemeral ports, and a
//! small WebSocket client that speaks the contract.

pub mod forwarder;
pub use chat_devkit::{fake_fcm, fake_gemini, google_api};

use chat_core::config::StreamsConfig;
use chat_devkit::redis_server::{RedisCluster, RedisServer, replicas_acking};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub use chat_devkit::testing::wait_until;

pub const SECRET: &str = "test-secret-0123456789abcdef";
pub const API_KEY: &str = "test-api-key-0123456789";
/// How long a test waits for one frame before failing.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// A running ingress node.
pub struct Node {
    pub addr: SocketAddr,
    /// The node's shared state, for assertions on what it holds.
    pub state: ingress::state::Shared,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<()>,
}

/// A running fanout worker.
pub struct Worker {
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<()>,
}

pub struct Stack {
    /// Standalone Redis: all data, or only the job queue when `cluster` is set.
    pub redis: RedisServer,
    /// A three-master Redis Cluster holding the chat data, when asked for.
    pub cluster: Option<RedisCluster>,
    pub nodes: Vec<Node>,
    pub workers: Vec<Worker>,
    pub notifiers: Vec<Worker>,
    pub summarizers: Vec<Worker>,
    /// The archive's MongoDB-wire-protocol server (nx-27017), when asked for.
    pub mongo: Option<chat_devkit::mongo_server::MongoServer>,
    pub archivers: Vec<Worker>,
    pub webhookers: Vec<Worker>,
    pub env: HashMap<String, String>,
    pub streams: Arc<StreamsConfig>,
    /// A replica of `redis` and the forwarder the services reach Redis
    /// through, when asked for: see [`StackBuilder::replica`].
    pub failover: Option<Failover>,
}

/// A replica of the stack's Redis, and the one address the services use.
pub struct Failover {
    pub replica: RedisServer,
    pub forwarder: forwarder::Forwarder,
}

/// What to start.
pub struct StackBuilder {
    nodes: usize,
    workers: usize,
    notifiers: usize,
    summarizers: usize,
    streams: StreamsConfig,
    env: HashMap<String, String>,
    cluster: bool,
    archive: bool,
    replica: bool,
    redis_args: Vec<String>,
    cluster_replicas: usize,
}

impl Default for StackBuilder {
    fn default() -> Self {
        let mut streams = StreamsConfig::default();
        streams.fanout.claim_idle = Duration::from_millis(1000);
        streams.fanout.shards = 4;
        Self {
            nodes: 1,
            workers: 1,
            notifiers: 0,
            summarizers: 0,
            streams,
            env: HashMap::new(),
            // `CHAT_TEST_REDIS=cluster` runs the same tests on a Redis Cluster.
            cluster: std::env::var("CHAT_TEST_REDIS").is_ok_and(|v| v == "cluster"),
            archive: false,
            replica: false,
            redis_args: Vec::new(),
            cluster_replicas: 0,
        }
    }
}

impl StackBuilder {
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    pub fn notifiers(mut self, n: usize) -> Self {
        self.notifiers = n;
        self
    }

    pub fn summarizers(mut self, n: usize) -> Self {
        self.summarizers = n;
        self
    }

    pub fn streams(mut self, f: impl FnOnce(&mut StreamsConfig)) -> Self {
        f(&mut self.streams);
        self
    }

    /// Chat data on a real three-master Redis Cluster (the job queue stays
    /// on the standalone server).
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// An nx-27017 server, `CHAT_MONGODB_URL` for every service, and one
    /// archive worker.
    pub fn archive(mut self) -> Self {
        self.archive = true;
        self
    }

    /// Chat data on a Redis Cluster whose masters have a replica each, so
    /// one shard can fail over alone ([`Stack::fail_over_shard_of`]).
    pub fn cluster_with_replicas(mut self) -> Self {
        self.cluster = true;
        self.cluster_replicas = 1;
        self
    }

    /// A replica of the (standalone) Redis, with the services reaching
    /// Redis through a forwarder that [`Stack::fail_over`] points at it.
    pub fn replica(mut self) -> Self {
        self.replica = true;
        self
    }

    /// More `redis-server` arguments for the standalone Redis (e.g.
    /// `--appendonly yes`), kept across its restarts.
    pub fn redis_args(mut self, args: &[&str]) -> Self {
        self.redis_args = args.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.insert(k.to_owned(), v.to_owned());
        self
    }

    pub async fn start(mut self) -> Stack {
        chat_core::telemetry::init_for_tests();
        if self.replica {
            // Replicas sync at once, not after the default 5 s wait for others.
            self.redis_args
                .extend(["--repl-diskless-sync-delay".to_owned(), "0".to_owned()]);
        }
        let args: Vec<&str> = self.redis_args.iter().map(String::as_str).collect();
        let redis = RedisServer::start_with(&args).expect("redis-server starts (is it installed?)");
        let cluster = self.cluster.then(|| {
            RedisCluster::start_with_replicas(3, self.cluster_replicas)
                .expect("redis cluster starts")
        });
        let failover = self.replica.then(|| Failover {
            replica: RedisServer::start_replica_of(redis.port()).expect("replica starts"),
            forwarder: forwarder::Forwarder::start(redis.port()).expect("forwarder starts"),
        });
        if failover.is_some() {
            replicas_acking(redis.port(), 1).expect("the replica acknowledges");
        }
        let url = match (&cluster, &failover) {
            (Some(c), _) => c.url(),
            (None, Some(f)) => f.forwarder.url(),
            (None, None) => redis.url(),
        };
        let jobs_url = failover
            .as_ref()
            .map_or_else(|| redis.url(), |f| f.forwarder.url());
        let mut env: HashMap<String, String> = [
            ("CHAT_REDIS_URL", url),
            ("CHAT_JOBS_REDIS_URL", jobs_url),
            ("CHAT_JWT_SECRET", SECRET.to_owned()),
            ("CHAT_API_KEYS", API_KEY.to_owned()),
            ("CHAT_LISTEN", "127.0.0.1:0".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mongo = self.archive.then(|| {
            chat_devkit::mongo_server::MongoServer::start()
                .expect("nx-27017 starts (scripts/ensure-mongo installs it)")
        });
        if let Some(m) = &mongo {
            env.insert("CHAT_MONGODB_URL".into(), m.url());
            env.insert("CHAT_MONGODB_TIMEOUT".into(), "2s".into());
        }
        env.extend(self.env);
        let mut stack = Stack {
            redis,
            cluster,
            nodes: Vec::new(),
            workers: Vec::new(),
            notifiers: Vec::new(),
            summarizers: Vec::new(),
            mongo,
            archivers: Vec::new(),
            webhookers: Vec::new(),
            env,
            streams: Arc::new(self.streams),
            failover,
        };
        for _ in 0..self.nodes {
            stack.add_node().await;
        }
        for _ in 0..self.workers {
            stack.add_worker().await;
        }
        for _ in 0..self.notifiers {
            stack.add_notifier().await;
        }
        for _ in 0..self.summarizers {
            stack.add_summarizer().await;
        }
        if self.archive {
            stack.add_archiver().await;
        }
        stack
    }
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    pub async fn add_node(&mut self) -> usize {
        let mut settings =
            ingress::settings::IngressSettings::from_strings(&self.env).expect("ingress settings");
        settings.common.streams = self.streams.clone();
        let shutdown = CancellationToken::new();
        let node = ingress::Ingress::build(settings, shutdown.clone())
            .await
            .expect("ingress starts");
        let addr = node.local_addr();
        let state = node.state();
        let handle = tokio::spawn(async move {
            node.run().await.expect("ingress runs");
        });
        self.nodes.push(Node {
            addr,
            state,
            shutdown,
            handle,
        });
        self.nodes.len() - 1
    }

    pub async fn add_worker(&mut self) -> usize {
        let mut settings = fanout_worker::settings::FanoutSettings::from_strings(&self.env)
            .expect("fanout settings");
        settings.common.streams = self.streams.clone();
        settings.block = Duration::from_millis(200);
        let shutdown = CancellationToken::new();
        let worker = fanout_worker::Fanout::build(settings)
            .await
            .expect("fanout starts");
        let s = shutdown.clone();
        let handle = tokio::spawn(async move {
            worker.run(s).await.expect("fanout runs");
        });
        self.workers.push(Worker { shutdown, handle });
        self.workers.len() - 1
    }

    /// Starts a webhook worker; `secrets` are the endpoints' signing-secret
    /// variables (as `secret_env` names them), beside the stack's settings.
    pub async fn add_webhooker(&mut self, secrets: &[(&str, &str)]) -> usize {
        let mut env = self.env.clone();
        for (k, v) in secrets {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let mut settings = webhook_worker::settings::WebhookSettings::from_strings(&env)
            .expect("webhook settings");
        settings.common.streams = self.streams.clone();
        settings.block = Duration::from_millis(200);
        // The secrets of this stack's endpoints (the settings read those
        // of the streams.toml in `env`).
        for e in &self.streams.webhooks.endpoints {
            if let Some(v) = env.get(&e.secret_env) {
                settings
                    .secrets
                    .insert(e.name.clone(), v.clone().into_bytes());
            }
        }
        let shutdown = CancellationToken::new();
        let worker = webhook_worker::Webhooks::build(settings)
            .await
            .expect("webhook worker starts");
        let s = shutdown.clone();
        let handle = tokio::spawn(async move {
            worker.run(s).await.expect("webhook worker runs");
        });
        self.webhookers.push(Worker { shutdown, handle });
        self.webhookers.len() - 1
    }

    pub async fn add_archiver(&mut self) -> usize {
        let mut settings = archive_worker::settings::ArchiveSettings::from_strings(&self.env)
            .expect("archive settings");
        settings.common.streams = self.streams.clone();
        settings.block = Duration::from_millis(200);
        let shutdown = CancellationToken::new();
        let worker = archive_worker::Archive::build(settings)
            .await
            .expect("archive starts");
        let s = shutdown.clone();
        let handle = tokio::spawn(async move {
            worker.run(s).await.expect("archive runs");
        });
        self.archivers.push(Worker { shutdown, handle });
        self.archivers.len() - 1
    }

    /// The archive's collection of messages (the stack must have `archive()`).
    pub async fn archived(&self) -> mongodb::Collection<mongodb::bson::Document> {
        let url = self.mongo.as_ref().expect("stack with archive()").url();
        mongodb::Client::with_uri_str(url)
            .await
            .expect("mongo client")
            .database("chat")
            .collection("messages")
    }

    /// Starts a notifier with short backoffs (FCM settings from `env`).
    pub async fn add_notifier(&mut self) -> usize {
        let mut env = self.env.clone();
        for (k, v) in [
            ("CHAT_NOTIFIER_BLOCK", "200ms"),
            ("CHAT_FCM_BACKOFF", "50ms"),
            ("CHAT_FCM_BACKOFF_MAX", "2s"),
            ("CHAT_FCM_TIMEOUT", "2s"),
        ] {
            env.entry(k.to_owned()).or_insert_with(|| v.to_owned());
        }
        let mut settings = notifier_worker::settings::NotifierSettings::from_strings(&env)
            .expect("notifier settings");
        settings.common.streams = self.streams.clone();
        let shutdown = CancellationToken::new();
        let worker = notifier_worker::Notifier::build(settings)
            .await
            .expect("notifier starts");
        let s = shutdown.clone();
        let handle = tokio::spawn(async move {
            worker
                .run(s, Duration::from_secs(1))
                .await
                .expect("notifier runs");
        });
        self.notifiers.push(Worker { shutdown, handle });
        self.notifiers.len() - 1
    }

    /// Starts a summarizer worker (Gemini settings from `env`).
    pub async fn add_summarizer(&mut self) -> usize {
        let mut env = self.env.clone();
        env.entry("CHAT_SUMMARIZER_POLL".to_owned())
            .or_insert_with(|| "100ms".to_owned());
        let mut settings = summarizer_worker::settings::SummarizerSettings::from_strings(&env)
            .expect("summarizer settings");
        settings.common.streams = self.streams.clone();
        let shutdown = CancellationToken::new();
        let worker = summarizer_worker::Summarizer::build(settings)
            .await
            .expect("summarizer starts");
        let s = shutdown.clone();
        let handle = tokio::spawn(async move {
            worker.run(s).await.expect("summarizer runs");
        });
        self.summarizers.push(Worker { shutdown, handle });
        self.summarizers.len() - 1
    }

    /// Registers a device token for `user` through the API.
    pub async fn register_device(&self, user: &str, device: &str) {
        let r = http()
            .post(format!("{}/v1/devices", self.http(0)))
            .bearer_auth(token(user, &["*"]))
            .json(&json!({"token": device, "platform": "android"}))
            .send()
            .await
            .expect("register device");
        assert_eq!(r.status(), 200, "register {device} for {user}");
    }

    /// Kills a worker mid-stream: its task is aborted, nothing is acknowledged.
    pub fn kill_worker(&mut self, i: usize) {
        self.workers[i].handle.abort();
    }

    /// Every pub/sub channel (plain and sharded) someone is subscribed to,
    /// over every node of the chat data's Redis; `None` while unreachable.
    pub async fn channels(&self) -> Option<Vec<String>> {
        let urls: Vec<String> = match &self.cluster {
            Some(c) => c.nodes().iter().map(RedisServer::url).collect(),
            None => vec![self.redis.url()],
        };
        let mut all = Vec::new();
        for url in urls {
            let mut c = redis::Client::open(url)
                .ok()?
                .get_multiplexed_async_connection()
                .await
                .ok()?;
            for sub in ["CHANNELS", "SHARDCHANNELS"] {
                let names: Vec<String> = redis::cmd("PUBSUB")
                    .arg(sub)
                    .query_async(&mut c)
                    .await
                    .ok()?;
                all.extend(names);
            }
        }
        Some(all)
    }

    /// Kills the Redis holding the chat data (every node of a cluster).
    pub fn kill_redis(&mut self) {
        match &mut self.cluster {
            Some(c) => c.kill(),
            None => self.redis.kill(),
        }
    }

    /// Snapshots the chat data's Redis (every node of a cluster) now.
    pub fn snapshot_redis(&self) {
        match &self.cluster {
            Some(c) => c.snapshot().expect("cluster snapshot"),
            None => self.redis.snapshot().expect("redis snapshot"),
        }
    }

    /// Kills the chat data's Redis and starts it from its last snapshot:
    /// the writes acknowledged since are lost.
    pub fn restart_redis_from_snapshot(&mut self) {
        match &mut self.cluster {
            Some(c) => c.restart_from_snapshot().expect("cluster back"),
            None => self.redis.restart_from_snapshot().expect("redis back"),
        }
    }

    fn failover(&self) -> &Failover {
        self.failover
            .as_ref()
            .expect("a stack started with .replica()")
    }

    /// Waits until the replica holds every write of the primary.
    pub async fn replica_caught_up(&self) {
        let f = self.failover();
        wait_until(FRAME_TIMEOUT, "the replica to catch up", || async {
            let primary = self.redis.repl_offset()?;
            (f.replica.repl_offset()? == primary).then_some(())
        })
        .await;
    }

    /// The replica stops following (a partition from the primary; it keeps
    /// what it has, and still refuses writes): what the primary acks from now
    /// on, it alone holds.
    pub fn cut_replica(&self) {
        let nobody = chat_devkit::redis_server::free_port().expect("a free port");
        self.failover()
            .replica
            .replicate(Some(nobody))
            .expect("replica cut off");
    }

    /// The primary dies (SIGKILL), the replica is promoted, and the address
    /// the services use leads to it; a fresh replica then follows it (as the
    /// old primary would once back), so acks that wait for one can resume.
    /// `redis` is the promoted server from then on.
    pub fn fail_over(&mut self) {
        self.redis.kill();
        let f = self
            .failover
            .as_mut()
            .expect("a stack started with .replica()");
        f.replica.replicate(None).expect("replica promoted");
        f.forwarder.switch(f.replica.port());
        let fresh = RedisServer::start_replica_of(f.replica.port()).expect("a new replica starts");
        let promoted = std::mem::replace(&mut f.replica, fresh);
        replicas_acking(promoted.port(), 1).expect("the new replica acknowledges");
        drop(std::mem::replace(&mut self.redis, promoted));
    }

    /// The cluster shard that holds `room` fails over alone (its replica
    /// has every write): see [`RedisCluster::fail_over_shard`].
    pub fn fail_over_shard_of(&mut self, room: &str) {
        let key = self.keys().room_meta(room);
        self.cluster
            .as_mut()
            .expect("a stack started with .cluster_with_replicas()")
            .fail_over_shard(&key)
            .expect("the shard fails over");
    }

    /// Brings the chat data's Redis back, empty.
    pub fn restart_redis_empty(&mut self) {
        match &mut self.cluster {
            Some(c) => c.restart_empty().expect("cluster back"),
            None => self.redis.restart_empty().expect("redis back"),
        }
    }

    pub fn keys(&self) -> chat_core::keys::Keys {
        chat_core::keys::Keys::new("chat", self.streams.fanout.shards)
    }

    pub async fn redis(&self) -> chat_core::redis_conn::Conn {
        chat_core::redis_conn::manager(&self.env["CHAT_REDIS_URL"])
            .await
            .expect("redis connection")
    }

    /// The summary job queue's Redis (standalone, also beside a cluster).
    pub async fn jobs_redis(&self) -> chat_core::redis_conn::Conn {
        chat_core::redis_conn::manager(&self.env["CHAT_JOBS_REDIS_URL"])
            .await
            .expect("jobs redis connection")
    }

    /// While the chat data's Redis is down (after [`Self::kill_redis`]), its
    /// ports (every node's, for a cluster) accept and at once hang up on
    /// every connection, until `attempts` connections were turned away: an
    /// outage measured in the services' reconnect attempts, not in time.
    pub async fn turn_away_redis_clients(&self, attempts: usize) {
        let ports: Vec<u16> = match &self.cluster {
            Some(c) => c.nodes().iter().map(RedisServer::port).collect(),
            None => vec![self.redis.port()],
        };
        let turned_away = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut refusers = tokio::task::JoinSet::new();
        for port in ports {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_reuseaddr(true).expect("SO_REUSEADDR");
            socket
                .bind(([127, 0, 0, 1], port).into())
                .unwrap_or_else(|e| panic!("bind Redis's port {port}: {e}"));
            let listener = socket.listen(64).expect("listen");
            let turned_away = Arc::clone(&turned_away);
            refusers.spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    turned_away.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    drop(conn);
                }
            });
        }
        let what = format!("{attempts} reconnect attempts turned away");
        wait_until(Duration::from_secs(60), &what, || async {
            let n = turned_away.load(std::sync::atomic::Ordering::Relaxed);
            (n >= attempts).then_some(())
        })
        .await;
        refusers.shutdown().await;
    }

    /// Whether `key` exists in the chat data's Redis.
    pub async fn exists(&self, key: &str) -> bool {
        let mut r = self.redis().await;
        redis::AsyncCommands::exists(&mut r, key)
            .await
            .expect("EXISTS")
    }

    /// Every key of the chat data's Redis (each master of a cluster) whose
    /// value holds `needle`, read by type: strings, hashes, lists, sets,
    /// sorted sets and streams (entries' fields and values).
    pub async fn keys_holding(&self, needle: &str) -> Vec<String> {
        let ports: Vec<u16> = match &self.cluster {
            Some(c) => c.nodes().iter().map(RedisServer::port).collect(),
            None => vec![self.redis.port()],
        };
        let mut found = Vec::new();
        for port in ports {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
            let mut c = client
                .get_multiplexed_async_connection()
                .await
                .expect("connect to a Redis node");
            let role: Vec<redis::Value> =
                redis::cmd("ROLE").query_async(&mut c).await.expect("ROLE");
            if role.first() != Some(&redis::Value::BulkString(b"master".to_vec())) {
                continue;
            }
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("*")
                .query_async(&mut c)
                .await
                .expect("KEYS");
            for key in keys {
                let ty: String = redis::cmd("TYPE")
                    .arg(&key)
                    .query_async(&mut c)
                    .await
                    .expect("TYPE");
                let cmd = match ty.as_str() {
                    "string" => redis::cmd("GET").arg(&key).clone(),
                    "hash" => redis::cmd("HGETALL").arg(&key).clone(),
                    "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
                    "set" => redis::cmd("SMEMBERS").arg(&key).clone(),
                    "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).clone(),
                    "stream" => redis::cmd("XRANGE").arg(&key).arg("-").arg("+").clone(),
                    _ => continue,
                };
                let v: redis::Value = cmd.query_async(&mut c).await.expect("read a key");
                if value_holds(&v, needle) {
                    found.push(key);
                }
            }
        }
        found
    }

    /// Removes a room's meta and stream, as when it expires: its next
    /// message starts a new epoch.
    pub async fn expire_room(&self, room: &str) {
        let mut r = self.redis().await;
        let k = self.keys();
        let _: () = redis::cmd("DEL")
            .arg(k.room_meta(room))
            .arg(k.room_stream(room))
            .arg(k.room_state(room))
            .arg(k.room_threads(room))
            .query_async(&mut r)
            .await
            .expect("DEL");
    }

    /// Writes entries `offsets` straight into a room's stream, as something
    /// other than the append script would: those `malformed` says are junk
    /// (no message fields), the others messages from `pub` with text
    /// `m<offset>`. The room's last offset becomes the range's end, so the
    /// next message sent follows them; nothing is published live.
    pub async fn write_room_entries(
        &self,
        room: &str,
        offsets: std::ops::RangeInclusive<u64>,
        malformed: impl Fn(u64) -> bool,
    ) {
        let k = self.keys();
        let stream = k.room_stream(room);
        let ts = now() * 1000;
        let mut pipe = redis::pipe();
        for o in offsets.clone() {
            let add = pipe.cmd("XADD").arg(&stream).arg(format!("{o}-{ts}"));
            if malformed(o) {
                add.arg("junk").arg("1").ignore();
            } else {
                add.arg("u")
                    .arg("pub")
                    .arg("t")
                    .arg(format!("m{o}"))
                    .arg("c")
                    .arg(format!("c{o}"))
                    .arg("k")
                    .arg("user")
                    .ignore();
            }
        }
        pipe.cmd("HSET")
            .arg(k.room_meta(room))
            .arg("offset")
            .arg(*offsets.end())
            .ignore();
        let mut r = self.redis().await;
        let _: () = pipe.query_async(&mut r).await.expect("write entries");
    }

    /// Reads everything new on every shard as fanout consumer `victim`,
    /// acking nothing: what a worker leaves behind when it dies right after
    /// The streams `group` reads: the notify stream for `notifier`, the
    /// shard streams for the others.
    fn group_streams(&self, group: &str) -> Vec<String> {
        match group {
            "notifier" => vec![self.keys().notify_stream()],
            _ => self.keys().all_shard_streams(),
        }
    }

    /// Entries `group` has read and not acknowledged, over its streams (the
    /// shard streams, or the notify stream for `notifier`); a stream or
    /// group that does not exist holds none.
    pub async fn pending(&self, group: &str) -> u64 {
        use redis::AsyncCommands;
        let mut r = self.redis().await;
        let mut total = 0;
        for s in self.group_streams(group) {
            let p: redis::RedisResult<redis::streams::StreamPendingReply> =
                r.xpending(&s, group).await;
            match p {
                Ok(p) => total += p.count() as u64,
                Err(e) if e.code() == Some("NOGROUP") => {}
                Err(e) => panic!("XPENDING {s} {group}: {e}"),
            }
        }
        total
    }

    /// Entries of `group`'s streams it has not read yet (`lag`); none
    /// without the stream or group.
    pub async fn lag(&self, group: &str) -> u64 {
        use redis::AsyncCommands;
        let mut r = self.redis().await;
        let mut total = 0;
        for s in self.group_streams(group) {
            let groups: redis::RedisResult<redis::streams::StreamInfoGroupsReply> =
                r.xinfo_groups(&s).await;
            let Ok(groups) = groups else { continue };
            total += groups
                .groups
                .iter()
                .filter(|g| g.name == group)
                .map(|g| g.lag.unwrap_or(1) as u64)
                .sum::<u64>();
        }
        total
    }

    /// Waits until fanout and the notifier have consumed everything queued.
    pub async fn settled(&self) {
        wait_until(
            Duration::from_secs(15),
            "fanout and notifier to settle",
            || async {
                for g in ["fanout", "notifier"] {
                    if self.pending(g).await > 0 || self.lag(g).await > 0 {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
    }

    /// `XREADGROUP`. Returns the entries read.
    pub async fn read_as_crashed_consumer(&self) -> usize {
        let mut r = self.redis().await;
        let opts = redis::streams::StreamReadOptions::default()
            .group("fanout", "victim")
            .count(10_000);
        let mut n = 0;
        // One stream per read: shards live in different slots of a cluster.
        for s in self.keys().all_shard_streams() {
            // No worker ran yet: the group is created from the start of each stream.
            let _: redis::RedisResult<()> =
                redis::AsyncCommands::xgroup_create_mkstream(&mut r, &s, "fanout", "0").await;
            let reply: redis::streams::StreamReadReply =
                redis::AsyncCommands::xread_options(&mut r, &[&s], &[">"], &opts)
                    .await
                    .expect("xreadgroup");
            n += reply.keys.iter().map(|k| k.ids.len()).sum::<usize>();
        }
        n
    }

    /// Waits until the archive holds exactly `n` messages of `room`.
    pub async fn wait_archived(&self, room: &str, n: u64) {
        let coll = self.archived().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let got = coll
                .count_documents(mongodb::bson::doc! {"room": room})
                .await
                .expect("count");
            if got >= n {
                assert_eq!(got, n, "archived more than sent");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{got} of {n} archived"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn http(&self, node: usize) -> String {
        format!("http://{}", self.nodes[node].addr)
    }

    /// `GET /v1/rooms/{room}/messages?{query}` on node 0 with the API key:
    /// the page as JSON.
    pub async fn history_http(&self, room: &str, query: &str) -> Value {
        http()
            .get(format!("{}/v1/rooms/{room}/messages?{query}", self.http(0)))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("json")
    }

    pub fn ws_url(&self, node: usize) -> String {
        format!("ws://{}/v1/ws", self.nodes[node].addr)
    }

    /// Publishes `n` messages of `size` bytes from 8 concurrent HTTP clients.
    pub async fn publish_many(&self, room: &str, n: usize, size: usize) {
        let text = "x".repeat(size);
        let url = format!("{}/v1/rooms/{room}/messages", self.http(0));
        let mut tasks = Vec::new();
        for t in 0..8 {
            let (url, text) = (url.clone(), text.clone());
            let count = n / 8 + usize::from(t < n % 8);
            tasks.push(tokio::spawn(async move {
                let http = http();
                for _ in 0..count {
                    let r = http
                        .post(&url)
                        .bearer_auth(API_KEY)
                        .json(&json!({"text": text}))
                        .send()
                        .await
                        .expect("publish");
                    assert_eq!(r.status(), 200);
                }
            }));
        }
        for t in tasks {
            t.await.expect("publisher");
        }
    }

    /// Publishes one `user` message as `user` through the admin HTTP API on
    /// node 0; returns the `ack`.
    pub async fn say(&self, room: &str, user: &str, text: &str) -> Value {
        let r = http()
            .post(format!("{}/v1/rooms/{room}/messages", self.http(0)))
            .bearer_auth(API_KEY)
            .json(&json!({"text": text, "user": user, "kind": "user"}))
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), 200, "publish to {room}");
        r.json().await.expect("ack")
    }

    /// Publishes `n` messages (`m0`, `m1`, ...) as `pub`; returns the last `ack`.
    pub async fn publish(&self, room: &str, n: usize) -> Value {
        let mut last = Value::Null;
        for i in 0..n {
            last = self.say(room, "pub", &format!("m{i}")).await;
        }
        last
    }

    /// Grants `user` membership of `room` through the admin API.
    pub async fn add_member(&self, room: &str, user: &str) {
        self.membership(reqwest::Method::PUT, room, user).await;
    }

    /// Removes `user`'s membership of `room` through the admin API.
    pub async fn remove_member(&self, room: &str, user: &str) {
        self.membership(reqwest::Method::DELETE, room, user).await;
    }

    async fn membership(&self, method: reqwest::Method, room: &str, user: &str) {
        let r = http()
            .request(
                method.clone(),
                format!("{}/v1/rooms/{room}/members/{user}", self.http(0)),
            )
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("member request");
        assert_eq!(r.status(), 204, "{method} member {user} of {room}");
    }

    /// Connects with `Authorization: Bearer` and reads `ready`.
    pub async fn connect(&self, node: usize, user: &str) -> Client {
        self.connect_token(node, &token(user, &["*"])).await.0
    }

    /// Connects with `token` in the header and reads `ready`.
    pub async fn connect_token(&self, node: usize, token: &str) -> (Client, Value) {
        let mut c = Client::connect_with_header(&self.ws_url(node), Some(token)).await;
        let ready = c.recv().await;
        assert_eq!(ready["type"], "ready", "{ready}");
        (c, ready)
    }

    /// `{node}/v1/sessions/{sid}`.
    pub fn session_url(&self, node: usize, sid: &str) -> String {
        format!("{}/v1/sessions/{sid}", self.http(node))
    }

    /// `PUT /v1/sessions/{sid}` on `node` with the admin key; expects 204.
    pub async fn put_session(&self, node: usize, sid: &str, user: &str, ttl_secs: u64) {
        let resp = http()
            .put(self.session_url(node, sid))
            .bearer_auth(API_KEY)
            .json(&json!({"user": user, "ttl_secs": ttl_secs}))
            .send()
            .await
            .expect("PUT session");
        assert_eq!(resp.status().as_u16(), 204, "PUT /v1/sessions/{sid}");
    }
}

/// An HS256 token for `user`, to every room, carrying session `sid`.
pub fn sid_token(user: &str, sid: &str) -> String {
    sign(json!({"sub": user, "exp": now() + 3600, "sid": sid, "rooms": ["*"]}))
}

/// An HS256 token with the test secret.
pub fn token(user: &str, rooms: &[&str]) -> String {
    sign(json!({"sub": user, "exp": now() + 3600, "rooms": rooms}))
}

pub fn sign(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// What a read from the socket produced.
#[derive(Debug)]
pub enum Event {
    Frame(Value),
    Closed(Option<u16>),
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// `message` (and server-side `joined`) frames that arrived while `send`
    /// waited for its ack (the contract does not order them); `recv`
    /// returns them first.
    early: std::collections::VecDeque<Value>,
    refs: u64,
}

impl Client {
    pub async fn connect_with_header(url: &str, token: Option<&str>) -> Client {
        let mut req = url.into_client_request().expect("request");
        if let Some(t) = token {
            req.headers_mut().insert(
                "Authorization",
                format!("Bearer {t}").parse().expect("header"),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        Client {
            ws,
            early: Default::default(),
            refs: 0,
        }
    }

    pub async fn send_json(&mut self, v: Value) {
        self.ws
            .send(WsMessage::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, m: WsMessage) {
        let _ = self.ws.send(m).await;
    }

    /// The next frame or close, within `FRAME_TIMEOUT`.
    pub async fn event(&mut self) -> Event {
        loop {
            let m = tokio::time::timeout(FRAME_TIMEOUT, self.ws.next())
                .await
                .expect("timed out waiting for a frame");
            match m {
                Some(Ok(WsMessage::Text(t))) => {
                    return Event::Frame(serde_json::from_str(&t).expect("server sends JSON"));
                }
                Some(Ok(WsMessage::Close(f))) => {
                    return Event::Closed(f.map(|CloseFrame { code, .. }| u16::from(code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Event::Closed(None),
            }
        }
    }

    /// The next frame; panics on a close.
    pub async fn recv(&mut self) -> Value {
        match self.early.pop_front() {
            Some(f) => f,
            None => self.next_frame().await,
        }
    }

    /// The next frame off the socket (not one held back by `send`).
    async fn next_frame(&mut self) -> Value {
        match self.event().await {
            Event::Frame(v) => v,
            Event::Closed(c) => panic!("socket closed ({c:?}) while waiting for a frame"),
        }
    }

    /// The next frame of `ty`, skipping presence and typing events.
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        loop {
            let f = self.recv().await;
            if f["type"] == ty {
                return f;
            }
            if f["type"] == "presence" || f["type"] == "typing" {
                continue;
            }
            panic!("expected {ty}, got {f}");
        }
    }

    /// Reads until the socket closes; returns the close code and the frames seen.
    pub async fn until_closed(&mut self) -> (Option<u16>, Vec<Value>) {
        let mut frames = Vec::new();
        loop {
            match self.event().await {
                Event::Frame(v) => frames.push(v),
                Event::Closed(c) => return (c, frames),
            }
        }
    }

    /// Sends a `ping` with `reference` and expects its `pong` next.
    pub async fn ping(&mut self, reference: Value) {
        self.send_json(json!({"type": "ping", "ref": reference}))
            .await;
        let pong = self.recv().await;
        assert_eq!(pong["type"], "pong", "{pong}");
        assert_eq!(pong["ref"], reference, "{pong}");
    }

    /// The contract's refusal of a token or session: exactly one
    /// `unauthorized` error (echoing `reference` when one was sent), then
    /// the close 4001.
    pub async fn refused(&mut self, what: &str, reference: Option<&Value>) {
        let (code, frames) = self.until_closed().await;
        assert_eq!(code, Some(4001), "{what}: close code (frames {frames:?})");
        assert_eq!(
            frames.len(),
            1,
            "{what}: one error frame before 4001: {frames:?}"
        );
        let f = &frames[0];
        assert_eq!(
            (f["type"].as_str(), f["code"].as_str()),
            (Some("error"), Some("unauthorized")),
            "{what}: {f}"
        );
        if let Some(r) = reference {
            assert_eq!(&f["ref"], r, "{what}: ref not echoed: {f}");
        }
    }

    /// Joins `room` asking to recover after (`epoch`, `offset`); returns `joined`.
    pub async fn join_since(&mut self, room: &str, epoch: &Value, offset: u64) -> Value {
        self.send_json(
            json!({"type": "join", "room": room, "since": {"epoch": epoch, "offset": offset}}),
        )
        .await;
        self.recv_type("joined").await
    }

    pub async fn join(&mut self, room: &str) -> Value {
        self.send_json(json!({"type": "join", "room": room})).await;
        self.recv_type("joined").await
    }

    /// Sends and waits for the `ack` (messages that arrive first are skipped).
    pub async fn send(&mut self, room: &str, text: &str, client_id: &str) -> Value {
        self.send_json(json!({"type": "send", "room": room, "text": text, "client_id": client_id}))
            .await;
        loop {
            let f = self.next_frame().await;
            match f["type"].as_str() {
                Some("ack") => return f,
                // A `joined` of the server's own (the room went on in a new
                // epoch) is no more ordered with the ack than a message is.
                Some("message" | "joined") => self.early.push_back(f),
                Some("presence" | "typing") => continue,
                _ => panic!("expected ack, got {f}"),
            }
        }
    }

    /// Sends `frames` without waiting, then reads until each has had its
    /// `ack` and `total` messages arrived. Returns (acks, messages).
    pub async fn pipeline(mut self, frames: Vec<Value>, total: usize) -> (Vec<Value>, Vec<Value>) {
        let n = frames.len();
        for f in frames {
            self.send_json(f).await;
        }
        let (mut acks, mut msgs) = (Vec::new(), Vec::new());
        while acks.len() < n || msgs.len() < total {
            let f = self.recv().await;
            match f["type"].as_str() {
                Some("ack") => acks.push(f),
                Some("message") => msgs.push(f),
                Some("presence") => {}
                _ => panic!("unexpected {f}"),
            }
        }
        (acks, msgs)
    }

    /// Sends `frame` with a fresh `ref` and returns the reply that echoes
    /// it (an `ack`, an `error`, a `history`...); `message` and `joined`
    /// frames that come first are held back for `recv`, as `send` does.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        self.refs += 1;
        let r = format!("req-{}", self.refs);
        frame["ref"] = json!(r);
        self.send_json(frame).await;
        loop {
            let f = self.next_frame().await;
            if f["ref"] == json!(r) {
                return f;
            }
            match f["type"].as_str() {
                Some("message" | "joined") => self.early.push_back(f),
                Some("presence" | "typing") => continue,
                _ => panic!("expected the reply to {r}, got {f}"),
            }
        }
    }

    /// Sends as a client does: while the answer is `unavailable` (Redis
    /// reconnecting, deliveries behind), retries with the same `client_id`
    /// until it is acked, for up to 30 s (a failover's length).
    pub async fn send_retrying(&mut self, room: &str, text: &str, client_id: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            self.send_json(
                json!({"type": "send", "room": room, "text": text, "client_id": client_id}),
            )
            .await;
            loop {
                let f = self.next_frame().await;
                match f["type"].as_str() {
                    Some("ack") => return f,
                    Some("message" | "joined") => self.early.push_back(f),
                    Some("presence" | "typing") => continue,
                    Some("error") if f["code"] == "unavailable" => break,
                    _ => panic!("expected ack or unavailable, got {f}"),
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{client_id} still unavailable after 30 s"
            );
            // A client's retry backoff.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Collects `message` frames until `n` have arrived.
    pub async fn messages(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let f = self.recv().await;
            if f["type"] == "message" {
                out.push(f);
            }
        }
        out
    }

    /// Scrolls back through a room with `history` frames of `limit`, from
    /// the newest message until `next` is null; returns every page, newest
    /// first.
    pub async fn history_pages(&mut self, room: &str, limit: u32) -> Vec<Value> {
        let mut pages = Vec::new();
        let mut frame = json!({"type": "history", "room": room, "limit": limit});
        loop {
            assert!(pages.len() < 200, "too many pages");
            frame["ref"] = json!(pages.len());
            self.send_json(frame.clone()).await;
            let h = self.recv_type("history").await;
            let next = h["next"].clone();
            pages.push(h);
            if next.is_null() {
                return pages;
            }
            frame["epoch"] = next["epoch"].clone();
            frame["before"] = next["before"].clone();
        }
    }

    /// The offsets of the next `n` `message` frames.
    pub async fn offsets(&mut self, n: usize) -> Vec<u64> {
        let msgs = self.messages(n).await;
        msgs.iter().filter_map(|m| m["offset"].as_u64()).collect()
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Whether any string in `v` (nested replies included) contains `needle`.
fn value_holds(v: &redis::Value, needle: &str) -> bool {
    use redis::Value;
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).contains(needle),
        Value::SimpleString(s) => s.contains(needle),
        Value::Array(items) | Value::Set(items) => items.iter().any(|i| value_holds(i, needle)),
        Value::Map(pairs) => pairs
            .iter()
            .any(|(k, v)| value_holds(k, needle) || value_holds(v, needle)),
        _ => false,
    }
}

/// An HTTP client for the API.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// Submits a batch of summaries (`POST /v1/summaries`); returns its jobs.
pub async fn submit_summaries(stack: &Stack, body: Value) -> Vec<Value> {
    let r = http()
        .post(format!("{}/v1/summaries", stack.http(0)))
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.expect("json");
    v["jobs"].as_array().expect("jobs").clone()
}

/// A summary job's status.
pub async fn summary_status(stack: &Stack, job: &str) -> Value {
    http()
        .get(format!("{}/v1/summaries/{job}", stack.http(0)))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json")
}

/// Waits until the summary job is done or failed.
pub async fn summary_finished(stack: &Stack, job: &str, within: Duration) -> Value {
    wait_until(within, "the job to finish", || async {
        let s = summary_status(stack, job).await;
        matches!(s["status"].as_str(), Some("done" | "failed")).then_some(s)
    })
    .await
}
