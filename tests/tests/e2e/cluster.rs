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
