//! Conversation events (docs/protocol.md, "Conversation events"): edits,
//! deletes, reactions and replies travel the room's offsets like messages,
//! so every member sees them once and in order, recovers them with `since`,
//! and history shows messages as they are now.

use e2e::*;
use serde_json::{Value, json};

/// The fields of a frame that say what it is, for comparing sequences.
fn shape(m: &Value) -> Value {
    json!({
        "offset": m["offset"], "kind": m["kind"], "user": m["user"], "text": m["text"],
        "target": m["target"], "reply_to": m["reply_to"], "emoji": m["emoji"],
        "removed": m["removed"], "deleted": m["deleted"],
    })
}

fn act(ty: &str, room: &str, offset: u64, extra: Value) -> Value {
    let mut f = json!({"type": ty, "room": room, "offset": offset});
    for (k, v) in extra.as_object().expect("an object") {
        f[k] = v.clone();
    }
    f
}

#[tokio::test]
async fn edits_deletes_reactions_and_replies_reach_every_member_once_in_order() {
    let stack = Stack::builder().nodes(2).start().await;
    let mut alice = stack.connect(0, "alice").await;
    let mut bob = stack.connect(1, "bob").await;
    alice.join("talk").await;
    bob.join("talk").await;

    let ack = alice.send("talk", "hello", "a1").await;
    assert_eq!(ack["offset"], 1);
    let reply = bob
        .request(json!({"type": "send", "room": "talk", "text": "hi back", "client_id": "b1", "reply_to": 1}))
        .await;
    assert_eq!(
        (reply["type"].as_str(), reply["offset"].as_u64()),
        (Some("ack"), Some(2)),
        "{reply}"
    );
    let edit = alice
        .request(act(
            "edit",
            "talk",
            1,
            json!({"text": "hello, world", "client_id": "a2"}),
        ))
        .await;
    assert_eq!(edit["offset"], 3, "{edit}");
    // A retried edit is the same event.
    let again = alice
        .request(act(
            "edit",
            "talk",
            1,
            json!({"text": "hello, world", "client_id": "a2"}),
        ))
        .await;
    assert_eq!(
        (again["offset"].as_u64(), again["duplicate"].as_bool()),
        (Some(3), Some(true))
    );
    let r1 = bob
        .request(act(
            "react",
            "talk",
            1,
            json!({"emoji": "👍", "client_id": "b2"}),
        ))
        .await;
    assert_eq!(r1["offset"], 4, "{r1}");
    // A reaction already there stores nothing.
    let same = bob
        .request(act("react", "talk", 1, json!({"emoji": "👍"})))
        .await;
    assert_eq!(
        (same["offset"].as_u64(), same["duplicate"].as_bool()),
        (Some(0), Some(true)),
        "{same}"
    );
    let r2 = alice
        .request(act("react", "talk", 1, json!({"emoji": "👍"})))
        .await;
    assert_eq!(r2["offset"], 5, "{r2}");
    let r3 = bob
        .request(act(
            "react",
            "talk",
            1,
            json!({"emoji": "👍", "remove": true}),
        ))
        .await;
    assert_eq!(r3["offset"], 6, "{r3}");
    // Only the author edits; only the author (or a moderator) deletes.
    let e = bob
        .request(act("edit", "talk", 1, json!({"text": "mine now"})))
        .await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{e}"
    );
    let e = bob.request(act("delete", "talk", 1, json!({}))).await;
    assert_eq!(e["code"], "forbidden", "{e}");
    // Events are not messages to act on, and offsets must exist.
    let e = bob
        .request(act("react", "talk", 3, json!({"emoji": "x"})))
        .await;
    assert_eq!(e["code"], "bad_request", "{e}");
    let e = bob
        .request(act("edit", "talk", 99, json!({"text": "x"})))
        .await;
    assert_eq!(e["code"], "not_found", "{e}");
    let e = bob
        .request(act(
            "edit",
            "talk",
            2,
            json!({"text": "x", "epoch": "not-this-one"}),
        ))
        .await;
    assert_eq!(e["code"], "not_found", "{e}");
    let e = bob
        .request(json!({"type": "send", "room": "talk", "text": "to nothing", "client_id": "b9", "reply_to": 42}))
        .await;
    assert_eq!(e["code"], "not_found", "{e}");

    alice.send("talk", "a secret", "a3").await;
    let del = alice
        .request(act("delete", "talk", 7, json!({"client_id": "a4"})))
        .await;
    assert_eq!(del["offset"], 8, "{del}");
    let e = alice
        .request(act("edit", "talk", 7, json!({"text": "back"})))
        .await;
    assert_eq!(
        e["code"], "not_found",
        "a deleted message cannot be edited: {e}"
    );

    let want = vec![
        json!({"offset": 1, "kind": "user", "user": "alice", "text": "hello", "target": null, "reply_to": null, "emoji": null, "removed": null, "deleted": null}),
        json!({"offset": 2, "kind": "user", "user": "bob", "text": "hi back", "target": null, "reply_to": 1, "emoji": null, "removed": null, "deleted": null}),
        json!({"offset": 3, "kind": "edit", "user": "alice", "text": "hello, world", "target": 1, "reply_to": null, "emoji": null, "removed": null, "deleted": null}),
        json!({"offset": 4, "kind": "reaction", "user": "bob", "text": "", "target": 1, "reply_to": null, "emoji": "👍", "removed": null, "deleted": null}),
        json!({"offset": 5, "kind": "reaction", "user": "alice", "text": "", "target": 1, "reply_to": null, "emoji": "👍", "removed": null, "deleted": null}),
        json!({"offset": 6, "kind": "reaction", "user": "bob", "text": "", "target": 1, "reply_to": null, "emoji": "👍", "removed": true, "deleted": null}),
        json!({"offset": 7, "kind": "user", "user": "alice", "text": "a secret", "target": null, "reply_to": null, "emoji": null, "removed": null, "deleted": null}),
        json!({"offset": 8, "kind": "delete", "user": "alice", "text": "", "target": 7, "reply_to": null, "emoji": null, "removed": null, "deleted": null}),
    ];
    for c in [&mut alice, &mut bob] {
        let got: Vec<Value> = c.messages(8).await.iter().map(shape).collect();
        assert_eq!(got, want);
    }

    // History shows the room as it is now: the edit folded in, reactions
    // counted (with "did I react"), the reply counted, the deleted message
    // a tombstone without text; the events keep their offsets.
    let h = bob
        .request(json!({"type": "history", "room": "talk"}))
        .await;
    let ms = h["messages"].as_array().expect("messages");
    let offsets: Vec<u64> = ms.iter().filter_map(|m| m["offset"].as_u64()).collect();
    assert_eq!(offsets, (1..=8).collect::<Vec<_>>(), "{h}");
    assert_eq!(ms[0]["text"], "hello, world");
    assert!(ms[0]["edited_at"].as_u64().is_some(), "{}", ms[0]);
    assert_eq!(
        ms[0]["reactions"],
        json!([{"emoji": "👍", "count": 1, "me": false}])
    );
    assert_eq!(ms[0]["reply_count"], 1);
    assert_eq!(
        (
            ms[6]["deleted"].as_bool(),
            ms[6]["text"].as_str(),
            ms[6]["user"].as_str()
        ),
        (Some(true), Some(""), Some("alice"))
    );
    let h = alice
        .request(json!({"type": "history", "room": "talk", "limit": 3, "before": 3}))
        .await;
    let ms = h["messages"].as_array().expect("messages");
    assert_eq!(ms.len(), 2, "{h}");
    assert_eq!(
        ms[0]["reactions"],
        json!([{"emoji": "👍", "count": 1, "me": true}])
    );

    // One thread's history.
    let t = alice
        .request(json!({"type": "history", "room": "talk", "thread": 1}))
        .await;
    let replies: Vec<Value> = t["messages"]
        .as_array()
        .expect("replies")
        .iter()
        .map(shape)
        .collect();
    assert_eq!(replies, vec![want[1].clone()], "{t}");
    assert_eq!(t["next"], Value::Null);
}

