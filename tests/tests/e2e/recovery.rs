//! `join` with `since`: exact recovery when the range is retained and the
//! epoch unchanged; `recovered: false` otherwise.

use e2e::*;
use redis::AsyncCommands;
use serde_json::json;

#[tokio::test]
async fn since_with_the_current_epoch_returns_exactly_the_missed_messages_then_live_ones() {
    let stack = Stack::builder().nodes(2).start().await;
    let mut alice = stack.connect(0, "alice").await;
    let joined = alice.join("rec").await;
    let epoch = joined["epoch"].clone();
    stack.publish("rec", 5).await;
    let seen = alice.messages(5).await;
    assert_eq!(seen.last().map(|m| m["offset"].clone()), Some(json!(5)));
    alice.close().await;

    stack.publish("rec", 5).await;
    // Back on the other node.
    let mut alice = stack.connect(1, "alice").await;
    let j = alice.join_since("rec", &epoch, 5).await;
    assert_eq!(j["recovered"], true);
    assert_eq!(j["offset"], 10);
    assert_eq!(j["epoch"], epoch);
    stack.publish("rec", 1).await;
    let msgs = alice.messages(6).await;
    let offsets: Vec<u64> = msgs.iter().filter_map(|m| m["offset"].as_u64()).collect();
    assert_eq!(
        offsets,
        vec![6, 7, 8, 9, 10, 11],
        "missed ones, then live, no gap or repeat"
    );
    assert_eq!(msgs[0]["text"], "m0");

    // Nothing missed: recovered, and nothing replayed.
    let mut bob = stack.connect(0, "bob").await;
    let j = bob.join_since("rec", &epoch, 11).await;
    assert_eq!(
        (j["recovered"].clone(), j["offset"].clone()),
        (json!(true), json!(11))
    );
    stack.publish("rec", 1).await;
    assert_eq!(bob.messages(1).await[0]["offset"], 12);
}

#[tokio::test]
async fn a_trimmed_range_is_not_recovered_and_live_delivery_continues() {
    let stack = Stack::builder().start().await;
    let mut c = stack.connect(0, "carl").await;
    let epoch = c.join("trim").await["epoch"].clone();
    c.close().await;
    stack.publish("trim", 10).await;
    let mut r = stack.redis().await;
    // Retention took everything but the newest three.
    let _: u64 = redis::cmd("XTRIM")
        .arg(stack.keys().room_stream("trim"))
        .arg("MAXLEN")
        .arg(3)
        .query_async(&mut r)
        .await
        .expect("xtrim");
    let mut c = stack.connect(0, "carl").await;
    let j = c.join_since("trim", &epoch, 2).await;
    assert_eq!(
        (j["recovered"].clone(), j["offset"].clone()),
        (json!(false), json!(10))
    );
    stack.publish("trim", 1).await;
    let m = c.messages(1).await;
    assert_eq!(
        m[0]["offset"], 11,
        "no missed messages sent; live from joined.offset + 1"
    );

    // Within what is retained it still recovers.
    let mut d = stack.connect(0, "dora").await;
    let j = d.join_since("trim", &epoch, 8).await;
    assert_eq!(j["recovered"], true);
    let offsets: Vec<u64> = d.offsets(3).await;
    assert_eq!(offsets, vec![9, 10, 11]);
}

#[tokio::test]
async fn another_epoch_or_an_impossible_offset_is_not_recovered() {
    let stack = Stack::builder().start().await;
    stack.publish("ep", 3).await;
    let mut c = stack.connect(0, "eve").await;
    let j = c.join_since("ep", &json!("not-the-epoch"), 1).await;
    assert_eq!(
        (j["recovered"].clone(), j["offset"].clone()),
        (json!(false), json!(3))
    );
    let epoch = j["epoch"].clone();
    let mut c2 = stack.connect(0, "eve2").await;
    let j = c2.join_since("ep", &epoch, 99).await;
    assert_eq!(
        j["recovered"], false,
        "an offset ahead of the room is not recovered"
    );

    // The room is recreated (its keys expired): the old epoch is gone.
    let mut r = stack.redis().await;
    let keys = stack.keys();
    let _: () = r
        .del(&[keys.room_meta("ep"), keys.room_stream("ep")])
        .await
        .expect("del");
    stack.publish("ep", 1).await;
    let mut c3 = stack.connect(0, "eve3").await;
    let j = c3.join_since("ep", &epoch, 3).await;
    assert_eq!(j["recovered"], false);
    assert_ne!(j["epoch"], epoch);
    assert_eq!(j["offset"], 1);
}

