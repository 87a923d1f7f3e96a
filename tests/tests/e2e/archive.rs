//! History across Redis and the archive (MongoDB protocol, nx-27017): a
//! client scrolling back reaches every archived message of a room, in
//! order, without duplicates at the Redis/archive boundary or across an
//! epoch change.

use e2e::{API_KEY, Stack, http};
use mongodb::bson::doc;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Scrolls back from the newest message with `history` frames until `next`
/// is null; returns (epoch, offset) of every message, newest first.
async fn scroll(c: &mut e2e::Client, room: &str) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for h in c.history_pages(room, 100).await {
        let msgs = h["messages"].as_array().expect("messages");
        let offsets: Vec<u64> = msgs
            .iter()
            .map(|m| m["offset"].as_u64().expect("offset"))
            .collect();
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "a page is consecutive and oldest first: {offsets:?}"
        );
        for m in msgs.iter().rev() {
            assert_eq!(m["epoch"], h["epoch"], "a page is one epoch");
            out.push((
                m["epoch"].as_str().expect("epoch").to_owned(),
                m["offset"].as_u64().expect("offset"),
            ));
        }
    }
    out
}

#[tokio::test]
async fn scrolling_back_reaches_every_archived_message_across_an_epoch_change() {
    let stack = Stack::builder()
        .archive()
        .streams(|s| {
            s.rooms.push(chat_core::config::RoomPolicy {
                pattern: "deep:*".into(),
                retention: chat_core::config::RetentionPolicy {
                    maxlen: 100,
                    max_age: None,
                    ttl: Duration::from_secs(3600),
                    archive_for: None,
                    read_receipts: false,
                    slow_mode: None,
                    join_notices: false,
                },
            })
        })
        .start()
        .await;
    let room = "deep:1";
    stack.publish_many(room, 5000, 16).await;
    stack.wait_archived(room, 5000).await;
    let mut r = stack.redis().await;
    let k = stack.keys();
    let kept: u64 = redis::cmd("XLEN")
        .arg(k.room_stream(room))
        .query_async(&mut r)
        .await
        .expect("xlen");
    assert!(kept < 1000, "the stream was trimmed ({kept} kept)");

    let mut c = stack.connect(0, "reader").await;
    let first = scroll(&mut c, room).await;
    let want: Vec<u64> = (1..=5000).rev().collect();
    assert_eq!(
        first.iter().map(|(_, o)| *o).collect::<Vec<_>>(),
        want,
        "every message once, newest first"
    );
    let old_epoch = first[0].0.clone();
    assert!(first.iter().all(|(e, _)| *e == old_epoch));

    // The room expires from Redis and comes back with a new epoch.
    stack.expire_room(room).await;
    stack.publish_many(room, 300, 16).await;
    stack.wait_archived(room, 5300).await;
    let all = scroll(&mut c, room).await;
    assert_eq!(all.len(), 5300, "both epochs");
    let new_epoch = all[0].0.clone();
    assert_ne!(new_epoch, old_epoch);
    let expected: Vec<(String, u64)> = (1..=300)
        .rev()
        .map(|o| (new_epoch.clone(), o))
        .chain((1..=5000).rev().map(|o| (old_epoch.clone(), o)))
        .collect();
    assert_eq!(
        all, expected,
        "the new epoch, then the old one, each in order"
    );
    let unique: HashSet<&(String, u64)> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "no duplicates");

    // The HTTP API pages the same way, with the cursor's epoch.
    let page = stack
        .history_http(room, &format!("limit=5&epoch={old_epoch}&before=3"))
        .await;
    assert_eq!(page["epoch"], json!(old_epoch));
    let offsets: Vec<u64> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets, vec![1, 2]);
    assert_eq!(page["next"], Value::Null, "nothing before the oldest epoch");
}

#[tokio::test]
async fn without_the_archive_next_pages_within_redis() {
    let stack = Stack::builder().start().await;
    stack.publish("plain", 7).await;
    let mut c = stack.connect(0, "reader").await;
    c.send_json(json!({"type": "history", "room": "plain", "limit": 5}))
        .await;
    let h = c.recv_type("history").await;
    assert_eq!(h["messages"].as_array().expect("messages").len(), 5);
    assert_eq!(h["next"]["before"], 3);
    c.send_json(
        json!({"type": "history", "room": "plain", "limit": 5, "before": 3, "epoch": h["epoch"]}),
    )
    .await;
    let h2 = c.recv_type("history").await;
    assert_eq!(h2["messages"].as_array().expect("messages").len(), 2);
    assert_eq!(h2["next"], Value::Null);
    c.send_json(json!({"type": "history", "room": "plain", "epoch": "not an epoch!"}))
        .await;
    let e = c.recv_type("error").await;
    assert_eq!(e["code"], "bad_request");
    let (status, _) = export(&stack, "plain").await;
    assert_eq!(status, 404, "no export without the archive");
    let bad_epoch = http()
        .get(format!(
            "{}/v1/rooms/plain/messages?epoch=a%20b&before=2",
            stack.http(0)
        ))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("get");
    assert_eq!(bad_epoch.status(), 400);
    let not_admin = http()
        .delete(format!("{}/v1/rooms/plain", stack.http(0)))
        .bearer_auth(e2e::token("mallory", &["*"]))
        .send()
        .await
        .expect("delete");
    assert_eq!(
        not_admin.status(),
        401,
        "deleting a room takes an admin key"
    );
    c.send_json(json!({"type": "history", "room": "plain"}))
        .await;
    assert_eq!(
        c.recv_type("history").await["messages"]
            .as_array()
            .map(Vec::len),
        Some(7),
        "the room is still there"
    );
}

