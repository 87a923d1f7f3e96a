//! Promises of the docs that no other test exercised: the recovery limit,
//! the dedup window, the liveness close, the dead-letter cap, a deleted room
//! joined again, and an expired room's history in the archive.

use e2e::*;
use redis::AsyncCommands;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn a_join_missing_more_than_chat_max_recover_is_not_recovered() {
    let stack = Stack::builder().env("CHAT_MAX_RECOVER", "5").start().await;
    let ack = stack.publish("deep", 10).await;
    let epoch = ack["epoch"].clone();
    let mut c = stack.connect(0, "late").await;
    // Offsets 3..=10 are eight missed, over the limit of five.
    let j = c.join_since("deep", &epoch, 2).await;
    assert_eq!(
        (j["recovered"].clone(), j["offset"].clone()),
        (json!(false), json!(10))
    );
    // Offsets 6..=10 are five: recovered, every one in order.
    let mut d = stack.connect(0, "later").await;
    let j = d.join_since("deep", &epoch, 5).await;
    assert_eq!(j["recovered"], true, "{j}");
    let offsets: Vec<u64> = d
        .messages(5)
        .await
        .iter()
        .filter_map(|m| m["offset"].as_u64())
        .collect();
    assert_eq!(offsets, vec![6, 7, 8, 9, 10]);
}

#[tokio::test]
async fn a_client_id_is_deduplicated_for_the_window_and_stored_again_after() {
    let window = Duration::from_secs(2);
    let stack = Stack::builder()
        .streams(|s| s.dedup.window = window)
        .start()
        .await;
    let mut c = stack.connect(0, "dee").await;
    c.join("dup").await;
    let first = c.send("dup", "once", "c1").await;
    let again = c.send("dup", "once", "c1").await;
    assert_eq!(
        (again["duplicate"].clone(), again["offset"].clone()),
        (json!(true), first["offset"].clone())
    );
    // The window is the key's life: no longer than configured.
    let key = stack.keys().room_dedup("dup", "dee", "c1");
    let mut r = stack.redis().await;
    let ttl: i64 = r.pttl(&key).await.expect("pttl");
    assert!(
        ttl > 0 && ttl <= window.as_millis() as i64,
        "dedup key lives {ttl} ms"
    );
    wait_until(Duration::from_secs(10), "the dedup window to end", || {
        let (mut r, key) = (r.clone(), key.clone());
        async move { (!r.exists::<_, bool>(&key).await.ok()?).then_some(()) }
    })
    .await;
    let after = c.send("dup", "once", "c1").await;
    assert_eq!(after["duplicate"], false, "{after}");
    assert_eq!(after["offset"], 2, "stored again after the window");
}

#[tokio::test]
async fn a_socket_that_answers_no_ping_is_closed_4008() {
    let stack = Stack::builder()
        .env("CHAT_PING_INTERVAL", "300ms")
        .start()
        .await;
    let mut silent = stack.connect(0, "mute").await;
    let mut alive = stack.connect(0, "chatty").await;
    // `silent` reads nothing, so its client never sends a pong; `alive`
    // keeps reading (its client answers pings) until the node has let the
    // silent one go.
    let state = stack.nodes[0].state.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while state.sockets.len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the silent socket still open"
        );
        alive.ping(json!("still")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, _) = silent.until_closed().await;
    assert_eq!(code, Some(4008));
    alive.ping(json!("after")).await;
}

#[tokio::test]
async fn the_dead_letter_stream_is_capped() {
    const CAP: u64 = 20;
    const NODE: u64 = 10;
    let stack = Stack::builder()
        .streams(|s| s.fanout.dead_letter_maxlen = CAP)
        .start()
        .await;
    let mut r = stack.redis().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-entries")
        .arg(NODE)
        .query_async(&mut r)
        .await
        .expect("config set");
    let shard = stack.keys().shard_stream(0);
    for i in 0..200 {
        let _: String = r
            .xadd(&shard, "*", &[("r", "junk"), ("n", &i.to_string())])
            .await
            .expect("xadd junk");
    }
    wait_until(
        Duration::from_secs(20),
        "every junk entry settled",
        || async {
            (stack.pending("fanout").await == 0 && stack.lag("fanout").await == 0).then_some(())
        },
    )
    .await;
    let dlq = stack.keys().dead_letter("fanout");
    let len: u64 = r.xlen(&dlq).await.expect("xlen");
    // `MAXLEN ~` trims whole nodes: at least the cap, at most a node more.
    assert!(
        (CAP..=CAP + NODE).contains(&len),
        "{len} dead letters kept for a cap of {CAP}"
    );
    let newest: redis::streams::StreamRangeReply = r
        .xrevrange_count(&dlq, "+", "-", 1)
        .await
        .expect("xrevrange");
    let n: String = newest.ids[0].get("f.n").expect("the entry's own field");
    assert_eq!(n, "199", "the newest are the ones kept");
}

