//! The fanout worker as a real process under signals, against a real Redis:
//! SIGTERM finishes and acknowledges the batch in hand, then exits; a
//! worker SIGKILLed while it holds pending entries leaves them to the
//! surviving worker, which takes them over. Nothing
//! written is lost either way.

use chat_core::config::StreamsConfig;
use chat_core::keys::Keys;
use chat_core::redis_conn::{self, Conn};
use chat_devkit::redis_server::RedisServer;
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROOMS: usize = 10;
const MESSAGES: usize = 1500;

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker(url: &str, streams: &std::path::Path, name: &str, metrics: &str) -> Worker {
    Worker(
        Command::new(env!("CARGO_BIN_EXE_fanout-worker"))
            .env("CHAT_REDIS_URL", url)
            .env("CHAT_METRICS_LISTEN", metrics)
            .env("CHAT_STREAMS", streams)
            .env("CHAT_FANOUT_CONSUMER", name)
            .env("CHAT_FANOUT_BLOCK", "200ms")
            .env("CHAT_SHUTDOWN_GRACE", "5s")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("fanout-worker starts"),
    )
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig}");
}

async fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "still running after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Freezes `b` (SIGSTOP) until it holds pending entries: a read it had
/// blocked in is still served by Redis, into its pending list. Each try
/// appends a few messages of its own (to `p0`, numbered from `next`), so
/// there is something to read even after the writer is done; if `b` was
/// between reads, it runs again and is frozen anew. Returns how many it
/// holds and how many messages were added.
async fn freeze_holding(
    b: &Child,
    conn: &mut Conn,
    keys: &Keys,
    streams: &StreamsConfig,
    next: usize,
) -> (u64, usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut added = 0;
    loop {
        signal(b, "STOP");
        for _ in 0..3 {
            chat_devkit::testing::append(conn, keys, streams, "p0", next + added).await;
            added += 1;
        }
        let frozen = Instant::now();
        while frozen.elapsed() < Duration::from_secs(1) {
            let held = pending_of(conn, keys, Some("b")).await;
            if held > 0 {
                return (held, added);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        signal(b, "CONT");
        assert!(Instant::now() < deadline, "b never held pending entries");
        // Long enough for b to block in a read again (its block is 200 ms).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pending_of(conn: &mut Conn, keys: &Keys, consumer: Option<&str>) -> u64 {
    let mut total = 0;
    for s in keys.all_shard_streams() {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&s).arg("fanout").arg("-").arg("+").arg(100_000);
        if let Some(c) = consumer {
            cmd.arg(c);
        }
        let rows: Vec<redis::Value> = cmd.query_async(conn).await.expect("xpending");
        total += rows.len() as u64;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_acks_the_batch_in_hand_and_sigkilled_work_is_taken_over() {
    let redis = RedisServer::start().expect("redis-server");
    signals(&redis.url()).await;
}

/// The same on a Redis Cluster, where each shard has its own reader task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_on_a_redis_cluster() {
    let cluster = chat_devkit::redis_server::RedisCluster::start(3).expect("cluster");
    signals(&cluster.url()).await;
}

async fn signals(url: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let streams_file = dir.path().join("streams.toml");
    std::fs::write(&streams_file, "[fanout]\nshards = 4\nclaim_idle = \"1s\"\n").expect("write");
    let streams = StreamsConfig::load(&streams_file).expect("streams");
    let keys = Keys::new("chat", streams.fanout.shards);
    let mut conn = redis_conn::manager(url).await.expect("redis");

    // Every live publish is recorded as (room, offset).
    let seen: Arc<Mutex<HashSet<(String, u64)>>> = Arc::default();
    let record = {
        let (seen, keys) = (seen.clone(), keys.clone());
        move |info: redis::PushInfo| {
            if let [
                redis::Value::BulkString(ch),
                redis::Value::BulkString(payload),
            ] = info.data.as_slice()
                && let Some(room) = keys.room_of_channel(&String::from_utf8_lossy(ch))
                && let Some(h) = payload.split(|b| *b == b'\n').next()
                && let Some(chat_core::live::Live::Stored(h)) = chat_core::live::parse(h)
            {
                let offset = h.offset;
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((room.to_owned(), offset));
            }
            Ok::<(), std::convert::Infallible>(())
        }
    };
    let mut sub = redis_conn::subscriber(url, record)
        .await
        .expect("subscriber");
    for r in 0..ROOMS {
        sub.subscribe_room(&keys.room_channel(&format!("p{r}")))
            .await
            .expect("subscribe");
    }

    let listen = |_| {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        probe.local_addr().expect("addr").to_string()
    };
    let [ma, mb, mc]: [String; 3] = std::array::from_fn(listen);
    let mut a = spawn_worker(url, &streams_file, "a", &ma);
    let mut b = spawn_worker(url, &streams_file, "b", &mb);
    let c = spawn_worker(url, &streams_file, "c", &mc);

    // Messages through the real append script, at a steady pace (~1.5 s).
    let writer = tokio::spawn(chat_devkit::testing::append_many(
        conn.clone(),
        keys.clone(),
        streams.clone(),
        "p",
        ROOMS,
        MESSAGES,
        10,
        Duration::from_millis(10),
    ));

    // The workers are busy before the first signal.
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap_or_else(|p| p.into_inner()).len() < 200 {
        assert!(Instant::now() < deadline, "workers never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(&a.0, "TERM");
    let status = wait_exit(&mut a.0, Duration::from_secs(6)).await;
    assert!(status.success(), "a exited {status}");
    assert_eq!(
        pending_of(&mut conn, &keys, Some("a")).await,
        0,
        "a acknowledged what it had read before exiting"
    );

    // b is killed holding entries it read and never acknowledged.
    writer.await.expect("writer");
    let (held, added) = freeze_holding(&b.0, &mut conn, &keys, &streams, MESSAGES).await;
    let total = MESSAGES + added;
    signal(&b.0, "KILL");
    let _ = wait_exit(&mut b.0, Duration::from_secs(5)).await;
    assert!(held > 0);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = seen.lock().unwrap_or_else(|p| p.into_inner()).len();
        if n == total && pending_of(&mut conn, &keys, None).await == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of {total} published; pending {}",
            pending_of(&mut conn, &keys, None).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // c serves its own counters at its CHAT_METRICS_LISTEN: what it
    // published, its share and the work it took over from b.
    let text = reqwest::get(format!("http://{mc}/metrics"))
        .await
        .expect("scrape c")
        .text()
        .await
        .expect("text");
    let published: f64 = text
        .lines()
        .filter(|l| l.starts_with("chat_fanout_published_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(published > 0.0, "c published nothing: {text}");
    drop(c);
}
