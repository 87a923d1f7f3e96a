//! Faults found in review, each pinned by a test: a long Redis outage, a
//! recovery range trimmed mid-stream, a late message of a retired epoch, a
//! client that never reads, dead consumers.

use e2e::*;
use redis::AsyncCommands;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn after_a_long_outage_the_node_hears_pubsub_again() {
    let mut stack = Stack::builder().start().await;
    let mut c = stack.connect(0, "uma").await;
    c.join("deaf").await;
    stack.kill_redis();
    wait_until(
        Duration::from_secs(10),
        "the node to see Redis gone",
        || {
            let url = format!("{}/readyz", stack.http(0));
            async move {
                let r = http().get(url).send().await.ok()?;
                (r.status() == 503).then_some(())
            }
        },
    )
    .await;
    // Alive all the same: restarting the node would not bring Redis back.
    let live = http()
        .get(format!("{}/livez", stack.http(0)))
        .send()
        .await
        .expect("livez");
    assert_eq!(live.status(), 200);
    // The outage lasts until the stack has run out of redis-rs's own
    // reconnect retries (3 per connection, within about 2 s): Redis's ports
    // hang up on every connection until 40 attempts were turned away. The
    // node and workers make about 8 a second here, so that is several rounds
    // of every connection's retries, and it stretches with a slow machine.
    stack.turn_away_redis_clients(40).await;
    stack.restart_redis_empty();
    wait_until(Duration::from_secs(15), "the node to resubscribe", || {
        let stack = &stack;
        async move {
            let channels = stack.channels().await?;
            (channels.iter().any(|c| c.ends_with(":ctl"))
                && channels.iter().any(|c| c.contains("{deaf}")))
            .then_some(())
        }
    })
    .await;
    let ack = stack.publish("deaf", 1).await;
    let m = c.messages(1).await.remove(0);
    assert_eq!(
        (m["offset"].clone(), m["epoch"].clone()),
        (json!(1), ack["epoch"].clone())
    );
    // The control channel works again too: a membership withdrawal is heard.
    let mut vic = Client::connect_with_header(&stack.ws_url(0), Some(&token("vic", &[]))).await;
    assert_eq!(vic.recv().await["type"], "ready");
    stack.add_member("deaf", "vic").await;
    vic.join("deaf").await;
    stack.remove_member("deaf", "vic").await;
    let (code, _) = vic.until_closed().await;
    assert_eq!(code, Some(4003), "the withdrawal reached the node");
}

#[tokio::test]
async fn a_recovery_range_trimmed_mid_stream_closes_1001_instead_of_spinning() {
    let stack = Stack::builder().start().await;
    let mut a = stack.connect(0, "a").await;
    let epoch = a.join("loop").await["epoch"].clone();
    a.close().await;
    stack.publish_many("loop", 3000, 4000).await;

    let mut bob = stack.connect(0, "bob").await;
    // The replay has started; then the client stops reading, so the writer
    // stalls mid-replay on TCP backpressure while the rest of the range is
    // trimmed and newer messages arrive.
    let j = bob.join_since("loop", &epoch, 0).await;
    assert_eq!(j["recovered"], true);
    let first = bob.messages(1).await.remove(0);
    assert_eq!(first["offset"], 1);
    let mut r = stack.redis().await;
    let _: u64 = redis::cmd("XTRIM")
        .arg(stack.keys().room_stream("loop"))
        .arg("MINID")
        .arg("3001-0")
        .query_async(&mut r)
        .await
        .expect("xtrim");
    stack.publish_many("loop", 8, 10).await;
    let (code, frames) = bob.until_closed().await;
    assert_eq!(code, Some(1001), "the client is told to reconnect");
    let offsets: Vec<u64> = std::iter::once(&first)
        .chain(&frames)
        .filter(|f| f["type"] == "message")
        .filter_map(|f| f["offset"].as_u64())
        .collect();
    let last = offsets.last().copied().unwrap_or(0);
    assert!(
        offsets.iter().enumerate().all(|(i, &o)| o == i as u64 + 1),
        "in order, no gap, no repeat (got {} messages, last {last})",
        offsets.len()
    );
    assert!(last < 3000, "cut off inside the trimmed range");
    // Re-joining with where it got to is answered honestly.
    let mut again = stack.connect(0, "bob").await;
    let j = again.join_since("loop", &epoch, last).await;
    assert_eq!(j["recovered"], false);
}

