//! Retention from streams.toml: length, age, TTL, and rooms that expire and
//! come back with a new epoch.

use e2e::*;
use redis::AsyncCommands;
use serde_json::{Value, json};
use std::time::Duration;

fn policy(
    pattern: &str,
    maxlen: u64,
    max_age: Option<Duration>,
    ttl: Duration,
) -> chat_core::config::RoomPolicy {
    chat_core::config::RoomPolicy {
        pattern: pattern.into(),
        retention: chat_core::config::RetentionPolicy {
            maxlen,
            max_age,
            ttl,
            archive_for: None,
            read_receipts: false,
            slow_mode: None,
            join_notices: false,
        },
    }
}

/// Entries per stream node in the tests' Redis (see `small_nodes`).
const NODE: u64 = 10;

/// Small stream nodes so that approximate trimming (`~`, which only removes
/// whole nodes) acts on a few entries: `NODE` entries a node, and no byte
/// limit (0), so where a node ends depends on the entry count alone.
async fn small_nodes(stack: &Stack) {
    let mut r = stack.redis().await;
    for (name, value) in [
        ("stream-node-max-entries", NODE),
        ("stream-node-max-bytes", 0),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut r)
            .await
            .expect("config set");
    }
}

/// The offsets of a room stream's entries, oldest first (ids are `<offset>-<ms>`).
async fn stream_offsets(r: &mut chat_core::redis_conn::Conn, key: &str) -> Vec<u64> {
    let all: redis::streams::StreamRangeReply = r.xrange_all(key).await.expect("xrange");
    all.ids.iter().map(|e| id_part(&e.id, 0)).collect()
}

/// Part `i` of a stream id `<offset>-<ms>`.
fn id_part(id: &str, i: usize) -> u64 {
    id.split('-')
        .nth(i)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("stream id {id:?}"))
}

/// Redis's clock (ms), the one the append script stamps and trims by.
async fn redis_now_ms(r: &mut chat_core::redis_conn::Conn) -> Option<u64> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(r).await.ok()?;
    Some(secs * 1000 + micros / 1000)
}

#[tokio::test]
async fn stream_length_stays_near_maxlen() {
    let stack = Stack::builder()
        .streams(|s| {
            s.rooms
                .push(policy("short:*", 50, None, Duration::from_secs(3600)))
        })
        .start()
        .await;
    small_nodes(&stack).await;
    stack.publish("short:1", 300).await;
    stack.publish("long", 300).await;
    let mut r = stack.redis().await;
    let k = stack.keys();
    let short: u64 = r.xlen(k.room_stream("short:1")).await.expect("xlen");
    // MAXLEN ~ removes whole nodes while at least maxlen entries remain.
    assert!(
        (50..50 + NODE).contains(&short),
        "XLEN {short} not near maxlen 50"
    );
    let long: u64 = r.xlen(k.room_stream("long")).await.expect("xlen");
    assert_eq!(long, 300, "the default policy keeps 10,000");
    // Offsets keep counting after trimming.
    let ack = stack.publish("short:1", 1).await;
    assert_eq!(ack["offset"], 301);
}

#[tokio::test]
async fn old_entries_are_trimmed_by_age() {
    const MAX_AGE: Duration = Duration::from_millis(500);
    // Whole nodes: the first message after this batch opens a node of its own.
    const FIRST: u64 = 4 * NODE;
    let stack = Stack::builder()
        .streams(|s| {
            s.rooms.push(policy(
                "aged:*",
                10_000,
                Some(MAX_AGE),
                Duration::from_secs(3600),
            ))
        })
        .start()
        .await;
    small_nodes(&stack).await;
    let last = stack.publish("aged:1", FIRST as usize).await;
    assert_eq!(last["offset"], FIRST);
    let mut r = stack.redis().await;
    let k = stack.keys();
    let (key, meta) = (k.room_stream("aged:1"), k.room_meta("aged:1"));
    let newest: redis::streams::StreamRangeReply = r
        .xrevrange_count(&key, "+", "-", 1)
        .await
        .expect("xrevrange");
    let newest_ms = id_part(&newest.ids[0].id, 1);

    // Nothing is published now. The append script trims entries older than
    // max_age, checking at most once a second (`agechk` in the meta): wait,
    // on Redis's clock, until the whole batch is older than max_age and the
    // last check a second old, so the next append must trim it all.
    let max_age_ms = MAX_AGE.as_millis() as u64;
    wait_until(
        Duration::from_secs(10),
        "the batch to age and the age check to be due",
        || {
            let (mut r, meta) = (r.clone(), meta.clone());
            async move {
                let now = redis_now_ms(&mut r).await?;
                let checked: Option<u64> = r.hget(&meta, "agechk").await.ok()?;
                (now > newest_ms + max_age_ms && now >= checked.unwrap_or(0) + 1000).then_some(())
            }
        },
    )
    .await;
    let ack = stack.publish("aged:1", 1).await;
    assert_eq!(ack["offset"], FIRST + 1);

    // `MINID ~` removes whole nodes only: of the nodes older than the new
    // message none may stay, so at most the new message's node is left.
    let offsets = stream_offsets(&mut r, &key).await;
    assert!(
        offsets.len() as u64 <= NODE,
        "{} entries left after the age trim, more than a node of {NODE}: {offsets:?}",
        offsets.len()
    );
    assert_eq!(
        offsets.last(),
        Some(&(FIRST + 1)),
        "the new message is kept"
    );
    assert!(
        offsets[0] > FIRST,
        "the aged batch (offsets 1..={FIRST}) is gone: {offsets:?}"
    );
}