#[tokio::test]
async fn malformed_since_is_a_bad_request() {
    let stack = Stack::builder().start().await;
    let mut c = stack.connect(0, "fred").await;
    for since in [
        json!({"epoch": 1, "offset": 1}),
        json!({"epoch": "e"}),
        json!({"epoch": "e", "offset": -1}),
        json!("x"),
    ] {
        c.send_json(json!({"type": "join", "room": "r", "since": since, "ref": 1}))
            .await;
        let e = c.recv().await;
        assert_eq!(e["code"], "bad_request", "{since}");
    }
}

#[tokio::test]
async fn leaving_and_rejoining_with_since_under_traffic_never_skips_or_repeats() {
    let stack = Stack::builder()
        .nodes(2)
        .workers(2)
        .env("CHAT_RATE_PER_SEC", "100000")
        .env("CHAT_RATE_BURST", "100000")
        .start()
        .await;
    let mut c = stack.connect(0, "yoyo").await;
    let epoch = c.join("churn").await["epoch"].clone();
    let total = 400u64;
    let url = format!("{}/v1/rooms/churn/messages", stack.http(1));
    // Traffic until the client has seen `total` messages and ten cycles,
    // however fast either side runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let publisher = tokio::spawn(async move {
        let http = http();
        let mut i = 0u64;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            i += 1;
            http.post(&url)
                .bearer_auth(API_KEY)
                .json(&json!({"text": format!("m{i}")}))
                .send()
                .await
                .expect("publish");
        }
    });
    let mut last = 0u64;
    let mut cycles = 0;
    let mut leaving = false;
    let mut next_leave = 10;
    while last < total || cycles < 10 {
        let f = c.recv().await;
        match f["type"].as_str() {
            Some("message") => {
                let o = f["offset"].as_u64().expect("offset");
                assert_eq!(o, last + 1, "no gap, no repeat (cycle {cycles})");
                last = o;
                // A boundary passed while a leave was in flight still counts.
                if o >= next_leave && !leaving {
                    next_leave = o + 10;
                    leaving = true;
                    c.send_json(json!({"type": "leave", "room": "churn"})).await;
                }
            }
            Some("left") => {
                leaving = false;
                cycles += 1;
                c.send_json(json!({"type": "join", "room": "churn", "since": {"epoch": epoch, "offset": last}}))
                    .await;
            }
            Some("joined") => assert_eq!(f["recovered"], true, "{f}"),
            Some("presence") => {}
            _ => panic!("unexpected {f}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.await.expect("publisher");
}

/// Entries in a room stream that do not parse (written by something other
/// than the append script) are passed over everywhere a room is read in
/// pages: the live path's heal, the hub's resync, recovery with `since` and
/// the summarizer. More than a page of them in a row is not the end of the
/// room, and nobody is closed for them.
#[tokio::test]
async fn entries_that_do_not_parse_are_passed_over_not_taken_for_the_end() {
    let stack = Stack::builder().start().await;
    let room = "bad:pages";
    let mut alice = stack.connect(0, "alice").await;
    let epoch = alice.join(room).await["epoch"].clone();
    stack.publish(room, 1).await;
    assert_eq!(alice.messages(1).await[0]["offset"], 1);

    // Heal: 2..=1200 are junk (more than a heal page of 1,000), 1201..=1205
    // good but never published; the next live message (1206) shows the gap.
    stack
        .write_room_entries(room, 2..=1205, |o| o <= 1200)
        .await;
    stack.publish(room, 1).await;
    let got: Vec<u64> = alice.offsets(6).await;
    assert_eq!(
        got,
        (1201..=1206).collect::<Vec<_>>(),
        "heal passes over them"
    );

    // Resync: another run of junk, then 2301..=2303 unpublished. A message
    // of another epoch on the room's channel makes the hub re-read Redis.
    stack
        .write_room_entries(room, 1207..=2303, |o| o <= 2300)
        .await;
    let mut r = stack.redis().await;
    r.publish_room_now(
        &stack.keys().room_channel(room),
        "m99999 0000000000000000 0\n{}",
    )
    .await
    .expect("publish");
    let got: Vec<u64> = alice.offsets(3).await;
    assert_eq!(got, vec![2301, 2302, 2303], "resync passes over them");
    stack.publish(room, 1).await;
    assert_eq!(alice.messages(1).await[0]["offset"], 2304);

    // Recovery from offset 1 streams every good message, then live ones.
    let mut bob = stack.connect(0, "bob").await;
    let joined = bob.join_since(room, &epoch, 1).await;
    assert_eq!(joined["recovered"], true, "{joined}");
    let want: Vec<u64> = (1201..=1206).chain(2301..=2304).collect();
    let got: Vec<u64> = bob.offsets(want.len()).await;
    assert_eq!(got, want, "recovery passes over them");
    stack.publish(room, 1).await;
    assert_eq!(bob.messages(1).await[0]["offset"], 2305);
    assert_eq!(alice.messages(1).await[0]["offset"], 2305);

    // Scrolling back with `history` reaches the first message: a page of
    // junk is not the end of the room.
    let mut seen = Vec::new();
    for h in bob.history_pages(room, 100).await {
        let msgs = h["messages"].as_array().expect("messages");
        seen.splice(0..0, msgs.iter().filter_map(|m| m["offset"].as_u64()));
    }
    let all: Vec<u64> = std::iter::once(1)
        .chain(1201..=1206)
        .chain(2301..=2305)
        .collect();
    assert_eq!(seen, all, "history passes over them");

    // The summarizer reads the whole room.
    let mut conn = stack.redis().await;
    let all = summarizer_worker::summarize::load(
        &chat_core::scripts::Scripts::default(),
        &mut conn,
        &stack.keys(),
        room,
        None,
        None,
    )
    .await
    .expect("load");
    let got: Vec<u64> = all.iter().map(|m| m.offset).collect();
    let want: Vec<u64> = std::iter::once(1)
        .chain(1201..=1206)
        .chain(2301..=2305)
        .collect();
    assert_eq!(got, want, "the summarizer passes over them");
}

/// An offset with no entry at all inside a read is not taken for an entry
/// that did not parse: the heal treats it as trimmed, and the sockets that
/// miss it are closed 1001 to re-join with `since`. An entry past the
/// room's last offset (someone's `XADD *`) does not move the hub past
/// every later message.
#[tokio::test]
async fn a_hole_is_lost_and_an_entry_past_the_last_offset_is_ignored() {
    let stack = Stack::builder().start().await;
    let room = "bad:holes";
    let mut alice = stack.connect(0, "alice").await;
    alice.join(room).await;
    stack.publish(room, 1).await;
    assert_eq!(alice.offsets(1).await, vec![1]);

    // Offsets 2..=8 written, 5 junk, 6 with no entry.
    stack.write_room_entries(room, 2..=4, |_| false).await;
    stack.write_room_entries(room, 5..=5, |_| true).await;
    stack.write_room_entries(room, 7..=8, |_| false).await;
    stack.publish(room, 1).await;
    let (code, frames) = alice.until_closed().await;
    let got: Vec<u64> = frames
        .iter()
        .filter(|f| f["type"] == "message")
        .filter_map(|f| f["offset"].as_u64())
        .collect();
    assert_eq!(code, Some(1001), "closed to re-join, after {got:?}");
    assert_eq!(got, vec![2, 3, 4], "nothing past the hole");

    // A node whose hub resyncs while a foreign entry sits past the last
    // offset delivers what is real and, once the entry is gone, the
    // room's next message. 10 is written unpublished, so the hub is behind
    // and its resync reads 10 and the foreign entry together.
    let mut bob = stack.connect(0, "bob").await;
    bob.join(room).await;
    stack.write_room_entries(room, 10..=10, |_| false).await;
    let k = stack.keys();
    let mut r = stack.redis().await;
    let foreign: String = redis::cmd("XADD")
        .arg(k.room_stream(room))
        .arg("*")
        .arg("junk")
        .arg("1")
        .query_async(&mut r)
        .await
        .expect("xadd");
    r.publish_room_now(&k.room_channel(room), "m99999 0000000000000000 0\n{}")
        .await
        .expect("publish");
    assert_eq!(bob.offsets(1).await, vec![10], "resynced");
    let _: i64 = redis::cmd("XDEL")
        .arg(k.room_stream(room))
        .arg(&foreign)
        .query_async(&mut r)
        .await
        .expect("xdel");
    // The stream's top id stays where the foreign entry put it: back to
    // the last real entry, so that appends work again.
    let top: redis::Value = redis::cmd("XREVRANGE")
        .arg(k.room_stream(room))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut r)
        .await
        .expect("xrevrange");
    let top = chat_core::entry::entries(&top).expect("entries")[0]
        .id
        .clone();
    let _: () = redis::cmd("XSETID")
        .arg(k.room_stream(room))
        .arg(&top)
        .query_async(&mut r)
        .await
        .expect("xsetid");
    stack.publish(room, 1).await;
    assert_eq!(bob.offsets(1).await, vec![11]);
}