#[tokio::test]
async fn a_late_message_of_a_retired_epoch_causes_no_duplicates() {
    let stack = Stack::builder().start().await;
    let mut c = stack.connect(0, "vic").await;
    c.join("flip").await;
    let ack = stack.publish("flip", 3).await;
    assert_eq!(c.messages(3).await.len(), 3);
    // A fanout retry of an entry from before the room was recreated.
    let stale = chat_core::protocol::Message {
        room: "flip".into(),
        offset: 7,
        id: "7-1".into(),
        epoch: "retired".into(),
        user: "x".into(),
        text: "old".into(),
        // Late, not ancient: its lateness counts toward shedding.
        ts: chat_core::clock::now_ms(),
        client_id: "c".into(),
        kind: chat_core::protocol::Kind::User,
        ..Default::default()
    };
    let mut r = stack.redis().await;
    let _: () = r
        .publish(
            stack.keys().room_channel("flip"),
            chat_core::live::fanout(&stale, 0, 0),
        )
        .await
        .expect("publish");
    stack.publish("flip", 1).await;
    let m = c.messages(1).await.remove(0);
    assert_eq!(
        (m["offset"].clone(), m["epoch"].clone()),
        (json!(4), ack["epoch"].clone())
    );
    c.send_json(json!({"type": "ping", "ref": "end"})).await;
    assert_eq!(
        c.recv_type("pong").await["ref"],
        "end",
        "nothing else was delivered"
    );
}

#[tokio::test]
async fn a_client_that_never_reads_releases_its_tasks() {
    let stack = Stack::builder()
        .env("CHAT_OUTBOUND_QUEUE", "100000")
        .env("CHAT_PING_INTERVAL", "1s")
        .start()
        .await;
    let mut never = stack.connect(0, "never").await;
    never.join("pin").await;
    stack.publish_many("pin", 3000, 4000).await;
    let state = stack.nodes[0].state.clone();
    wait_until(Duration::from_secs(30), "the socket's tasks to end", || {
        let state = state.clone();
        async move { (state.sockets.is_empty() && state.tracker.is_empty()).then_some(()) }
    })
    .await;
    drop(never);
}

#[tokio::test]
async fn dead_consumers_are_removed_from_the_group() {
    let stack = Stack::builder().workers(0).start().await;
    let mut r = stack.redis().await;
    let shard = stack.keys().shard_stream(0);
    let _: () = r
        .xgroup_create_mkstream(&shard, "fanout", "0")
        .await
        .expect("group");
    let _: () = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&shard)
        .arg("fanout")
        .arg("gone-worker")
        .query_async(&mut r)
        .await
        .expect("createconsumer");
    let mut settings =
        fanout_worker::settings::FanoutSettings::from_strings(&stack.env).expect("settings");
    settings.common.streams = stack.streams.clone();
    let mut worker = fanout_worker::Fanout::build(settings)
        .await
        .expect("worker");
    wait_until(Duration::from_secs(10), "gone-worker idle 20 ms", || {
        let mut r = r.clone();
        let shard = shard.clone();
        async move {
            let info: redis::streams::StreamInfoConsumersReply =
                r.xinfo_consumers(&shard, "fanout").await.ok()?;
            let gone = info.consumers.iter().find(|c| c.name == "gone-worker")?;
            (gone.idle >= 20).then_some(())
        }
    })
    .await;
    assert_eq!(
        worker
            .remove_dead_consumers(Duration::from_millis(10))
            .await
            .expect("cleanup"),
        1
    );
    let info: redis::streams::StreamInfoConsumersReply =
        r.xinfo_consumers(&shard, "fanout").await.expect("xinfo");
    assert!(info.consumers.iter().all(|c| c.name != "gone-worker"));
}

#[tokio::test]
async fn a_retry_after_the_room_was_recreated_is_stored_afresh() {
    let stack = Stack::builder().start().await;
    let mut c = stack.connect(0, "wes").await;
    c.join("again").await;
    let first = c.send("again", "hi", "same").await;
    let mut r = stack.redis().await;
    let k = stack.keys();
    let _: () = r
        .del(&[k.room_meta("again"), k.room_stream("again")])
        .await
        .expect("del");
    let retry = c.send("again", "hi", "same").await;
    assert_eq!(
        retry["duplicate"], false,
        "stored in the new epoch: {retry}"
    );
    assert_ne!(retry["epoch"], first["epoch"]);
    assert_eq!(retry["offset"], 1);
}