#[tokio::test]
async fn the_ttl_is_set_and_an_idle_room_expires_and_returns_with_a_new_epoch() {
    let stack = Stack::builder()
        .streams(|s| {
            s.rooms
                .push(policy("idle:*", 100, None, Duration::from_secs(1)))
        })
        .start()
        .await;
    let mut watcher = stack.connect(0, "watcher").await;
    let joined = watcher.join("idle:1").await;
    let sent = std::time::Instant::now();
    let first = stack.publish("idle:1", 2).await;
    assert_eq!(first["epoch"], joined["epoch"]);
    let mut r = stack.redis().await;
    let k = stack.keys();
    for key in [k.room_stream("idle:1"), k.room_meta("idle:1")] {
        let ttl: i64 = r.pttl(&key).await.expect("pttl");
        // At most the policy's second; or, on a machine slow enough that the
        // second has passed since the publish, already gone (never sooner).
        assert!(
            (1..=1000).contains(&ttl)
                || (ttl == -2 && sent.elapsed() >= Duration::from_millis(990)),
            "{key} has PTTL {ttl} {:?} after the publish",
            sent.elapsed()
        );
    }
    let other: i64 = {
        stack.publish("forever", 1).await;
        r.ttl(k.room_stream("forever")).await.expect("ttl")
    };
    assert!(other > 3600, "default TTL applies elsewhere ({other})");
    let live: Vec<(Value, Value)> = watcher
        .messages(2)
        .await
        .into_iter()
        .map(|m| (m["epoch"].clone(), m["offset"].clone()))
        .collect();
    assert_eq!(
        live,
        [1, 2].map(|o| (first["epoch"].clone(), json!(o))),
        "the watcher got both messages live"
    );

    wait_until(Duration::from_secs(10), "the idle room to expire", || {
        let mut r = r.clone();
        let key = k.room_meta("idle:1");
        async move { (!r.exists::<_, bool>(&key).await.ok()?).then_some(()) }
    })
    .await;
    let again = stack.publish("idle:1", 1).await;
    assert_ne!(
        again["epoch"], first["epoch"],
        "a recreated room has a new epoch"
    );
    assert_eq!(again["offset"], 1);
    // A socket that stayed joined sees the new epoch from its first message.
    let m = watcher.messages(1).await.remove(0);
    assert_eq!(
        (m["epoch"].clone(), m["offset"].clone()),
        (again["epoch"].clone(), json!(1))
    );
}

/// Redis's clock in ms (the script's `now`).
async fn redis_ms(r: &mut chat_core::redis_conn::Conn) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(r).await.expect("TIME");
    s * 1000 + us / 1000
}

#[tokio::test]
async fn a_busy_rooms_ttl_is_refreshed_once_a_second_not_per_message() {
    let stack = Stack::builder()
        .streams(|s| {
            s.rooms
                .push(policy("busy:*", 100, None, Duration::from_secs(100)))
        })
        .start()
        .await;
    let mut r = stack.redis().await;
    let k = stack.keys();
    let (stream, meta) = (k.room_stream("busy:1"), k.room_meta("busy:1"));
    let reader = r.clone();
    let pttl = |key: String| {
        let mut r = reader.clone();
        async move { r.pttl::<_, i64>(&key).await.expect("pttl") }
    };
    stack.publish("busy:1", 1).await;
    let refreshed: u64 = r.hget(&meta, "ttlchk").await.expect("ttlchk");
    assert!(pttl(stream.clone()).await > 90_000);
    // Shortened by hand: a message within the second leaves it so (no
    // refresh per message) ...
    for key in [&stream, &meta] {
        let _: () = r.pexpire(key, 50_000).await.expect("pexpire");
    }
    stack.publish("busy:1", 1).await;
    if redis_ms(&mut r).await < refreshed + 1000 {
        for key in [&stream, &meta] {
            let left = pttl(key.clone()).await;
            assert!(
                (1..=50_000).contains(&left),
                "{key} refreshed within the second ({left} ms)"
            );
        }
    }
    // ... and the first message a second later restores the whole TTL.
    wait_until(Duration::from_secs(10), "a second on Redis's clock", || {
        let mut r = r.clone();
        async move { (redis_ms(&mut r).await >= refreshed + 1000).then_some(()) }
    })
    .await;
    stack.publish("busy:1", 1).await;
    for key in [&stream, &meta] {
        let left = pttl(key.clone()).await;
        assert!(left > 90_000, "{key} refreshed after a second ({left} ms)");
    }
}
