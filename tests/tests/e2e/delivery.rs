//! Exactly-once, in-order delivery across ingress nodes and fanout workers.

use e2e::*;
use redis::AsyncCommands;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

/// Checks a member's view: offsets 1..=n, each once, in order.
fn assert_exact(who: &str, msgs: &[Value], n: u64) {
    let offsets: Vec<u64> = msgs.iter().filter_map(|m| m["offset"].as_u64()).collect();
    let want: Vec<u64> = (1..=n).collect();
    assert_eq!(offsets.len() as u64, n, "{who}: wrong count");
    assert_eq!(
        offsets, want,
        "{who}: not every message exactly once in offset order"
    );
}

/// Sends `n` messages without waiting, then reads until every ack and
/// every one of `total` messages arrived. Returns (acks, messages).
async fn pipelined_sender(
    c: Client,
    room: &str,
    user: String,
    n: usize,
    total: usize,
) -> (Vec<Value>, Vec<Value>) {
    let frames = (0..n)
        .map(|i| json!({"type": "send", "room": room, "text": format!("{user} {i}"), "client_id": format!("{user}-{i}")}))
        .collect();
    c.pipeline(frames, total).await
}

#[tokio::test]
async fn thousand_messages_across_two_nodes_and_two_workers_arrive_exactly_once_in_order() {
    let stack = Stack::builder()
        .nodes(2)
        .workers(2)
        .env("CHAT_RATE_PER_SEC", "100000")
        .env("CHAT_RATE_BURST", "100000")
        .start()
        .await;
    let room = "big";
    let senders = 5;
    let per_sender = 200;
    let total = senders * per_sender;

    let mut readers = Vec::new();
    for i in 0..4 {
        let mut c = stack.connect(i % 2, &format!("reader{i}")).await;
        c.join(room).await;
        readers.push(c);
    }
    let mut sender_clients = Vec::new();
    for s in 0..senders {
        let mut c = stack.connect(s % 2, &format!("sender{s}")).await;
        c.join(room).await;
        sender_clients.push(c);
    }
    let readers: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                let msgs = c.messages(total).await;
                (format!("reader{i}"), msgs)
            })
        })
        .collect();
    let senders: Vec<_> = sender_clients
        .into_iter()
        .enumerate()
        .map(|(s, c)| {
            tokio::spawn(pipelined_sender(
                c,
                room,
                format!("sender{s}"),
                per_sender,
                total,
            ))
        })
        .collect();

    let mut acked = HashSet::new();
    for (s, h) in senders.into_iter().enumerate() {
        let (acks, msgs) = h.await.expect("sender task");
        assert!(acks.iter().all(|a| a["duplicate"] == false));
        for a in &acks {
            assert!(
                acked.insert(a["offset"].as_u64().expect("offset")),
                "offset acked twice"
            );
        }
        assert_exact(&format!("sender{s}"), &msgs, total as u64);
    }
    assert_eq!(
        acked,
        (1..=total as u64).collect::<HashSet<_>>(),
        "acked offsets are gap-free"
    );
    for h in readers {
        let (who, msgs) = h.await.expect("reader task");
        assert_exact(&who, &msgs, total as u64);
    }
}

#[tokio::test]
async fn offsets_are_gap_free_and_each_client_id_stored_once_with_concurrent_retries_on_two_nodes()
{
    let stack = Stack::builder()
        .nodes(2)
        .env("CHAT_RATE_PER_SEC", "100000")
        .env("CHAT_RATE_BURST", "100000")
        .start()
        .await;
    let room = "retry";
    let users = 4;
    let per_user = 50;
    // Each user is connected to both nodes and sends every message through
    // both at once: a retry racing the original.
    let mut tasks = Vec::new();
    for u in 0..users {
        for node in 0..2 {
            let mut c = stack.connect(node, &format!("u{u}")).await;
            c.join(room).await;
            tasks.push(tokio::spawn(async move {
                let mut acks = Vec::new();
                for i in 0..per_user {
                    acks.push(c.send(room, &format!("u{u} {i}"), &format!("id-{i}")).await);
                }
                (u, acks)
            }));
        }
    }
    let mut by_key = std::collections::HashMap::new();
    for t in tasks {
        let (u, acks) = t.await.expect("task");
        for (i, a) in acks.iter().enumerate() {
            let off = a["offset"].as_u64().expect("offset");
            let prev = by_key.insert((u, i, a["duplicate"] == true), off);
            assert!(prev.is_none(), "two acks of the same kind for u{u} id-{i}");
        }
    }
    // Per (user, client_id): one original and one duplicate, same offset.
    for u in 0..users {
        for i in 0..per_user {
            assert_eq!(
                by_key.get(&(u, i, false)),
                by_key.get(&(u, i, true)),
                "u{u} id-{i}"
            );
        }
    }
    let mut r = stack.redis().await;
    let entries: redis::streams::StreamRangeReply = r
        .xrange_all(stack.keys().room_stream(room))
        .await
        .expect("xrange");
    let n = (users * per_user) as u64;
    let offsets: Vec<u64> = entries
        .ids
        .iter()
        .map(|e| {
            e.id.split('-')
                .next()
                .and_then(|o| o.parse().ok())
                .expect("offset id")
        })
        .collect();
    assert_eq!(
        offsets,
        (1..=n).collect::<Vec<_>>(),
        "stored offsets are 1..n without gaps"
    );
    let ids: HashSet<(String, String)> = entries
        .ids
        .iter()
        .map(|e| {
            (
                e.get::<String>("u").expect("u"),
                e.get::<String>("c").expect("c"),
            )
        })
        .collect();
    assert_eq!(ids.len() as u64, n, "each (user, client_id) stored once");
}

/// Whether the fanout group has read and acknowledged everything of `room`'s shard.
async fn fanout_done(stack: &Stack, room: &str) -> Option<()> {
    let mut r = stack.redis().await;
    let shard = stack.keys().room_shard_stream(room);
    let groups: redis::streams::StreamInfoGroupsReply = r.xinfo_groups(&shard).await.ok()?;
    let stream: redis::streams::StreamInfoStreamReply = r.xinfo_stream(&shard).await.ok()?;
    let g = groups.groups.iter().find(|g| g.name == "fanout")?;
    (g.pending == 0 && g.last_delivered_id == stream.last_generated_id).then_some(())
}

#[tokio::test]
async fn a_nodes_own_appends_reach_its_sockets_first_and_once() {
    let mut stack = Stack::builder().workers(0).start().await;
    let mut alice = stack.connect(0, "alice").await;
    let mut bob = stack.connect(0, "bob").await;
    alice.join("near").await;
    bob.join("near").await;
    // No fanout worker: this node delivers what it appended itself, the
    // sender's `ack` before its own message.
    alice
        .send_json(json!({"type": "send", "room": "near", "text": "one", "client_id": "n1"}))
        .await;
    assert_eq!(alice.recv_type("ack").await["offset"], 1);
    assert_eq!(alice.recv_type("message").await["offset"], 1);
    assert_eq!(bob.messages(1).await[0]["text"], "one");
    // The fanout's copy, once a worker runs, is not delivered again.
    stack.add_worker().await;
    wait_until(Duration::from_secs(10), "the fanout to catch up", || {
        fanout_done(&stack, "near")
    })
    .await;
    alice.send("near", "two", "n2").await;
    let next = bob.messages(1).await;
    assert_eq!(
        (next[0]["offset"].clone(), next[0]["text"].clone()),
        (json!(2), json!("two")),
        "the fanout's copy of 1 came again"
    );
}
