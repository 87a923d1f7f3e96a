//! Redis Cluster specifics: where the keys land. (Every other end-to-end
//! test also runs on a cluster: `CHAT_TEST_REDIS=cluster`, see scripts/test.)

use e2e::*;
use std::collections::HashSet;

/// The slot ranges each node serves, from `CLUSTER NODES` on that node.
async fn slot_owners(stack: &Stack) -> Vec<(String, Vec<(u16, u16)>)> {
    let cluster = stack.cluster.as_ref().expect("a cluster stack");
    let mut out = Vec::new();
    for n in cluster.nodes() {
        let mut c = redis::Client::open(n.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("node");
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut c)
            .await
            .expect("cluster nodes");
        let me = nodes
            .lines()
            .find(|l| l.contains("myself"))
            .expect("myself line");
        let ranges = me
            .split(' ')
            .skip(8)
            .filter_map(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .collect();
        out.push((n.url(), ranges));
    }
    out
}

async fn owner(stack: &Stack, owners: &[(String, Vec<(u16, u16)>)], key: &str) -> String {
    let mut r = stack.redis().await;
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut r)
        .await
        .expect("keyslot");
    owners
        .iter()
        .find(|(_, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
        .map(|(url, _)| url.clone())
        .expect("an owner for every slot")
}

#[tokio::test]
async fn shards_spread_over_the_masters_and_a_rooms_keys_share_one_node() {
    let stack = Stack::builder().cluster().nodes(2).start().await;
    let owners = slot_owners(&stack).await;
    assert_eq!(owners.len(), 3);
    let mut masters = HashSet::new();
    for s in stack.keys().all_shard_streams() {
        masters.insert(owner(&stack, &owners, &s).await);
    }
    assert!(masters.len() >= 2, "shards all on {masters:?}");

    // A conversation across nodes works, and every key of the room is on one node.
    let mut a = stack.connect(0, "ann").await;
    let mut b = stack.connect(1, "ben").await;
    a.join("spread").await;
    b.join("spread").await;
    a.send("spread", "hi", "c1").await;
    assert_eq!(b.messages(1).await[0]["text"], "hi");
    let k = stack.keys();
    let mut homes = HashSet::new();
    for key in [
        k.room_meta("spread"),
        k.room_stream("spread"),
        k.room_dedup("spread", "ann", "c1"),
        k.room_presence("spread"),
        k.room_channel("spread"),
    ] {
        homes.insert(owner(&stack, &owners, &key).await);
    }
    assert_eq!(homes.len(), 1, "room keys on {homes:?}");
}

async fn node_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("node")
}

/// Moves one slot, with its keys, from `src` to `dst` (redis-cli --cluster
/// reshard, by hand) and tells every node.
async fn move_slot(stack: &Stack, slot: u16, src: &str, dst: &str) {
    let cluster = stack.cluster.as_ref().expect("a cluster stack");
    let (mut s, mut d) = (node_conn(src).await, node_conn(dst).await);
    let id = |mut c: redis::aio::MultiplexedConnection| async move {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query_async::<String>(&mut c)
            .await
            .expect("myid")
    };
    let (src_id, dst_id) = (id(s.clone()).await, id(d.clone()).await);
    let setslot = |state: &'static str, node: String| {
        let mut c = redis::cmd("CLUSTER");
        c.arg("SETSLOT").arg(slot).arg(state).arg(node);
        c
    };
    let _: () = setslot("IMPORTING", src_id.clone())
        .query_async(&mut d)
        .await
        .expect("importing");
    let _: () = setslot("MIGRATING", dst_id.clone())
        .query_async(&mut s)
        .await
        .expect("migrating");
    let keys: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(1000)
        .query_async(&mut s)
        .await
        .expect("keys");
    if !keys.is_empty() {
        let port = dst.rsplit(':').next().expect("port").trim_end_matches('/');
        let _: () = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query_async(&mut s)
            .await
            .expect("migrate");
    }
    for n in cluster.nodes() {
        let _: () = setslot("NODE", dst_id.clone())
            .query_async(&mut node_conn(&n.url()).await)
            .await
            .expect("setslot node");
    }
}

#[tokio::test]
async fn a_room_whose_slot_moves_keeps_delivering() {
    let stack = Stack::builder().cluster().start().await;
    let owners = slot_owners(&stack).await;
    let mut c = stack.connect(0, "mo").await;
    c.join("moving").await;
    c.send("moving", "before", "m1").await;
    assert_eq!(c.messages(1).await[0]["text"], "before");

    let channel = stack.keys().room_channel("moving");
    let src = owner(&stack, &owners, &channel).await;
    let dst = owners
        .iter()
        .map(|(url, _)| url.clone())
        .find(|u| *u != src)
        .expect("another master");
    let mut r = stack.redis().await;
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(&channel)
        .query_async(&mut r)
        .await
        .expect("keyslot");
    move_slot(&stack, slot, &src, &dst).await;

    // Redis dropped the node's sharded subscription with the slot; the node
    // subscribes again on the new owner and keeps delivering, in order.
    let ack = stack.say("moving", "pub", "after").await;
    let m = c.messages(1).await.remove(0);
    assert_eq!(
        (m["text"].clone(), m["offset"].clone()),
        ("after".into(), ack["offset"].clone())
    );
    assert_eq!(ack["offset"], 2, "the room's data moved with its slot");
}

#[tokio::test]
async fn push_work_left_in_an_outbox_by_a_crash_is_queued_by_the_next_batch() {
    let stack = Stack::builder().cluster().start().await;
    stack.add_member("ob", "zed").await;
    // A fanout worker ran the room's notify script, then died before
    // queueing its push: the work is still in the room's outbox.
    let k = stack.keys();
    let mut r = stack.redis().await;
    let left = serde_json::json!([
        "1.0",
        "x",
        "zed",
        "ob",
        "1",
        "pub",
        "earlier",
        "7",
        "00000000000000ab"
    ]);
    let _: () = redis::cmd("RPUSH")
        .arg(k.room_push_outbox("ob"))
        .arg(left.to_string())
        .query_async(&mut r)
        .await
        .expect("rpush");
    stack.say("ob", "pub", "now").await;
    let pushes = wait_until(
        std::time::Duration::from_secs(10),
        "both pushes queued",
        || {
            let mut r = r.clone();
            let stream = k.notify_stream();
            async move {
                let e: redis::streams::StreamRangeReply =
                    redis::AsyncCommands::xrange_all(&mut r, stream)
                        .await
                        .ok()?;
                let previews: Vec<String> = e
                    .ids
                    .iter()
                    .filter_map(|e| e.get::<String>("preview"))
                    .collect();
                (previews.len() >= 2).then_some(previews)
            }
        },
    )
    .await;
    assert_eq!(pushes, vec!["earlier".to_owned(), "now".to_owned()]);
    // The outbox entries are removed right after their pushes are queued
    // (the next command of the same apply): wait for it, not race it.
    wait_until(
        std::time::Duration::from_secs(10),
        "the outbox is cleared once queued",
        || {
            let mut r = r.clone();
            let outbox = k.room_push_outbox("ob");
            async move {
                let left: i64 = redis::cmd("EXISTS")
                    .arg(outbox)
                    .query_async(&mut r)
                    .await
                    .ok()?;
                (left == 0).then_some(())
            }
        },
    )
    .await;
}