#[tokio::test]
async fn a_deleted_room_joined_again_has_a_new_epoch_and_no_summary() {
    let stack = Stack::builder().summarizers(1).start().await;
    let room = "again";
    let mut c = stack.connect(0, "ann").await;
    let old = c.join(room).await["epoch"].clone();
    for i in 0..3 {
        c.send(room, &format!("line {i}"), &format!("l{i}")).await;
    }
    let jobs = submit_summaries(&stack, json!({"rooms": [room]})).await;
    let job = jobs[0]["job_id"].as_str().expect("job id").to_owned();
    let s = summary_finished(&stack, &job, Duration::from_secs(30)).await;
    assert_eq!(s["status"], "done", "{s}");
    let summary_url = format!("{}/v1/rooms/{room}/summary", stack.http(0));
    let status = |url: String| async move {
        http()
            .get(url)
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("summary")
            .status()
            .as_u16()
    };
    assert_eq!(status(summary_url.clone()).await, 200);

    let r = http()
        .delete(format!("{}/v1/rooms/{room}", stack.http(0)))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 200);
    // Its messages, the summary and the deletion notice come first.
    while c.recv().await["type"] != "left" {}
    assert_eq!(
        status(summary_url).await,
        404,
        "the summary went with the room"
    );
    let j = c.join(room).await;
    assert_ne!(j["epoch"], old, "a new epoch");
    assert_eq!(j["offset"], 0, "{j}");
    let h = stack.history_http(room, "limit=10").await;
    assert_eq!(h["messages"], json!([]), "nothing of the old room: {h}");
}

#[tokio::test]
async fn an_expired_rooms_history_pages_into_the_archive() {
    let stack = Stack::builder()
        .archive()
        .streams(|s| {
            s.rooms.push(chat_core::config::RoomPolicy {
                pattern: "brief:*".into(),
                retention: chat_core::config::RetentionPolicy {
                    maxlen: 1000,
                    max_age: None,
                    ttl: Duration::from_secs(1),
                    archive_for: None,
                    read_receipts: false,
                    slow_mode: None,
                    join_notices: false,
                },
            })
        })
        .start()
        .await;
    let room = "brief:1";
    let epoch = stack.publish(room, 12).await["epoch"].clone();
    stack.wait_archived(room, 12).await;
    // Redis lets the idle room go on its own TTL.
    let meta = stack.keys().room_meta(room);
    let r = stack.redis().await;
    wait_until(Duration::from_secs(15), "the room to expire", || {
        let (mut r, meta) = (r.clone(), meta.clone());
        async move { (!r.exists::<_, bool>(&meta).await.ok()?).then_some(()) }
    })
    .await;
    let first = stack.history_http(room, "limit=5").await;
    assert_eq!(
        (first["epoch"].clone(), first["messages"].clone()),
        (json!(""), json!([])),
        "{first}"
    );
    let mut next = first["next"].clone();
    assert_eq!(next["epoch"], epoch, "{first}");
    let mut offsets = Vec::new();
    while next != Value::Null {
        let page = stack
            .history_http(
                room,
                &format!(
                    "limit=5&epoch={}&before={}",
                    next["epoch"].as_str().expect("epoch"),
                    next["before"]
                ),
            )
            .await;
        let page_offsets: Vec<u64> = page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["offset"].as_u64().expect("offset"))
            .collect();
        assert!(
            !page_offsets.is_empty(),
            "a page with a next is not empty: {page}"
        );
        offsets.splice(0..0, page_offsets);
        next = page["next"].clone();
    }
    assert_eq!(offsets, (1..=12).collect::<Vec<_>>());
}
