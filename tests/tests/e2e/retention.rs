//! Retention from streams.toml: length, age, TTL, and rooms that expire and
//! come back with a new epoch.

use e2e::*;
use redis::AsyncCommands;
use serde_json::json;
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
        },
    }
}

/// Small stream nodes so that approximate trimming (`~`) acts on a few entries.
async fn small_nodes(stack: &Stack) {
    let mut r = stack.redis().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-entries")
        .arg(10)
        .query_async(&mut r)
        .await
        .expect("config set");
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
    assert!(
        (50..=60).contains(&short),
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
    let stack = Stack::builder()
        .streams(|s| {
            s.rooms.push(policy(
                "aged:*",
                10_000,
                Some(Duration::from_millis(500)),
                Duration::from_secs(3600),
            ))
        })
        .start()
        .await;
    small_nodes(&stack).await;
    stack.publish("aged:1", 40).await;
    let mut r = stack.redis().await;
    let key = stack.keys().room_stream("aged:1");
    // Entries age past max_age; the next appends trim them (checked at most once a second).
    let len = wait_until(Duration::from_secs(10), "old entries trimmed", || {
        let mut r = r.clone();
        let key = key.clone();
        let stack = &stack;
        async move {
            stack.publish("aged:1", 1).await;
            let len: u64 = r.xlen(&key).await.ok()?;
            (len < 20).then_some(len)
        }
    })
    .await;
    assert!(len >= 1);
    let first: redis::streams::StreamRangeReply =
        r.xrange_count(&key, "-", "+", 1).await.expect("xrange");
    let first_offset: u64 = first.ids[0]
        .id
        .split('-')
        .next()
        .and_then(|o| o.parse().ok())
        .expect("offset");
    assert!(
        first_offset > 30,
        "the oldest entries went first (first offset {first_offset})"
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
    let first = stack.publish("idle:1", 2).await;
    assert_eq!(first["epoch"], joined["epoch"]);
    let mut r = stack.redis().await;
    let k = stack.keys();
    for key in [k.room_stream("idle:1"), k.room_meta("idle:1")] {
        let ttl: i64 = r.pttl(&key).await.expect("pttl");
        assert!((1..=1000).contains(&ttl), "{key} has PTTL {ttl}");
    }
    let other: i64 = {
        stack.publish("forever", 1).await;
        r.ttl(k.room_stream("forever")).await.expect("ttl")
    };
    assert!(other > 3600, "default TTL applies elsewhere ({other})");
    assert_eq!(watcher.messages(2).await.len(), 2);

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
