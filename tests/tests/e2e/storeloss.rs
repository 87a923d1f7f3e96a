//! Redis losing acknowledged writes (a restart from an older snapshot):
//! no (room, epoch, offset) ever names two messages; the room goes on in a
//! new epoch, which a rejoin reports with `recovered: false`.

use e2e::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// Publishes through the HTTP API until Redis answers again; the ack.
async fn publish_when_back(stack: &Stack, text: &str) -> Value {
    wait_until(
        Duration::from_secs(20),
        "a publish to succeed again",
        || {
            let url = format!("{}/v1/rooms/snap/messages", stack.http(0));
            let text = text.to_owned();
            async move {
                let r = http()
                    .post(url)
                    .bearer_auth(API_KEY)
                    .json(&json!({"text": text, "user": "alice"}))
                    .send()
                    .await
                    .ok()?;
                if r.status() != 200 {
                    return None;
                }
                r.json::<Value>().await.ok()
            }
        },
    )
    .await
}

#[tokio::test]
async fn after_a_restart_from_an_older_snapshot_no_offset_names_two_messages() {
    let mut stack = Stack::builder().nodes(2).start().await;
    let mut alice = stack.connect(0, "alice").await;
    alice.join("snap").await;
    let mut bob = stack.connect(1, "bob").await;
    let epoch = bob.join("snap").await["epoch"].clone();

    for i in 1..=3 {
        alice
            .send("snap", &format!("kept {i}"), &format!("k{i}"))
            .await;
    }
    assert_eq!(bob.offsets(3).await, vec![1, 2, 3]);
    stack.snapshot_redis();
    // Acknowledged and delivered, then lost with the restart.
    for i in 4..=6 {
        let ack = alice
            .send("snap", &format!("lost {i}"), &format!("l{i}"))
            .await;
        assert_eq!(
            (ack["epoch"].clone(), ack["offset"].clone()),
            (epoch.clone(), json!(i))
        );
    }
    let mut seen: HashMap<(String, u64), String> = HashMap::new();
    for m in bob.messages(3).await {
        seen.insert(
            (
                m["epoch"].as_str().expect("epoch").to_owned(),
                m["offset"].as_u64().expect("offset"),
            ),
            m["text"].as_str().expect("text").to_owned(),
        );
    }

    stack.restart_redis_from_snapshot();
    let ack = publish_when_back(&stack, "after").await;
    assert_ne!(
        ack["epoch"], epoch,
        "the room goes on in a new epoch: {ack}"
    );
    assert_eq!(ack["offset"], 1);
    for i in 2..=3 {
        alice
            .send("snap", &format!("after {i}"), &format!("a{i}"))
            .await;
    }

    // bob stayed connected: he is told of the new epoch (a `joined` of his
    // own), then gets its messages, and no offset of the old epoch comes to
    // him again with another text.
    let mut got = Vec::new();
    let mut told = None;
    while got.len() < 3 {
        let m = bob.recv().await;
        if m["type"] == "joined" {
            assert!(told.is_none() && got.is_empty(), "told once, first: {m}");
            told = Some(m);
            continue;
        }
        assert_eq!(m["type"], "message", "{m}");
        let key = (
            m["epoch"].as_str().expect("epoch").to_owned(),
            m["offset"].as_u64().expect("offset"),
        );
        let text = m["text"].as_str().expect("text").to_owned();
        if let Some(before) = seen.insert(key.clone(), text.clone()) {
            assert_eq!(before, text, "{key:?} named two messages");
        }
        if m["epoch"] == ack["epoch"] {
            got.push(m["offset"].as_u64().expect("offset"));
        }
    }
    assert_eq!(got, vec![1, 2, 3]);
    let told = told.expect("bob was told of the new epoch");
    assert_eq!(
        (
            told["room"].clone(),
            told["epoch"].clone(),
            told["offset"].clone(),
            told["recovered"].clone()
        ),
        (json!("snap"), ack["epoch"].clone(), json!(0), json!(false))
    );

    // A client that had offset 6 of the old epoch rejoins: not recovered,
    // the new epoch.
    let mut carol = stack.connect(0, "carol").await;
    carol
        .send_json(json!({"type": "join", "room": "snap", "since": {"epoch": epoch, "offset": 6}}))
        .await;
    let joined = carol.recv_type("joined").await;
    assert_eq!(joined["recovered"], false);
    assert_eq!(joined["epoch"], ack["epoch"]);
    assert_eq!(joined["offset"], 3);
}

#[tokio::test]
async fn a_store_declared_durable_keeps_the_epoch_across_a_restart() {
    // With CHAT_REDIS_DURABLE the operator vouches that Redis lost nothing
    // (here it did not: the snapshot is taken last).
    let mut stack = Stack::builder()
        .env("CHAT_REDIS_DURABLE", "true")
        .start()
        .await;
    let mut alice = stack.connect(0, "alice").await;
    let epoch = alice.join("snap").await["epoch"].clone();
    alice.send("snap", "one", "d1").await;
    stack.snapshot_redis();
    stack.restart_redis_from_snapshot();
    let ack = publish_when_back(&stack, "two").await;
    assert_eq!(
        (ack["epoch"].clone(), ack["offset"].clone()),
        (epoch, json!(2))
    );
}