#[tokio::test]
async fn a_member_back_with_since_recovers_the_changes_it_missed() {
    let stack = Stack::builder().nodes(2).start().await;
    let mut alice = stack.connect(0, "alice").await;
    alice.join("back").await;
    alice.send("back", "first", "a1").await;
    let mut bob = stack.connect(1, "bob").await;
    let joined = bob.join("back").await;
    let epoch = joined["epoch"].clone();
    bob.close().await;

    alice.send("back", "oops, a password", "a2").await;
    alice
        .request(act("edit", "back", 1, json!({"text": "first!"})))
        .await;
    alice.request(act("delete", "back", 2, json!({}))).await;
    alice
        .request(act("react", "back", 1, json!({"emoji": "🎉"})))
        .await;

    let mut bob = stack.connect(1, "bob").await;
    let j = bob.join_since("back", &epoch, 1).await;
    assert_eq!(
        j["recovered"], true,
        "a deleted message does not break recovery: {j}"
    );
    let got: Vec<Value> = bob.messages(4).await.iter().map(shape).collect();
    assert_eq!(
        got.iter()
            .map(|m| (m["offset"].as_u64(), m["kind"].as_str().map(str::to_owned)))
            .collect::<Vec<_>>(),
        vec![
            (Some(2), Some("user".into())),
            (Some(3), Some("edit".into())),
            (Some(4), Some("delete".into())),
            (Some(5), Some("reaction".into()))
        ]
    );
    assert_eq!(
        (got[0]["deleted"].as_bool(), got[0]["text"].as_str()),
        (Some(true), Some("")),
        "the tombstone stands in: {}",
        got[0]
    );
    // Live ones follow with no gap.
    alice.send("back", "next", "a3").await;
    assert_eq!(bob.offsets(1).await, vec![6]);

    // Recovering from just before a deleted message works too.
    let mut carol = stack.connect(0, "carol").await;
    let j = carol.join_since("back", &epoch, 2).await;
    assert_eq!(j["recovered"], true, "{j}");
    assert_eq!(carol.offsets(4).await, vec![3, 4, 5, 6]);
}

