//! Unread counts (on `joined`, over HTTP for all of a user's rooms, in the
//! push badge) and read receipts in the rooms that allow them.

use e2e::*;
use redis::AsyncCommands;
use serde_json::{Value, json};
use std::time::Duration;

async fn unread_of(stack: &Stack, user: &str) -> Value {
    let r = http()
        .get(format!("{}/v1/unread", stack.http(0)))
        .bearer_auth(token(user, &["*"]))
        .send()
        .await
        .expect("unread");
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

fn counts(body: &Value) -> Vec<(String, u64)> {
    body["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| {
            (
                r["room"].as_str().unwrap_or_default().to_owned(),
                r["unread"].as_u64().unwrap_or(99_999),
            )
        })
        .collect()
}

#[tokio::test]
async fn unread_counts_messages_of_others_after_the_read_marker_on_joined_and_for_all_rooms() {
    let stack = Stack::builder().start().await;
    stack.add_member("u:one", "bob").await;
    stack.add_member("u:two", "bob").await;
    let mut alice = stack.connect(0, "alice").await;
    for room in ["u:one", "u:two"] {
        alice.join(room).await;
    }
    for i in 0..3 {
        alice
            .send("u:one", &format!("one {i}"), &format!("o{i}"))
            .await;
    }
    alice.send("u:two", "two 0", "t0").await;
    alice.send("u:two", "two 1", "t1").await;
    // Events are not unread messages.
    let e = alice
        .request(json!({"type": "edit", "room": "u:one", "offset": 3, "text": "one 2!"}))
        .await;
    assert_eq!(e["type"], "ack", "{e}");

    assert_eq!(
        counts(&unread_of(&stack, "bob").await),
        vec![("u:one".into(), 3), ("u:two".into(), 2)]
    );
    let mut bob = stack.connect(0, "bob").await;
    let j = bob.join("u:one").await;
    assert_eq!(j["unread"], 3, "{j}");
    bob.send_json(json!({"type": "read", "room": "u:one", "offset": 2}))
        .await;
    bob.join("u:two").await;
    // bob's own messages are never unread to him.
    bob.send("u:two", "mine", "b0").await;
    let body = wait_until(
        Duration::from_secs(10),
        "bob's read marker counted",
        || async {
            let b = unread_of(&stack, "bob").await;
            (counts(&b) == vec![("u:one".to_owned(), 1), ("u:two".to_owned(), 2)]).then_some(b)
        },
    )
    .await;
    assert_eq!(body["total"], 3);
    assert_eq!(body["rooms"][0]["read"], 2);
    // A user's token only: the admin key gets 403.
    let r = http()
        .get(format!("{}/v1/unread", stack.http(0)))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("unread");
    assert_eq!(r.status(), 403);
    // A membership withdrawn takes the room off the list.
    stack.remove_member("u:two", "bob").await;
    assert_eq!(
        counts(&unread_of(&stack, "bob").await),
        vec![("u:one".into(), 1)]
    );
}

#[tokio::test]
async fn read_receipts_reach_members_only_where_the_room_allows_them() {
    let stack = Stack::builder()
        .nodes(2)
        .streams(|s| {
            s.rooms.push(chat_core::config::RoomPolicy {
                pattern: "seen:*".into(),
                retention: chat_core::config::RetentionPolicy {
                    read_receipts: true,
                    ..s.defaults.clone()
                },
            })
        })
        .start()
        .await;
    let mut alice = stack.connect(0, "alice").await;
    let mut bob = stack.connect(1, "bob").await;
    for room in ["seen:1", "plain"] {
        alice.join(room).await;
        bob.join(room).await;
    }
    for room in ["seen:1", "plain"] {
        alice.send(room, "hello", &format!("{room}-1")).await;
    }
    alice.messages(2).await;
    bob.messages(2).await;
    // In a room without receipts, bob's read is private: alice's next frame
    // is the message sent after it.
    bob.send_json(json!({"type": "read", "room": "plain", "offset": 1}))
        .await;
    bob.send_json(json!({"type": "read", "room": "seen:1", "offset": 1}))
        .await;
    bob.send("plain", "after", "p2").await;
    let mut frames = Vec::new();
    while frames.len() < 2 {
        let f = alice.recv().await;
        if f["type"] == "presence" {
            continue;
        }
        frames.push(f);
    }
    let receipts: Vec<&Value> = frames.iter().filter(|f| f["type"] == "receipt").collect();
    assert_eq!(receipts.len(), 1, "{frames:?}");
    assert_eq!(
        (
            receipts[0]["room"].as_str(),
            receipts[0]["user"].as_str(),
            receipts[0]["offset"].as_u64()
        ),
        (Some("seen:1"), Some("bob"), Some(1))
    );

    let get = |room: &'static str, who: &'static str| {
        let url = format!("{}/v1/rooms/{room}/receipts", stack.http(0));
        async move {
            http()
                .get(url)
                .bearer_auth(token(who, &["*"]))
                .send()
                .await
                .expect("receipts")
        }
    };
    let r = get("seen:1", "alice").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["receipts"], json!([{"user": "bob", "offset": 1}]));
    assert_eq!(get("plain", "alice").await.status(), 403);
}

#[tokio::test]
async fn a_push_carries_the_rooms_unread_count_and_the_users_total_as_the_badge() {
    let stack = Stack::builder().notifiers(1).start().await;
    stack.add_member("b:one", "carol").await;
    stack.add_member("b:two", "carol").await;
    stack.register_device("carol", "carol-phone").await;
    let mut alice = stack.connect(0, "alice").await;
    alice.join("b:one").await;
    alice.join("b:two").await;
    alice.send("b:two", "earlier", "e1").await;
    stack.settled().await;
    alice.send("b:one", "ping", "p1").await;
    stack.settled().await;
    let mut r = stack.redis().await;
    let pushes: redis::streams::StreamRangeReply = r
        .xrange_all(stack.keys().notify_outbox())
        .await
        .expect("outbox");
    let last = pushes.ids.last().expect("a push");
    let msg: String = last.get("message").expect("message");
    let msg: Value = serde_json::from_str(&msg).expect("json");
    let m = &msg["message"];
    assert_eq!(m["data"]["room"], "b:one");
    assert_eq!(m["data"]["unread"], "1");
    assert_eq!(m["apns"]["payload"]["aps"]["badge"], 2, "{m}");
    assert_eq!(m["android"]["notification"]["notification_count"], 2);
}
