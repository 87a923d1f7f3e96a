//! Push notifications: device registration, who gets a push, collapsing,
//! and the dry-run outbox (no FCM credentials).

use e2e::*;
use redis::AsyncCommands;
use serde_json::{Value, json};
use std::time::Duration;

/// Dry-run pushes recorded on the outbox stream: (user, token, message JSON).
async fn outbox(stack: &Stack) -> Vec<(String, String, Value)> {
    let mut r = stack.redis().await;
    let e: redis::streams::StreamRangeReply = r
        .xrange_all(stack.keys().notify_outbox())
        .await
        .expect("outbox");
    e.ids
        .iter()
        .map(|e| {
            let msg: String = e.get("message").expect("message");
            (
                e.get("user").expect("user"),
                e.get("token").expect("token"),
                serde_json::from_str(&msg).expect("json"),
            )
        })
        .collect()
}

async fn member(stack: &Stack, room: &str, user: &str) {
    stack.add_member(room, user).await;
}

#[tokio::test]
async fn devices_are_registered_capped_moved_and_removed() {
    let stack = Stack::builder()
        .workers(0)
        .streams(|s| s.notify.max_devices_per_user = 3)
        .start()
        .await;
    for i in 0..5 {
        stack.register_device("alice", &format!("tok-{i}")).await;
    }
    let mut r = stack.redis().await;
    let k = stack.keys();
    let tokens: Vec<String> = r
        .zrange(k.user_devices("alice"), 0, -1)
        .await
        .expect("zrange");
    assert_eq!(
        tokens,
        vec!["tok-2", "tok-3", "tok-4"],
        "the least recently seen are dropped"
    );
    let platforms: std::collections::HashMap<String, String> = r
        .hgetall(k.user_device_platforms("alice"))
        .await
        .expect("hgetall");
    assert_eq!(platforms.len(), 3);
    // A device that changes hands moves.
    stack.register_device("bob", "tok-4").await;
    let alice: Vec<String> = r
        .zrange(k.user_devices("alice"), 0, -1)
        .await
        .expect("zrange");
    assert_eq!(alice, vec!["tok-2", "tok-3"]);

    let http = http();
    let base = stack.http(0);
    let alice_jwt = token("alice", &["*"]);
    let r1 = http
        .delete(format!("{base}/v1/devices/tok-3"))
        .bearer_auth(&alice_jwt)
        .send()
        .await
        .expect("delete");
    assert_eq!(r1.status(), 204);
    let r2 = http
        .delete(format!("{base}/v1/devices/tok-4"))
        .bearer_auth(&alice_jwt)
        .send()
        .await
        .expect("delete");
    assert_eq!(r2.status(), 404, "bob's device is not alice's to remove");
    let checks: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http.post(format!("{base}/v1/devices"))
                .bearer_auth(&alice_jwt)
                .json(&json!({"token": "t", "platform": "fridge"})),
            400,
            "bad_request",
        ),
        (
            http.post(format!("{base}/v1/devices"))
                .bearer_auth(&alice_jwt)
                .json(&json!({"token": "", "platform": "ios"})),
            400,
            "bad_request",
        ),
        (
            http.post(format!("{base}/v1/devices"))
                .bearer_auth(&alice_jwt)
                .body("nope"),
            400,
            "bad_request",
        ),
        (
            http.post(format!("{base}/v1/devices"))
                .json(&json!({"token": "t", "platform": "ios"})),
            401,
            "unauthorized",
        ),
        (
            http.post(format!("{base}/v1/devices"))
                .bearer_auth(API_KEY)
                .json(&json!({"token": "t", "platform": "ios"})),
            403,
            "forbidden",
        ),
    ];
    for (req, status, code) in checks {
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status(), status);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"]["code"], code);
    }
}

#[tokio::test]
async fn only_offline_members_get_a_push_and_never_the_sender() {
    let stack = Stack::builder().notifiers(1).start().await;
    // carol is a member by the API, dave joined once and left; both offline.
    member(&stack, "team", "carol").await;
    let mut dave = stack.connect(0, "dave").await;
    dave.join("team").await;
    dave.close().await;
    let mut alice = stack.connect(0, "alice").await;
    alice.join("team").await;
    let mut bob = stack.connect(0, "bob").await;
    bob.join("team").await;
    for u in ["alice", "bob", "carol", "dave"] {
        stack.register_device(u, &format!("{u}-phone")).await;
    }
    // dave's presence is gone once his socket closed.
    let r = stack.redis().await;
    wait_until(Duration::from_secs(5), "dave offline", || {
        let mut r = r.clone();
        let key = stack.keys().room_presence("team");
        async move {
            let m: Vec<String> = r.zrange(key, 0, -1).await.ok()?;
            (!m.iter().any(|m| m.ends_with("|dave"))).then_some(())
        }
    })
    .await;
    alice.send("team", "lunch?", "l1").await;
    stack.settled().await;
    let mut pushed: Vec<String> = outbox(&stack)
        .await
        .into_iter()
        .map(|(u, _, _)| u)
        .collect();
    pushed.sort();
    assert_eq!(
        pushed,
        vec!["carol", "dave"],
        "offline members once each; not bob (online), not alice (sender)"
    );
    let (_, token, msg) = outbox(&stack).await.remove(0);
    assert!(token.ends_with("-phone"));
    let m = &msg["message"];
    assert_eq!(m["notification"]["body"], "alice: lunch?");
    assert_eq!(m["data"]["room"], "team");
    assert_eq!(m["data"]["offset"], "1");
    assert!(
        m["data"]
            .as_object()
            .expect("data")
            .values()
            .all(Value::is_string)
    );
    assert_eq!(m["android"]["collapse_key"], "team");
}