#[tokio::test]
async fn the_admin_api_edits_deletes_reacts_and_reads_threads() {
    let stack = Stack::builder().start().await;
    let mut watcher = stack.connect(0, "watcher").await;
    watcher.join("api").await;
    let base = format!("{}/v1/rooms/api/messages", stack.http(0));
    let http = http();
    stack.say("api", "bot", "status: green").await;
    let r = http
        .post(&base)
        .bearer_auth(API_KEY)
        .json(&json!({"text": "details", "user": "bot", "reply_to": 1}))
        .send()
        .await
        .expect("reply");
    assert_eq!(r.status(), 200);
    let r = http
        .patch(format!("{base}/1"))
        .bearer_auth(API_KEY)
        .json(&json!({"user": "someone-else", "text": "status: red"}))
        .send()
        .await
        .expect("edit");
    assert_eq!(r.status(), 403, "only the author edits");
    let r = http
        .patch(format!("{base}/1"))
        .bearer_auth(API_KEY)
        .json(&json!({"user": "bot", "text": "status: amber", "client_id": "e1"}))
        .send()
        .await
        .expect("edit");
    assert_eq!(r.status(), 200);
    let ack: Value = r.json().await.expect("ack");
    assert_eq!(ack["offset"], 3);
    let r = http
        .post(format!("{base}/1/reactions"))
        .bearer_auth(API_KEY)
        .json(&json!({"user": "ops", "emoji": "👀"}))
        .send()
        .await
        .expect("react");
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{base}/1/reactions"))
        .bearer_auth(API_KEY)
        .json(&json!({"user": "ops", "emoji": "has space"}))
        .send()
        .await
        .expect("react");
    assert_eq!(r.status(), 400);
    // The admin API deletes anyone's message.
    let r = http
        .delete(format!("{base}/2"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 200);
    let r = http
        .delete(format!("{base}/2"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 404, "already deleted");
    let kinds: Vec<String> = watcher
        .messages(5)
        .await
        .iter()
        .map(|m| m["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(kinds, ["user", "user", "edit", "reaction", "delete"]);

    let page = stack.history_http("api", "").await;
    let first = &page["messages"][0];
    assert_eq!(first["text"], "status: amber");
    assert_eq!(first["reply_count"], 1);
    assert_eq!(
        first["reactions"],
        json!([{"emoji": "👀", "count": 1, "me": false}])
    );
    let thread = stack.history_http("api", "thread=1").await;
    let replies = thread["messages"].as_array().expect("replies");
    assert_eq!(replies.len(), 1, "{thread}");
    assert_eq!(
        (
            replies[0]["deleted"].as_bool(),
            replies[0]["reply_to"].as_u64()
        ),
        (Some(true), Some(1))
    );
}

#[tokio::test]
async fn a_delete_takes_the_text_out_of_redis_and_the_archive() {
    let stack = Stack::builder().archive().start().await;
    let mut alice = stack.connect(0, "alice").await;
    alice.join("priv").await;
    alice.send("priv", "my number is 555-0199", "a1").await;
    alice.send("priv", "and nothing else", "a2").await;
    alice
        .request(act(
            "edit",
            "priv",
            1,
            json!({"text": "my number is 555-0142"}),
        ))
        .await;
    stack.wait_archived("priv", 3).await;
    assert!(
        !stack.keys_holding("555-01").await.is_empty(),
        "the check can see the text"
    );
    let del = alice.request(act("delete", "priv", 1, json!({}))).await;
    assert_eq!(del["offset"], 4, "{del}");
    stack.wait_archived("priv", 4).await;

    // Redis: the room stream, the shard streams and the state hold no trace.
    assert_eq!(stack.keys_holding("555-01").await, Vec::<String>::new());
    // The archive: the message and its edit keep their places, without text.
    let coll = stack.archived().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let left = coll
            .count_documents(mongodb::bson::doc! {"room": "priv", "text": {"$regex": "555"}})
            .await
            .expect("count");
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} archived documents keep the text"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Once Redis no longer has the room, history comes from the archive,
    // with the tombstones in place.
    stack.expire_room("priv").await;
    let page = stack.history_http("priv", "").await;
    let mut next = page["next"].clone();
    let mut messages = page["messages"].as_array().cloned().unwrap_or_default();
    while !next.is_null() && messages.is_empty() {
        let p = stack
            .history_http(
                "priv",
                &format!(
                    "epoch={}&before={}",
                    next["epoch"].as_str().unwrap_or_default(),
                    next["before"]
                ),
            )
            .await;
        messages = p["messages"].as_array().cloned().unwrap_or_default();
        next = p["next"].clone();
    }
    let shapes: Vec<(u64, String, bool, String)> = messages
        .iter()
        .map(|m| {
            (
                m["offset"].as_u64().unwrap_or(0),
                m["kind"].as_str().unwrap_or_default().to_owned(),
                m["deleted"].as_bool().unwrap_or(false),
                m["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        shapes,
        vec![
            (1, "user".into(), true, String::new()),
            (2, "user".into(), false, "and nothing else".into()),
            (3, "edit".into(), true, String::new()),
            (4, "delete".into(), false, String::new()),
        ]
    );
}

/// Every offset 1..=n once, in order, each of the kind its `client_id`
/// says (`s-` send, `e-` edit, `r-` reaction, `d-` delete).
fn assert_exact_kinds(who: &str, msgs: &[Value], n: u64) {
    let offsets: Vec<u64> = msgs.iter().filter_map(|m| m["offset"].as_u64()).collect();
    assert_eq!(
        offsets,
        (1..=n).collect::<Vec<_>>(),
        "{who}: not every entry once in order"
    );
    for m in msgs {
        let want = match m["client_id"].as_str().and_then(|c| c.get(..2)) {
            Some("e-") => "edit",
            Some("r-") => "reaction",
            Some("d-") => "delete",
            _ => "user",
        };
        assert_eq!(m["kind"], want, "{who}: {m}");
    }
}

#[tokio::test]
async fn events_mixed_with_messages_arrive_exactly_once_in_order_across_a_worker_kill_and_a_reconnect()
 {
    let mut stack = Stack::builder()
        .nodes(2)
        .workers(2)
        .env("CHAT_RATE_PER_SEC", "100000")
        .env("CHAT_RATE_BURST", "100000")
        .start()
        .await;
    let room = "mixed";
    let mut a = stack.connect(0, "ann").await;
    let mut b = stack.connect(1, "ben").await;
    a.join(room).await;
    b.join(room).await;
    // Each writer's own messages, to edit and delete: ann 1..=10, ben 11..=20.
    for i in 0..10 {
        a.send(room, &format!("ann {i}"), &format!("s-ann-seed-{i}"))
            .await;
    }
    for i in 0..10 {
        b.send(room, &format!("ben {i}"), &format!("s-ben-seed-{i}"))
            .await;
    }
    let mut reader = stack.connect(1, "reader").await;
    let joined = reader.join(room).await;
    assert_eq!(joined["offset"], 20);
    let epoch = joined["epoch"].clone();
    a.messages(20).await;
    b.messages(20).await;

    let per = 120;
    let frames = |who: &str, own: u64| -> Vec<Value> {
        (0..per)
            .map(|i| {
                let target = own + (i as u64 % 10);
                match i % 4 {
                    0 => json!({"type": "send", "room": room, "text": format!("{who} m{i}"), "client_id": format!("s-{who}-{i}")}),
                    1 => json!({"type": "edit", "room": room, "offset": target, "text": format!("{who} edit {i}"), "client_id": format!("e-{who}-{i}")}),
                    2 => json!({"type": "react", "room": room, "offset": 21 - target, "emoji": format!("{who}{i}"), "client_id": format!("r-{who}-{i}")}),
                    _ => json!({"type": "send", "room": room, "text": format!("{who} re {i}"), "client_id": format!("s-{who}-re-{i}"), "reply_to": 21 - target}),
                }
            })
            .collect()
    };
    let total = 2 * per;
    let sa = tokio::spawn(a.pipeline(frames("ann", 1), total));
    let sb = tokio::spawn(b.pipeline(frames("ben", 11), total));
    // Mid-stream: a fanout worker dies, and the reader reconnects.
    let early = reader.messages(20).await;
    stack.kill_worker(0);
    let last = early
        .last()
        .and_then(|m| m["offset"].as_u64())
        .expect("an offset");
    reader.close().await;
    let mut reader = stack.connect(0, "reader").await;
    let j = reader.join_since(room, &epoch, last).await;
    assert_eq!(j["recovered"], true, "{j}");
    let rest = reader.messages(total - 20).await;

    let mut acked = std::collections::HashSet::new();
    for (who, h) in [("ann", sa), ("ben", sb)] {
        let (acks, msgs) = h.await.expect("writer");
        assert!(
            acks.iter().all(|a| a["duplicate"] == false
                && a["offset"].as_u64().is_some_and(|o| acked.insert(o))),
            "{who}: {acks:?}"
        );
        let mut all = msgs;
        all.retain(|m| m["offset"].as_u64().is_some_and(|o| o > 20));
        let shifted: Vec<Value> = all
            .iter()
            .map(|m| {
                let mut m = m.clone();
                m["offset"] = json!(m["offset"].as_u64().unwrap_or(0) - 20);
                m
            })
            .collect();
        assert_exact_kinds(who, &shifted, total as u64);
    }
    let mut seen = early;
    seen.extend(rest);
    let shifted: Vec<Value> = seen
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m["offset"] = json!(m["offset"].as_u64().unwrap_or(0) - 20);
            m
        })
        .collect();
    assert_exact_kinds("reader", &shifted, total as u64);

    // Deletes too, then history agrees with what was delivered.
    let mut a = stack.connect(0, "ann").await;
    a.join(room).await;
    let mut d = Vec::new();
    for o in 1..=3u64 {
        d.push(a.request(json!({"type": "delete", "room": room, "offset": o, "client_id": format!("d-ann-{o}")})).await);
    }
    assert!(d.iter().all(|x| x["type"] == "ack"), "{d:?}");
    let page = stack.history_http(room, "limit=100").await;
    let offsets: Vec<u64> = page["messages"]
        .as_array()
        .expect("page")
        .iter()
        .filter_map(|m| m["offset"].as_u64())
        .collect();
    let top = 20 + total as u64 + 3;
    assert_eq!(offsets, ((top - 99)..=top).collect::<Vec<_>>());
}
