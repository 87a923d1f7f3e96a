//! Pushes through FCM HTTP v1 for real, against the local fake of FCM and
//! Google's token endpoint: exactly one push per offline member, FCM's error
//! answers, access-token reuse and refresh, and two notifiers sharing the
//! work. (A notifier killed mid-send, and one drained by SIGTERM, are
//! processes in notifier-worker/tests/process.rs.)

use chat_core::jwt::testkeys::{RSA_PRIVATE_PEM, RSA_PUBLIC_PEM};
use e2e::fake_fcm::{FakeFcm, FakeResponse};
use e2e::*;
use redis::AsyncCommands;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const PROJECT: &str = "chat-test";
const EMAIL: &str = "push@chat-test.iam.gserviceaccount.com";

/// A fake FCM and a stack whose notifiers use it.
async fn with_fcm(
    notifiers: usize,
    f: impl FnOnce(StackBuilder) -> StackBuilder,
) -> (FakeFcm, Stack, tempfile::TempDir) {
    let fake = FakeFcm::start(RSA_PUBLIC_PEM, EMAIL, PROJECT).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("service-account.json");
    std::fs::write(&path, fake.service_account_json(RSA_PRIVATE_PEM))
        .expect("write service account");
    let builder = Stack::builder()
        .env(
            "CHAT_FCM_SERVICE_ACCOUNT",
            path.to_str().expect("utf-8 path"),
        )
        .env("CHAT_FCM_ENDPOINT", &fake.endpoint())
        .notifiers(notifiers);
    let stack = f(builder).start().await;
    (fake, stack, dir)
}

async fn member(stack: &Stack, room: &str, user: &str) {
    stack.add_member(room, user).await;
}

async fn say(stack: &Stack, room: &str, text: &str) {
    stack.say(room, "alice", text).await;
}

async fn devices(stack: &Stack, user: &str) -> Vec<String> {
    let mut r = stack.redis().await;
    r.zrange(stack.keys().user_devices(user), 0, -1)
        .await
        .expect("zrange")
}

