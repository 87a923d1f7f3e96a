//! Overload: past what the stack can deliver, `send` is refused rather than
//! accepted and delivered late; nothing refused is stored, nothing acked is
//! lost. (The 4008 slow-consumer close and its recovery are in lifecycle.rs.)

use e2e::{Stack, http, wait_until};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn sends_are_refused_while_deliveries_run_behind_and_accepted_again_after() {
    // Alice is on node 1, the messages are published on node 0: node 1
    // gets them only from the fanout (a node delivers its own appends to
    // its own sockets at once, and sheds on how late the fanout's copies are).
    let mut stack = Stack::builder()
        .nodes(2)
        .env("CHAT_MAX_DELIVERY_LAG", "300ms")
        .start()
        .await;
    let mut alice = stack.connect(1, "alice").await;
    alice.join("shed").await;
    // The fanout stops: messages are stored but nobody delivers them.
    stack.kill_worker(0);
    wait_until(
        Duration::from_secs(5),
        "the worker's task to end",
        || async { stack.workers[0].handle.is_finished().then_some(()) },
    )
    .await;
    let last = stack.publish("shed", 20).await;
    // The backlog ages past twice the allowed lag (on Redis's clock, the
    // one its timestamps come from) before a worker delivers it.
    let stored = last["ts"].as_u64().expect("ts");
    let r = stack.redis().await;
    wait_until(
        Duration::from_secs(10),
        "the backlog to be 600 ms old",
        || {
            let mut r = r.clone();
            async move {
                let (secs, micros): (u64, u64) =
                    redis::cmd("TIME").query_async(&mut r).await.ok()?;
                (secs * 1000 + micros / 1000 >= stored + 600).then_some(())
            }
        },
    )
    .await;
    stack.add_worker().await;
    // The backlog arrives late: the node is behind.
    let late = alice.messages(20).await;
    assert_eq!(late.len(), 20);
    alice
        .send_json(json!({"type": "send", "room": "shed", "text": "now", "client_id": "refused-1", "ref": 7}))
        .await;
    let refused = alice.recv_type("error").await;
    assert_eq!(refused["code"], "unavailable", "{refused}");
    assert_eq!(refused["ref"], 7);
    // The HTTP publish is refused the same way.
    let r = http()
        .post(format!("{}/v1/rooms/shed/messages", stack.http(1)))
        .bearer_auth(e2e::API_KEY)
        .json(&json!({"text": "also now"}))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 503);
    // Once deliveries are on time again (no late delivery for a second), it
    // is accepted: the client retries with the same client_id, as the
    // contract says, until it is; it is stored once.
    let ack = alice.send_retrying("shed", "now", "refused-1").await;
    assert_eq!(
        (ack["offset"].clone(), ack["duplicate"].clone()),
        (json!(21), json!(false))
    );
    let m = alice.messages(1).await;
    assert_eq!(m[0]["offset"], 21);
    let page = stack.history_http("shed", "limit=100").await;
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts.len(), 21, "the refused ones were not stored");
    assert!(!texts.contains(&"also now"));
}
