//! Fanout workers that die: their pending entries are taken over, poison
//! entries are dead-lettered, vanished groups are recreated.

use e2e::*;
use redis::AsyncCommands;
use serde_json::{Value, json};
use std::time::Duration;

fn offsets(msgs: &[Value]) -> Vec<u64> {
    msgs.iter().filter_map(|m| m["offset"].as_u64()).collect()
}

#[tokio::test]
async fn a_worker_killed_mid_stream_leaves_nothing_undelivered() {
    let mut stack = Stack::builder()
        .workers(2)
        .env("CHAT_RATE_PER_SEC", "100000")
        .env("CHAT_RATE_BURST", "100000")
        .start()
        .await;
    let mut reader = stack.connect(0, "reader").await;
    reader.join("ko").await;
    let mut sender = stack.connect(0, "sender").await;
    sender.join("ko").await;
    let total = 400;
    let reading = tokio::spawn(async move { reader.messages(total).await });
    for i in 0..total {
        if i == total / 2 {
            // Killed, not shut down: its task is dropped wherever it is.
            // (A kill while it holds entries, as a process, is pinned in
            // fanout-worker/tests/process.rs.)
            stack.kill_worker(0);
        }
        sender
            .send_json(json!({"type": "send", "room": "ko", "text": format!("m{i}"), "client_id": format!("c{i}")}))
            .await;
    }
    let msgs = reading.await.expect("reader");
    assert_eq!(offsets(&msgs), (1..=total as u64).collect::<Vec<_>>());
    wait_until(Duration::from_secs(10), "no pending entries", || async {
        (stack.pending("fanout").await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_crashed_consumers_pending_entries_are_taken_over() {
    let mut stack = Stack::builder().workers(0).start().await;
    let mut reader = stack.connect(0, "reader").await;
    reader.join("orphans").await;
    let http = http();
    for i in 0..30 {
        http.post(format!("{}/v1/rooms/orphans/messages", stack.http(0)))
            .bearer_auth(API_KEY)
            .json(&json!({"text": format!("m{i}")}))
            .send()
            .await
            .expect("publish");
    }
    assert_eq!(stack.read_as_crashed_consumer().await, 30);
    assert_eq!(stack.pending("fanout").await, 30);
    // A live worker starts: nothing new to read, but the victim's entries
    // go idle and are claimed, published and acknowledged.
    stack.add_worker().await;
    let msgs = reader.messages(30).await;
    assert_eq!(offsets(&msgs), (1..=30).collect::<Vec<_>>());
    wait_until(Duration::from_secs(10), "no pending entries", || async {
        (stack.pending("fanout").await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn over_delivered_and_malformed_entries_go_to_the_dead_letter_stream() {
    let mut stack = Stack::builder()
        .workers(0)
        .streams(|s| s.fanout.max_deliveries = 1)
        .start()
        .await;
    let mut reader = stack.connect(0, "reader").await;
    reader.join("poison").await;
    let http = http();
    let url = format!("{}/v1/rooms/poison/messages", stack.http(0));
    let publish = |text: &'static str| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.post(url)
                .bearer_auth(API_KEY)
                .json(&json!({"text": text}))
                .send()
                .await
                .expect("publish")
        }
    };
    publish("first").await;
    assert_eq!(stack.read_as_crashed_consumer().await, 1);
    let mut r = stack.redis().await;
    let shard = stack.keys().shard_stream(0);
    let _: String = r
        .xadd(&shard, "*", &[("r", "poison"), ("junk", "yes")])
        .await
        .expect("xadd junk");
    stack.add_worker().await;

    let dlq = stack.keys().dead_letter("fanout");
    let entries: redis::streams::StreamRangeReply =
        wait_until(Duration::from_secs(10), "two dead letters", || {
            let mut r = r.clone();
            let dlq = dlq.clone();
            async move {
                let e: redis::streams::StreamRangeReply = r.xrange_all(&dlq).await.ok()?;
                (e.ids.len() == 2).then_some(e)
            }
        })
        .await;
    let mut reasons: Vec<String> = entries
        .ids
        .iter()
        .map(|e| e.get("reason").expect("reason"))
        .collect();
    reasons.sort();
    assert_eq!(reasons, vec!["malformed", "max_deliveries"]);
    // The room keeps working: the next message arrives, and the dead-lettered
    // one is healed from the room stream before it, in order.
    publish("second").await;
    let msgs = reader.messages(2).await;
    assert_eq!(offsets(&msgs), vec![1, 2]);
    wait_until(Duration::from_secs(10), "no pending entries", || async {
        (stack.pending("fanout").await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_vanished_group_is_recreated_instead_of_crashing() {
    // The reader on another node than the sender: only the fanout (its
    // group recreated) brings it the message.
    let stack = Stack::builder().nodes(2).start().await;
    let mut reader = stack.connect(1, "reader").await;
    reader.join("phoenix").await;
    let mut r = stack.redis().await;
    for s in stack.keys().all_shard_streams() {
        let _: () = r.del(&s).await.expect("del");
    }
    let mut sender = stack.connect(0, "sender").await;
    sender.join("phoenix").await;
    sender.send("phoenix", "after the wipe", "w1").await;
    let m = reader.messages(1).await;
    assert_eq!(m[0]["text"], "after the wipe");
    let groups: redis::streams::StreamInfoGroupsReply = r
        .xinfo_groups(stack.keys().room_shard_stream("phoenix"))
        .await
        .expect("xinfo");
    assert_eq!(groups.groups.len(), 1);
}