#[tokio::test]
async fn pushes_collapse_per_user_and_room_within_the_window() {
    let stack = Stack::builder()
        .notifiers(1)
        .streams(|s| s.notify.collapse_window = Duration::from_millis(1500))
        .start()
        .await;
    member(&stack, "busy", "carol").await;
    stack.register_device("carol", "carol-phone").await;
    let mut alice = stack.connect(0, "alice").await;
    alice.join("busy").await;
    for i in 1..=5 {
        alice
            .send("busy", &format!("message {i}"), &format!("b{i}"))
            .await;
    }
    // The first message at once; the other four in one push at the window's end.
    let pushes = wait_until(Duration::from_secs(10), "two pushes", || async {
        let o = outbox(&stack).await;
        (o.len() >= 2).then_some(o)
    })
    .await;
    stack.settled().await;
    assert_eq!(
        outbox(&stack).await.len(),
        2,
        "no more than one push per window after the first"
    );
    let first = &pushes[0].2["message"];
    let trailing = &pushes[1].2["message"];
    assert_eq!(first["data"]["count"], "1");
    assert_eq!(first["notification"]["body"], "alice: message 1");
    assert_eq!(trailing["data"]["count"], "4");
    assert_eq!(trailing["notification"]["body"], "alice: message 5");
    assert_eq!(trailing["notification"]["title"], "4 new messages in busy");
    // Another room is collapsed on its own.
    member(&stack, "quiet", "carol").await;
    let mut alice2 = stack.connect(0, "alice").await;
    alice2.join("quiet").await;
    alice2.send("quiet", "hello", "q1").await;
    wait_until(Duration::from_secs(10), "the other room's push", || async {
        (outbox(&stack).await.len() == 3).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_offline_sender_gets_no_push_and_removed_members_get_none_after() {
    let window = Duration::from_millis(800);
    let stack = Stack::builder()
        .notifiers(1)
        .streams(|s| s.notify.collapse_window = window)
        .start()
        .await;
    for u in ["carol", "dave", "erin"] {
        member(&stack, "ops", u).await;
        stack.register_device(u, &format!("{u}-phone")).await;
    }
    // carol is offline too, but it is her own message.
    stack.say("ops", "carol", "deploying").await;
    stack.settled().await;
    let mut users: Vec<String> = outbox(&stack)
        .await
        .into_iter()
        .map(|(u, _, _)| u)
        .collect();
    users.sort();
    assert_eq!(users, vec!["dave", "erin"]);
    // dave is removed: nothing more for him, even once the window is over.
    stack.remove_member("ops", "dave").await;
    // Inside both windows: erin's trailing push comes at its end, and so
    // would dave's if his removal were not honoured (same window, same due
    // pass). Waiting for erin's is waiting past the end of dave's.
    stack.say("ops", "carol", "done").await;
    let pushes = wait_until(Duration::from_secs(15), "erin's trailing push", || async {
        let o = outbox(&stack).await;
        o.iter()
            .any(|(u, _, m)| u == "erin" && m["message"]["notification"]["body"] == "carol: done")
            .then_some(o)
    })
    .await;
    stack.settled().await;
    let dave: Vec<_> = outbox(&stack)
        .await
        .into_iter()
        .filter(|(u, _, _)| u == "dave")
        .collect();
    assert_eq!(dave.len(), 1, "dave got a push after his removal: {dave:?}");
    assert_eq!(pushes.len(), 3, "{pushes:?}");
}

#[tokio::test]
async fn consecutive_pushes_for_a_user_and_room_are_a_window_apart() {
    let window = Duration::from_millis(1000);
    // No notifier yet: nothing takes the trailing push while the scenario
    // is set up, so it happens however slow the machine is.
    let mut stack = Stack::builder()
        .streams(|s| s.notify.collapse_window = window)
        .start()
        .await;
    member(&stack, "race", "carol").await;
    stack.register_device("carol", "carol-phone").await;
    stack.say("race", "alice", "m0").await;
    stack.say("race", "alice", "m1").await;
    // Messages straddling the end of a window, when the trailing push is due
    // but not yet sent: the old schedule must not cause a second push at once.
    let r = stack.redis().await;
    let due_key = stack.keys().notify_due();
    wait_until(
        Duration::from_secs(10),
        "the trailing push to be due",
        || {
            let (mut r, due_key) = (r.clone(), due_key.clone());
            async move {
                let due: Vec<(String, u64)> = r.zrange_withscores(&due_key, 0, -1).await.ok()?;
                let (secs, micros): (u64, u64) =
                    redis::cmd("TIME").query_async(&mut r).await.ok()?;
                let now = secs * 1000 + micros / 1000;
                (due.len() == 1 && due[0].1 < now).then_some(())
            }
        },
    )
    .await;
    stack.say("race", "alice", "m2").await;
    stack.say("race", "alice", "m3").await;
    stack.add_notifier().await;
    let r = stack.redis().await;
    let notify = stack.keys().notify_stream();
    let items: redis::streams::StreamRangeReply =
        wait_until(Duration::from_secs(10), "all four counted", || {
            let mut r = r.clone();
            let notify = notify.clone();
            async move {
                let e: redis::streams::StreamRangeReply = r.xrange_all(&notify).await.ok()?;
                let counted: u64 = e
                    .ids
                    .iter()
                    .filter_map(|e| e.get::<String>("count")?.parse::<u64>().ok())
                    .sum();
                (counted == 4).then_some(e)
            }
        })
        .await;
    let times: Vec<u64> = items
        .ids
        .iter()
        .map(|e| {
            e.id.split('-')
                .next()
                .and_then(|t| t.parse().ok())
                .expect("ms id")
        })
        .collect();
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= window.as_millis() as u64 - 5,
            "pushes {} ms apart: {times:?}",
            w[1] - w[0]
        );
    }
}

#[tokio::test]
async fn a_push_queued_twice_is_sent_once() {
    // What a replayed Redis Cluster outbox does: the same push twice.
    let stack = Stack::builder().notifiers(1).start().await;
    stack.register_device("twice", "twice-phone").await;
    let mut r = stack.redis().await;
    for _ in 0..2 {
        let _: String = redis::cmd("XADD")
            .arg(stack.keys().notify_stream())
            .arg("*")
            .arg(&[
                ("user", "twice"),
                ("room", "dup"),
                ("count", "1"),
                ("sender", "pub"),
                ("preview", "hello"),
                ("offset", "7"),
                ("epoch", "00000000000000ab"),
            ])
            .query_async(&mut r)
            .await
            .expect("xadd");
    }
    stack.settled().await;
    let sent: Vec<_> = outbox(&stack)
        .await
        .into_iter()
        .filter(|(u, _, _)| u == "twice")
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
}

/// Whether `user` has a presence entry in `room`, waited for.
async fn wait_present(stack: &Stack, room: &str, user: &str, present: bool) {
    let r = stack.redis().await;
    let key = stack.keys().room_presence(room);
    let suffix = format!("|{user}");
    wait_until(Duration::from_secs(5), "presence to change", || {
        let (mut r, key, suffix) = (r.clone(), key.clone(), suffix.clone());
        async move {
            let m: Vec<String> = r.zrange(key, 0, -1).await.ok()?;
            (m.iter().any(|m| m.ends_with(&suffix)) == present).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_room_whose_members_were_all_present_pushes_again_once_one_is_not() {
    let stack = Stack::builder().nodes(2).notifiers(1).start().await;
    for u in ["bob", "carol"] {
        stack.register_device(u, &format!("{u}-phone")).await;
    }
    let mut alice = stack.connect(0, "alice").await;
    alice.join("crew").await;
    let mut bob = stack.connect(1, "bob").await;
    bob.join("crew").await;
    wait_present(&stack, "crew", "bob", true).await;
    let marker = stack.keys().room_all_present("crew");
    let mut r = stack.redis().await;

    // Everyone present: no push, and the room is marked until the first
    // presence entry lapses (30 s after its last refresh at most).
    alice.send("crew", "one", "c1").await;
    stack.settled().await;
    assert!(outbox(&stack).await.is_empty());
    let ttl: i64 = r.pttl(&marker).await.expect("pttl");
    assert!(ttl > 0 && ttl <= 30_000, "marker pttl {ttl}");

    // bob leaves (his node, not alice's): the next message pushes to him.
    bob.close().await;
    wait_present(&stack, "crew", "bob", false).await;
    alice.send("crew", "two", "c2").await;
    stack.settled().await;
    let pushed: Vec<String> = outbox(&stack).await.into_iter().map(|p| p.0).collect();
    assert_eq!(pushed, vec!["bob"]);
    assert!(!r.exists::<_, bool>(&marker).await.expect("exists"));

    // bob back: marked again; then carol, offline, becomes a member and is pushed.
    let mut bob = stack.connect(1, "bob").await;
    bob.join("crew").await;
    wait_present(&stack, "crew", "bob", true).await;
    alice.send("crew", "three", "c3").await;
    stack.settled().await;
    assert!(r.exists::<_, bool>(&marker).await.expect("exists"));
    stack.add_member("crew", "carol").await;
    alice.send("crew", "four", "c4").await;
    stack.settled().await;
    let pushed: Vec<String> = outbox(&stack).await.into_iter().map(|p| p.0).collect();
    assert_eq!(
        pushed,
        vec!["bob", "carol"],
        "carol's first, nothing more for bob"
    );
    let m = &outbox(&stack).await[1].2["message"];
    assert_eq!(m["notification"]["body"], "alice: four");
    bob.close().await;
}
