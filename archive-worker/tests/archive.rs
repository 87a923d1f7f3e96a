//! The archive worker against a real redis-server and a real
//! MongoDB-wire-protocol server (nx-27017): exactly-once archiving across a
//! SIGKILL, a MongoDB outage that loses nothing, a refused document that
//! does not hold up its batch, and a replayed group that writes nothing twice.

use archive_worker::settings::ArchiveSettings;
use chat_archive as store;
use chat_core::config::StreamsConfig;
use chat_core::keys::Keys;
use chat_core::redis_conn::{self, Conn};
use chat_devkit::mongo_server::MongoServer;
use chat_devkit::redis_server::RedisServer;
use mongodb::bson::{Document, doc};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const STREAMS_TOML: &str = "[fanout]\nshards = 4\n\n[[rooms]]\npattern = \"ttl:*\"\narchive_for = \"1h\"\n\n[archive]\nbatch = 100\nclaim_idle = \"1s\"\n";

struct Env {
    redis: RedisServer,
    mongo: MongoServer,
    _dir: tempfile::TempDir,
    streams_file: PathBuf,
    streams: StreamsConfig,
    keys: Keys,
    conn: Conn,
    messages: mongodb::Collection<Document>,
}

impl Env {
    async fn start() -> Self {
        // The workers run in this process: their metrics land here.
        chat_core::metrics::install();
        let redis = RedisServer::start().expect("redis-server");
        let mongo = MongoServer::start().expect("nx-27017 (scripts/ensure-mongo installs it)");
        let dir = tempfile::tempdir().expect("tempdir");
        let streams_file = dir.path().join("streams.toml");
        std::fs::write(&streams_file, STREAMS_TOML).expect("write");
        let streams = StreamsConfig::load(&streams_file).expect("streams");
        let keys = Keys::new("chat", streams.fanout.shards);
        let conn = redis_conn::manager(&redis.url()).await.expect("redis");
        let client = mongodb::Client::with_uri_str(mongo.url())
            .await
            .expect("mongo client");
        let messages = client.database("chat").collection("messages");
        Self {
            redis,
            mongo,
            _dir: dir,
            streams_file,
            streams,
            keys,
            conn,
            messages,
        }
    }