async fn export(stack: &Stack, room: &str) -> (u16, Vec<Value>) {
    let r = http()
        .get(format!("{}/v1/rooms/{room}/export", stack.http(0)))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("export");
    let status = r.status().as_u16();
    let body = r.text().await.expect("body");
    let lines = body
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("ndjson line"))
        .collect();
    (status, lines)
}

/// Waits until the archive group has read and acknowledged everything.
async fn archive_idle(stack: &Stack) {
    let mut r = stack.redis().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut idle = true;
        for s in stack.keys().all_shard_streams() {
            let info: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&s)
                .query_async(&mut r)
                .await
                .expect("xinfo");
            idle &= info
                .groups
                .iter()
                .filter(|g| g.name == "archive")
                .all(|g| g.lag == Some(0) && g.pending == 0);
        }
        if idle {
            return;
        }
        assert!(Instant::now() < deadline, "archive never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn deleting_a_room_removes_every_trace_and_the_export_is_the_archive() {
    let stack = Stack::builder().nodes(2).archive().start().await;
    let room = "gone:1";
    let mut a = stack.connect(0, "ann").await;
    let mut b = stack.connect(1, "ben").await;
    a.join(room).await;
    b.join(room).await;
    stack.publish(room, 30).await;
    stack.publish("kept", 5).await;
    for c in [&mut a, &mut b] {
        for i in 0..30 {
            let m = c.recv_type("message").await;
            assert_eq!(m["text"], format!("m{i}"));
        }
    }
    stack.wait_archived(room, 30).await;
    stack.wait_archived("kept", 5).await;

    // The export is exactly the archived room, oldest first.
    let (status, lines) = export(&stack, room).await;
    assert_eq!(status, 200);
    assert_eq!(lines.len(), 30);
    for (i, m) in lines.iter().enumerate() {
        assert_eq!(m["offset"], json!(i + 1));
        assert_eq!(m["text"], format!("m{i}"));
        assert_eq!(m["room"], room);
        assert_eq!(m["user"], "pub");
    }
    let coll = stack.archived().await;
    let archived = coll
        .count_documents(doc! {"room": room})
        .await
        .expect("count");
    assert_eq!(archived, lines.len() as u64);

    let r = http()
        .delete(format!("{}/v1/rooms/{room}", stack.http(1)))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    // 30, or 31 when the worker archived the notice before the tombstone.
    let n = body["archived_messages_deleted"].as_u64().expect("count");
    assert!((30..=31).contains(&n), "{body}");

    // Both sockets are told, in order, and removed from the room.
    for c in [&mut a, &mut b] {
        let m = c.recv_type("message").await;
        assert_eq!(m["kind"], "system");
        assert_eq!(m["offset"], 31);
        let left = c.recv_type("left").await;
        assert_eq!(left["room"], room);
    }
    // Without sending anything, the sockets' readers forget the room: no
    // node keeps a hub (or a subscription) for it.
    for node in &stack.nodes {
        e2e::wait_until(
            Duration::from_secs(5),
            "the deleted room's hubs gone",
            || async { node.state.hubs.rooms().is_empty().then_some(()) },
        )
        .await;
    }
    a.send_json(json!({"type": "send", "room": room, "text": "hi", "client_id": "late"}))
        .await;
    assert_eq!(a.recv_type("error").await["code"], "not_joined");

    // No trace in either tier, and nothing pending comes back.
    archive_idle(&stack).await;
    assert_eq!(
        coll.count_documents(doc! {"room": room})
            .await
            .expect("count"),
        0
    );
    let mut r = stack.redis().await;
    for key in stack.keys().room_keys(room) {
        let n: u64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut r)
            .await
            .expect("exists");
        assert_eq!(n, 0, "{key} survived the deletion");
    }
    let (status, lines) = export(&stack, room).await;
    assert_eq!((status, lines.len()), (200, 0));
    // Other rooms are untouched.
    assert_eq!(export(&stack, "kept").await.1.len(), 5);
}