#[tokio::test]
async fn an_offline_member_gets_exactly_one_push_through_fcm() {
    let (fake, stack, _dir) = with_fcm(1, |b| b).await;
    member(&stack, "team", "carol").await;
    stack.register_device("carol", "carol-phone").await;
    let mut alice = stack.connect(0, "alice").await;
    alice.join("team").await;
    stack.register_device("alice", "alice-phone").await;
    alice.send("team", "standup in 5", "s1").await;
    wait_until(Duration::from_secs(10), "carol's push", || async {
        (!fake.sent_to("carol-phone").is_empty()).then_some(())
    })
    .await;
    stack.settled().await;
    let sent = fake.sent();
    assert_eq!(sent.len(), 1, "one push, to carol only: {sent:?}");
    let m = &sent[0].body;
    assert_eq!(m["token"], "carol-phone");
    assert_eq!(m["notification"]["title"], "New message in team");
    assert_eq!(m["notification"]["body"], "alice: standup in 5");
    assert_eq!(
        m["data"],
        json!({"room": "team", "offset": "1", "epoch": m["data"]["epoch"], "count": "1", "sender": "alice", "unread": "1"})
    );
    // The badge: carol's unread messages over all her rooms.
    assert_eq!(m["apns"]["payload"]["aps"]["badge"], 1);
    assert!(m["data"]["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(m["android"]["collapse_key"], "team");
    assert_eq!(m["apns"]["headers"]["apns-collapse-id"], "team");
    assert_eq!(fake.token_requests(), 1);
}

#[tokio::test]
async fn fcm_errors_remove_or_keep_the_token_and_are_not_retried() {
    let (fake, stack, _dir) = with_fcm(1, |b| b).await;
    let cases = [
        ("u-unreg", FakeResponse::Unregistered, false),
        ("u-badtoken", FakeResponse::InvalidToken, false),
        ("u-payload", FakeResponse::InvalidArgument, true),
        ("u-mismatch", FakeResponse::SenderIdMismatch, true),
        ("u-thirdparty", FakeResponse::ThirdPartyAuthError, true),
    ];
    for (user, answer, _) in &cases {
        member(&stack, "errs", user).await;
        let device = format!("{user}-device");
        stack.register_device(user, &device).await;
        fake.fail_token(&device, answer.clone()).await;
    }
    say(&stack, "errs", "hello").await;
    stack.settled().await;
    assert_eq!(
        fake.send_attempts(),
        cases.len(),
        "each answered once, none retried"
    );
    assert!(fake.sent().is_empty());
    for (user, _, kept) in &cases {
        let d = devices(&stack, user).await;
        assert_eq!(
            !d.is_empty(),
            *kept,
            "{user}: token kept = {kept}, devices now {d:?}"
        );
    }
}

#[tokio::test]
async fn quota_and_server_errors_are_retried_honouring_retry_after_without_blocking_others() {
    let (fake, stack, _dir) = with_fcm(1, |b| b).await;
    for u in ["slow", "fast"] {
        member(&stack, "retry", u).await;
        stack.register_device(u, &format!("{u}-device")).await;
    }
    fake.fail_token(
        "slow-device",
        FakeResponse::QuotaExceeded {
            retry_after: Some(1),
        },
    )
    .await;
    let t0 = Instant::now();
    say(&stack, "retry", "hello").await;
    wait_until(Duration::from_secs(10), "fast's push", || async {
        (!fake.sent_to("fast-device").is_empty()).then_some(())
    })
    .await;
    let fast_at = fake.sent_to("fast-device")[0].at;
    // The quota clears: the retry (after the 1 s Retry-After) succeeds.
    wait_until(Duration::from_secs(5), "a second attempt", || async {
        (fake.send_attempts() >= 3).then_some(())
    })
    .await;
    fake.clear_failures();
    wait_until(Duration::from_secs(10), "slow's push", || async {
        (!fake.sent_to("slow-device").is_empty()).then_some(())
    })
    .await;
    let slow_at = fake.sent_to("slow-device")[0].at;
    assert!(
        slow_at.duration_since(t0) >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    // By order, not by the clock: fast went out before slow's retry could.
    assert!(
        fast_at < slow_at,
        "a throttled user does not hold others back"
    );
    assert_eq!(fake.sent_to("slow-device").len(), 1);

    // 500 and 503 are retried too.
    fake.fail_next(1, FakeResponse::Internal).await;
    fake.fail_next(1, FakeResponse::Unavailable { retry_after: None })
        .await;
    let before = fake.send_attempts();
    say(&stack, "retry2", "x").await; // nobody to push to: no attempts
    member(&stack, "retry3", "slow").await;
    say(&stack, "retry3", "again").await;
    wait_until(
        Duration::from_secs(10),
        "the push after two server errors",
        || async { (fake.sent_to("slow-device").len() == 2).then_some(()) },
    )
    .await;
    assert_eq!(fake.send_attempts() - before, 3, "500, 503, then success");
    stack.settled().await;
}

#[tokio::test]
async fn the_access_token_is_reused_and_refreshed_after_expiry_and_after_a_401() {
    let (fake, stack, _dir) = with_fcm(1, |b| b).await;
    fake.set_access_token_ttl(3);
    for room in ["a", "b", "c", "d"] {
        member(&stack, room, "carol").await;
    }
    stack.register_device("carol", "carol-phone").await;
    let pushes = |n: usize| {
        let fake = &fake;
        async move {
            wait_until(Duration::from_secs(10), "pushes", || async {
                (fake.sent_to("carol-phone").len() == n).then_some(())
            })
            .await
        }
    };
    say(&stack, "a", "1").await;
    pushes(1).await;
    say(&stack, "b", "2").await;
    pushes(2).await;
    assert_eq!(fake.token_requests(), 1, "reused while valid");
    // Refreshed halfway through a short-lived token's life (3 s): once the
    // token the fake issued is 1.6 s old, the notifier's copy (fetched
    // before the fake issued it) is past its half-life.
    wait_until(
        Duration::from_secs(10),
        "the token past half its life",
        || async { (fake.latest_token_age()? >= Duration::from_millis(1600)).then_some(()) },
    )
    .await;
    say(&stack, "c", "3").await;
    pushes(3).await;
    assert_eq!(fake.token_requests(), 2, "refreshed before it expired");
    // FCM refuses the token (revoked): fetched again, and the push still goes.
    fake.revoke_access_tokens();
    say(&stack, "d", "4").await;
    pushes(4).await;
    assert_eq!(fake.token_requests(), 3, "refreshed once after the 401");
}

#[tokio::test]
async fn two_notifiers_share_the_work_and_each_push_is_sent_once() {
    let (fake, stack, _dir) = with_fcm(2, |b| b).await;
    let users: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    for u in &users {
        member(&stack, "crowd", u).await;
        stack.register_device(u, &format!("{u}-device")).await;
    }
    say(&stack, "crowd", "all hands").await;
    wait_until(Duration::from_secs(15), "thirty pushes", || async {
        (fake.sent().len() >= 30).then_some(())
    })
    .await;
    stack.settled().await;
    assert_eq!(fake.sent().len(), 30);
    for u in &users {
        assert_eq!(fake.sent_to(&format!("{u}-device")).len(), 1, "{u}");
    }
}

#[tokio::test]
async fn work_delivered_too_often_or_malformed_goes_to_the_dead_letter_stream() {
    let (fake, stack, _dir) = with_fcm(1, |b| {
        b.streams(|s| {
            s.notify.claim_idle = Duration::from_secs(1);
            s.notify.max_deliveries = 1;
        })
    })
    .await;
    member(&stack, "down", "carol").await;
    stack.register_device("carol", "carol-phone").await;
    // FCM keeps asking for a long wait: the item is left for redelivery, and
    // after max_deliveries it is dead-lettered instead of retried forever.
    fake.fail_token(
        "carol-phone",
        FakeResponse::Unavailable {
            retry_after: Some(3600),
        },
    )
    .await;
    say(&stack, "down", "anyone?").await;
    let mut r = stack.redis().await;
    let notify = stack.keys().notify_stream();
    let _: String = r
        .xadd(&notify, "*", &[("user", "x"), ("junk", "1")])
        .await
        .expect("xadd junk");
    let dlq = stack.keys().dead_letter("notifier");
    let reasons: Vec<String> = wait_until(Duration::from_secs(20), "two dead letters", || {
        let mut r = r.clone();
        let dlq = dlq.clone();
        async move {
            let e: redis::streams::StreamRangeReply = r.xrange_all(&dlq).await.ok()?;
            let mut reasons: Vec<String> = e.ids.iter().filter_map(|e| e.get("reason")).collect();
            reasons.sort();
            (reasons.len() == 2).then_some(reasons)
        }
    })
    .await;
    assert_eq!(reasons, vec!["malformed", "max_deliveries"]);
    stack.settled().await;
    assert!(fake.sent().is_empty());
    assert_eq!(
        devices(&stack, "carol").await,
        vec!["carol-phone"],
        "a server error keeps the token"
    );
}

#[tokio::test]
async fn a_redelivered_item_already_sent_is_not_sent_again() {
    let (fake, mut stack, _dir) = with_fcm(0, |b| {
        b.streams(|s| s.notify.claim_idle = Duration::from_secs(1))
    })
    .await;
    member(&stack, "once", "carol").await;
    stack.register_device("carol", "carol-phone").await;
    let mut r = stack.redis().await;
    let k = stack.keys();
    let _: redis::RedisResult<()> = r
        .xgroup_create_mkstream(k.notify_stream(), "notifier", "0")
        .await;
    say(&stack, "once", "hi").await;
    // A notifier read the item, sent it (recorded done), and died before the ack.
    let item: String = wait_until(Duration::from_secs(10), "the work item", || {
        let mut r = r.clone();
        let stream = k.notify_stream();
        async move {
            let opts = redis::streams::StreamReadOptions::default()
                .group("notifier", "crashed")
                .count(10);
            let reply: redis::streams::StreamReadReply =
                r.xread_options(&[&stream], &[">"], &opts).await.ok()?;
            let e = reply.keys.first().and_then(|k| k.ids.first())?;
            let field = |k: &str| e.get::<String>(k);
            // Send state is kept per push (user, room, latest message).
            Some(notifier_worker::work::push_id(
                &field("user")?,
                &field("room")?,
                &field("epoch")?,
                field("offset")?.parse().ok()?,
            ))
        }
    })
    .await;
    let _: () = r
        .hset(k.push_sent(&item), "carol-phone", "done")
        .await
        .expect("hset");
    stack.add_notifier().await;
    stack.settled().await;
    assert!(fake.sent().is_empty(), "already sent: not sent again");
    assert_eq!(fake.send_attempts(), 0);
}

#[tokio::test]
async fn a_404_that_is_not_unregistered_keeps_the_token() {
    // A service account for a project FCM does not know: every send is a 404
    // without UNREGISTERED, which must not cost users their devices.
    let fake = FakeFcm::start(RSA_PUBLIC_PEM, EMAIL, PROJECT).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sa.json");
    let mut sa: Value =
        serde_json::from_str(&fake.service_account_json(RSA_PRIVATE_PEM)).expect("json");
    sa["project_id"] = json!("some-other-project");
    let sa = sa.to_string();
    std::fs::write(&path, sa).expect("write");
    let stack = Stack::builder()
        .env("CHAT_FCM_SERVICE_ACCOUNT", path.to_str().expect("path"))
        .env("CHAT_FCM_ENDPOINT", &fake.endpoint())
        .streams(|s| s.notify.claim_idle = Duration::from_secs(1))
        .notifiers(1)
        .start()
        .await;
    member(&stack, "lost", "carol").await;
    stack.register_device("carol", "carol-phone").await;
    say(&stack, "lost", "hello?").await;
    // Tried, left pending, tried again on redelivery.
    wait_until(Duration::from_secs(15), "two attempts", || async {
        (fake.send_attempts() >= 2).then_some(())
    })
    .await;
    assert_eq!(devices(&stack, "carol").await, vec!["carol-phone"]);
    assert!(fake.sent().is_empty());
}