    fn env(&self) -> HashMap<String, String> {
        [
            ("CHAT_REDIS_URL", self.redis.url()),
            ("CHAT_MONGODB_URL", self.mongo.url()),
            ("CHAT_MONGODB_TIMEOUT", "2s".into()),
            ("CHAT_STREAMS", self.streams_file.to_string_lossy().into()),
            ("CHAT_ARCHIVE_BLOCK", "200ms".into()),
            ("CHAT_SHUTDOWN_GRACE", "5s".into()),
            ("RUST_LOG", "warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// An archive worker in this process.
    async fn worker(&self, name: &str) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        self.worker_with(name, &[]).await
    }

    async fn worker_with(
        &self,
        name: &str,
        extra: &[(&str, &str)],
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let mut env = self.env();
        env.insert("CHAT_ARCHIVE_CONSUMER".into(), name.into());
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        let settings = ArchiveSettings::from_strings(&env).expect("settings");
        let worker = archive_worker::Archive::build(settings)
            .await
            .expect("worker");
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                worker.run(stop).await.expect("worker run");
            }
        });
        (stop, task)
    }

    /// An archive worker as its own process.
    fn process(&self, name: &str) -> Worker {
        self.process_with(name, &[])
    }

    fn process_with(&self, name: &str, extra: &[(&str, &str)]) -> Worker {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_archive-worker"));
        cmd.envs(self.env())
            .env("CHAT_ARCHIVE_CONSUMER", name)
            .envs(extra.iter().copied())
            .stdin(Stdio::null());
        Worker(cmd.spawn().expect("archive-worker starts"))
    }

    /// Entries of the shard streams the archive group has not read yet.
    async fn lag(&self) -> u64 {
        let mut conn = self.conn.clone();
        let mut total = 0;
        for s in self.keys.all_shard_streams() {
            let groups: redis::RedisResult<redis::streams::StreamInfoGroupsReply> =
                redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&s)
                    .query_async(&mut conn)
                    .await;
            let Ok(groups) = groups else { continue };
            total += groups
                .groups
                .iter()
                .filter(|g| g.name == "archive")
                .map(|g| g.lag.unwrap_or(1) as u64)
                .sum::<u64>();
        }
        total
    }

    /// Appends through the real append script; returns the message's offset.
    async fn send(&self, room: &str, i: usize) -> u64 {
        let mut conn = self.conn.clone();
        chat_devkit::testing::append(&mut conn, &self.keys, &self.streams, room, i).await
    }

    async fn archived(&self) -> u64 {
        self.messages.count_documents(doc! {}).await.expect("count")
    }

    async fn pending(&self) -> u64 {
        let mut conn = self.conn.clone();
        let mut total = 0;
        for s in self.keys.all_shard_streams() {
            let rows: Vec<redis::Value> = redis::cmd("XPENDING")
                .arg(&s)
                .arg("archive")
                .arg("-")
                .arg("+")
                .arg(100_000)
                .query_async(&mut conn)
                .await
                .expect("xpending");
            total += rows.len() as u64;
        }
        total
    }

    async fn dead_letters(&self) -> u64 {
        let mut conn = self.conn.clone();
        redis::cmd("XLEN")
            .arg(self.keys.dead_letter("archive"))
            .query_async(&mut conn)
            .await
            .expect("xlen")
    }

    /// Waits until `n` documents are archived and the group has nothing
    /// unread or pending.
    async fn wait_archived(&self, n: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.archived().await;
            if got >= n && self.pending().await == 0 && self.lag().await == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{got} of {n} archived; pending {}, lag {}",
                self.pending().await,
                self.lag().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every room's archived offsets, checked to be exactly 1..=n.
    async fn assert_rooms_complete(&self, rooms: usize, per_room: u64) {
        let mut cursor = self
            .messages
            .find(doc! {})
            .projection(doc! {"room": 1, "offset": 1, "_id": 0})
            .await
            .expect("find");
        let mut seen: HashMap<String, HashSet<i64>> = HashMap::new();
        let mut docs = 0u64;
        while cursor.advance().await.expect("cursor") {
            let d = cursor.deserialize_current().expect("doc");
            let room = d.get_str("room").expect("room").to_owned();
            let offset = store::int(d.get("offset")).expect("offset");
            docs += 1;
            assert!(
                seen.entry(room.clone()).or_default().insert(offset),
                "{room} offset {offset} archived twice"
            );
        }
        assert_eq!(docs, rooms as u64 * per_room, "documents");
        assert_eq!(seen.len(), rooms, "rooms");
        for (room, offsets) in &seen {
            let want: HashSet<i64> = (1..=per_room as i64).collect();
            assert_eq!(offsets, &want, "{room}");
        }
    }
}

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill(child: &mut Child) {
    let ok = Command::new("kill")
        .arg("-KILL")
        .arg(child.id().to_string())
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -KILL");
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_archived_exactly_once_across_a_sigkill() {
    const ROOMS: usize = 50;
    const MESSAGES: usize = 10_000;
    let env = Env::start().await;
    let mut a = env.process("a");
    let b = env.process("b");
    let writer = tokio::spawn(chat_devkit::testing::append_many(
        env.conn.clone(),
        env.keys.clone(),
        env.streams.clone(),
        "a",
        ROOMS,
        MESSAGES,
        100,
        Duration::from_millis(5),
    ));
    // Both are busy before one dies mid-batch.
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.archived().await < 1_000 {
        assert!(Instant::now() < deadline, "the workers never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill(&mut a.0);
    writer.await.expect("writer");
    env.wait_archived(MESSAGES as u64, Duration::from_secs(180))
        .await;
    env.assert_rooms_complete(ROOMS, (MESSAGES / ROOMS) as u64)
        .await;
    assert_eq!(env.dead_letters().await, 0);
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mongodb_outage_loses_nothing_and_the_lag_drains() {
    const ROOMS: usize = 5;
    let mut env = Env::start().await;
    // A process with its own metrics listener: its counters are its alone.
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .to_string();
    let worker = env.process_with("w", &[("CHAT_METRICS_LISTEN", &metrics_addr)]);
    let mut sent = 0usize;
    // Archiving works before the outage (however slow the machine is).
    for r in 0..ROOMS {
        env.send(&format!("o{r}"), sent).await;
        sent += 1;
    }
    env.wait_archived(sent as u64, Duration::from_secs(60))
        .await;
    let started = Instant::now();
    let mut stopped_at = None;
    // Steady sending for about 14 s; MongoDB is down from 2 s to 12 s.
    while started.elapsed() < Duration::from_secs(14) {
        for r in 0..ROOMS {
            env.send(&format!("o{r}"), sent).await;
            sent += 1;
        }
        let t = started.elapsed();
        if stopped_at.is_none() && t >= Duration::from_secs(2) {
            env.mongo.stop();
            stopped_at = Some(sent);
        }
        if env.mongo.pid().is_none() && t >= Duration::from_secs(12) {
            env.mongo.start_again().expect("nx-27017 restarts");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        stopped_at.is_some_and(|n| n < sent),
        "sent during the outage"
    );
    env.wait_archived(sent as u64, Duration::from_secs(60))
        .await;
    env.assert_rooms_complete(ROOMS, (sent / ROOMS) as u64)
        .await;
    assert_eq!(
        env.dead_letters().await,
        0,
        "an outage dead-letters nothing"
    );
    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        value("chat_mongodb_errors_total") >= 1.0,
        "the outage was counted:\n{metrics}"
    );
    // Each message once; a batch retried after the outage may count again.
    assert!(value("chat_archived_total") >= sent as f64, "{metrics}");
    assert!(value("chat_archive_batch_size_count") >= 1.0, "{metrics}");
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_mongodb_refuses_is_dead_lettered_and_its_batch_archived() {
    let env = Env::start().await;
    for i in 0..3 {
        env.send("r", i).await;
    }
    // An entry no MongoDB takes: a 17 MiB text (over the 16 MiB document limit).
    let mut conn = env.conn.clone();
    let huge = "x".repeat(17 * 1024 * 1024);
    let _: String = redis::cmd("XADD")
        .arg(env.keys.room_shard_stream("r"))
        .arg("*")
        .arg(&[
            ("r", "r"),
            ("e", "epoch-x"),
            ("o", "1"),
            ("i", "1-1"),
            ("u", "w"),
            ("c", "big"),
            ("k", "user"),
        ])
        .arg("t")
        .arg(&huge)
        .query_async(&mut conn)
        .await
        .expect("xadd");
    env.send("r", 3).await;
    let (stop, task) = env.worker("w").await;
    env.wait_archived(4, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.dead_letters().await < 1 {
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(env.keys.dead_letter("archive"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("xrange");
    let reason: String = entries.ids[0].get("reason").expect("reason");
    assert!(reason.starts_with("refused: "), "{reason}");
    assert_eq!(env.archived().await, 4);
    assert_eq!(env.pending().await, 0);
    stop.cancel();
    task.await.expect("worker stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_group_archives_nothing_twice() {
    let env = Env::start().await;
    for i in 0..40 {
        env.send(&format!("p{}", i % 4), i).await;
    }
    let (stop, task) = env.worker("w").await;
    env.wait_archived(40, Duration::from_secs(30)).await;
    stop.cancel();
    task.await.expect("worker stops");
    // The group starts over from the beginning of every shard.
    let mut conn = env.conn.clone();
    for s in env.keys.all_shard_streams() {
        let _: () = redis::cmd("XGROUP")
            .arg("SETID")
            .arg(&s)
            .arg("archive")
            .arg("0")
            .query_async(&mut conn)
            .await
            .expect("setid");
    }
    let (stop, task) = env.worker("w2").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Everything re-read and acknowledged again.
        let mut done = true;
        for s in env.keys.all_shard_streams() {
            let info: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&s)
                .query_async(&mut conn)
                .await
                .expect("xinfo");
            let g = info
                .groups
                .iter()
                .find(|g| g.name == "archive")
                .expect("group");
            done &= g.lag == Some(0) && g.pending == 0;
        }
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "replay never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.assert_rooms_complete(4, 10).await;
    stop.cancel();
    task.await.expect("worker stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_pattern_kept_for_a_while_gets_expire_at_and_forever_gets_none() {
    let env = Env::start().await;
    env.send("ttl:1", 0).await;
    env.send("keep", 1).await;
    let (stop, task) = env.worker("w").await;
    env.wait_archived(2, Duration::from_secs(30)).await;
    let kept_for = env
        .messages
        .find_one(doc! {"room": "ttl:1"})
        .await
        .expect("find")
        .expect("archived");
    let ts = store::int(kept_for.get("ts")).expect("ts");
    let expire_at = kept_for.get_datetime("expire_at").expect("expire_at");
    assert_eq!(
        expire_at.timestamp_millis(),
        ts + 3_600_000,
        "ts + archive_for"
    );
    let forever = env
        .messages
        .find_one(doc! {"room": "keep"})
        .await
        .expect("find")
        .expect("archived");
    assert!(
        forever.get("expire_at").is_none(),
        "kept forever: {forever}"
    );
    stop.cancel();
    task.await.expect("worker stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_does_not_wait_for_a_probe_of_a_mongodb_that_is_down() {
    let env = Env::start().await;
    // A "MongoDB" that accepts connections and never answers: the probe's
    // connection is seen arriving, so the stop comes while it waits.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let url = format!(
        "mongodb://{}/?directConnection=true",
        silent.local_addr().expect("addr")
    );
    let (stop, task) = env
        .worker_with(
            "w",
            &[("CHAT_MONGODB_URL", &url), ("CHAT_MONGODB_TIMEOUT", "30s")],
        )
        .await;
    env.send("x", 0).await;
    let (_held, _) = tokio::time::timeout(Duration::from_secs(10), silent.accept())
        .await
        .expect("the probe connects within 10 s")
        .expect("accept");
    let asked = Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stopped while a probe was waiting")
        .expect("worker stops");
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert_eq!(
        env.pending().await,
        0,
        "nothing was read while MongoDB was down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_archives_and_acks_the_batch_in_hand_then_exits() {
    const ROOMS: usize = 10;
    const MESSAGES: usize = 3_000;
    let env = Env::start().await;
    let mut a = env.process("a");
    let writer = tokio::spawn(chat_devkit::testing::append_many(
        env.conn.clone(),
        env.keys.clone(),
        env.streams.clone(),
        "t",
        ROOMS,
        MESSAGES,
        50,
        Duration::from_millis(5),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.archived().await < 300 {
        assert!(Instant::now() < deadline, "the worker never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(a.0.id().to_string())
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = a.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 15 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exited {status}");
    // The only consumer: whatever it had read, it archived and acknowledged.
    assert_eq!(env.pending().await, 0, "a left entries pending");
    writer.await.expect("writer");
    let b = env.process("b");
    env.wait_archived(MESSAGES as u64, Duration::from_secs(120))
        .await;
    env.assert_rooms_complete(ROOMS, (MESSAGES / ROOMS) as u64)
        .await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_a_deleted_epoch_are_not_archived() {
    let env = Env::start().await;
    for i in 0..3 {
        env.send("d", i).await;
    }
    env.send("e", 3).await;
    let mut conn = env.conn.clone();
    let epoch: String = redis::cmd("HGET")
        .arg(env.keys.room_meta("d"))
        .arg("epoch")
        .query_async(&mut conn)
        .await
        .expect("epoch");
    // A tombstone older than every message: only its epoch can skip them
    // (what a deletion leaves for messages appended after its notice).
    let _: () = redis::cmd("SET")
        .arg(env.keys.room_deleted("d"))
        .arg(
            chat_core::tombstone::RoomTombstone {
                at_ms: 0,
                epoch: &epoch,
            }
            .encode(),
        )
        .query_async(&mut conn)
        .await
        .expect("set");
    let (stop, task) = env.worker("w").await;
    env.wait_archived(1, Duration::from_secs(30)).await;
    let d = env
        .messages
        .count_documents(doc! {"room": "d"})
        .await
        .expect("count");
    assert_eq!(d, 0, "the deleted epoch stays out of the archive");
    assert_eq!(env.archived().await, 1, "the other room is archived");
    assert_eq!(env.dead_letters().await, 0, "skipped, not dead-lettered");
    stop.cancel();
    task.await.expect("worker stops");
}
