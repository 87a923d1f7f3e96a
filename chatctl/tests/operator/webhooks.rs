//! Webhooks (docs/protocol.md, "Webhooks") against a local HTTP receiver
//! (wiremock) that fails, times out and answers slowly: signed, filtered by
//! room pattern and event, retried until delivered, dead-lettered after the
//! last attempt, and re-driven once by `chatctl dlq replay`, to the endpoint
//! that failed alone.

use crate::cli::Cli;
use chat_core::config::{Endpoint, EventType, WebhookPolicy};
use e2e::*;
use serde_json::{Value, json};
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const SECRET: &str = "whsec-test-0123456789abcdef";

fn endpoint(name: &str, url: String, rooms: &[&str], events: &[EventType]) -> Endpoint {
    Endpoint {
        name: name.into(),
        url,
        rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
        events: events.to_vec(),
        secret_env: "HOOK_SECRET".into(),
    }
}

fn policy(endpoints: Vec<Endpoint>, attempts: u32, timeout: Duration) -> WebhookPolicy {
    WebhookPolicy {
        attempts,
        backoff: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        timeout,
        claim_idle: Duration::from_secs(60),
        endpoints,
        ..WebhookPolicy::default()
    }
}

/// The requests to `p` that a receiver checking signatures would accept,
/// as (headers we care about, body); panics on a bad signature.
async fn received(server: &MockServer, p: &str) -> Vec<(String, String, Value)> {
    let now = now();
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r: &Request| r.url.path() == p)
        .map(|r| {
            let header = |k: &str| {
                r.headers
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let sig = header("chat-signature");
            assert!(
                webhook_worker::sign::verify(SECRET.as_bytes(), &sig, &r.body, now, 300),
                "a bad signature {sig:?}"
            );
            let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
            assert_eq!(header("chat-webhook-id"), body["id"], "{body}");
            (
                header("chat-webhook-id"),
                header("chat-webhook-attempt"),
                body,
            )
        })
        .collect()
}

#[tokio::test]
async fn webhooks_are_signed_filtered_and_retried_until_a_slow_receiver_takes_them() {
    let server = MockServer::start().await;
    // The first two requests fail; then it answers, slowly (within the timeout).
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_millis(300)))
        .with_priority(2)
        .mount(&server)
        .await;
    let hooks = policy(
        vec![endpoint(
            "app",
            format!("{}/hook", server.uri()),
            &["team:*"],
            &[EventType::Message, EventType::Edit, EventType::Reaction],
        )],
        5,
        Duration::from_secs(2),
    );
    let mut stack = Stack::builder()
        .streams(|s| s.webhooks = hooks)
        .start()
        .await;
    stack.add_webhooker(&[("HOOK_SECRET", SECRET)]).await;
    let mut alice = stack.connect(0, "alice").await;
    alice.join("team:a").await;
    alice.join("other").await;
    let first = alice.send("team:a", "hello", "h1").await;
    alice.send("other", "not for the hook", "o1").await;
    alice
        .request(json!({"type": "edit", "room": "team:a", "offset": 1, "text": "hello!"}))
        .await;
    alice
        .request(json!({"type": "react", "room": "team:a", "offset": 1, "emoji": "🎉"}))
        .await;
    // A delete is not among the endpoint's events.
    alice.send("team:a", "oops", "h2").await;
    alice
        .request(json!({"type": "delete", "room": "team:a", "offset": 4}))
        .await;

    let epoch = first["epoch"].as_str().expect("epoch").to_owned();
    let want: Vec<String> = [1, 2, 3, 4]
        .iter()
        .map(|o| format!("team:a|{epoch}|{o}"))
        .collect();
    // Offset 4 is deleted at once: its shard copy may be gone before the
    // worker reads it (the delete removes its text everywhere), so only
    // 1-3 are sure to be delivered.
    let got = wait_until(
        Duration::from_secs(30),
        "three events delivered",
        || async {
            let all = received(&server, "/hook").await;
            let done = want[..3]
                .iter()
                .all(|w| all.iter().skip(2).any(|(id, _, _)| id == w));
            done.then_some(all)
        },
    )
    .await;
    let ids: Vec<&str> = got.iter().map(|(id, _, _)| id.as_str()).collect();
    // The first event was tried three times (two failures), then the rest in order.
    assert_eq!(ids[..3], [want[0].as_str(); 3], "{ids:?}");
    assert_eq!(got[2].1, "3", "the attempt number");
    assert_eq!(
        ids[2..5],
        [want[0].as_str(), want[1].as_str(), want[2].as_str()],
        "in order, once each: {ids:?}"
    );
    let types: Vec<&str> = got[2..5]
        .iter()
        .map(|(_, _, b)| b["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(types, ["message", "edit", "reaction"]);
    let body = &got[2].2;
    assert_eq!(
        (
            body["room"].as_str(),
            body["offset"].as_u64(),
            body["message"]["text"].as_str()
        ),
        (Some("team:a"), Some(1), Some("hello"))
    );
    wait_until(Duration::from_secs(10), "nothing pending", || async {
        (stack.pending("webhooks").await == 0).then_some(())
    })
    .await;
    let ids: Vec<String> = received(&server, "/hook")
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert!(
        !ids.contains(&format!("team:a|{epoch}|5")),
        "deletes are not among its events: {ids:?}"
    );
    assert!(
        ids.iter().all(|id| id.starts_with("team:a|")),
        "other rooms are not: {ids:?}"
    );
}

#[tokio::test]
async fn a_webhook_that_keeps_timing_out_is_dead_lettered_then_replayed_once_to_that_endpoint() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/ok"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let hooks = policy(
        vec![
            endpoint(
                "slow",
                format!("{}/slow", server.uri()),
                &["*"],
                &EventType::ALL,
            ),
            endpoint(
                "ok",
                format!("{}/ok", server.uri()),
                &["*"],
                &EventType::ALL,
            ),
        ],
        2,
        Duration::from_millis(300),
    );
    let mut stack = Stack::builder()
        .streams(|s| s.webhooks = hooks)
        .start()
        .await;
    stack.add_webhooker(&[("HOOK_SECRET", SECRET)]).await;
    let ack = stack.say("hooks", "bot", "to both").await;
    let id = format!("hooks|{}|1", ack["epoch"].as_str().expect("epoch"));
    let dlq = stack.keys().dead_letter("webhooks");
    wait_until(Duration::from_secs(30), "the dead letter", || async {
        let mut r = stack.redis().await;
        let n: u64 = redis::AsyncCommands::xlen(&mut r, &dlq).await.ok()?;
        (n == 1).then_some(())
    })
    .await;
    assert_eq!(received(&server, "/ok").await.len(), 1);
    assert_eq!(received(&server, "/slow").await.len(), 2, "two attempts");

    let cli = Cli::for_stack(&stack);
    let out = cli
        .run(&["dlq", "list", "--group", "webhooks", "--json"])
        .await;
    out.ok();
    let rows: Vec<Value> = out
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        rows[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("timed out")),
        "{}",
        rows[0]
    );
    assert_eq!(rows[0]["fields"]["w"], "slow");

    // The receiver is fixed; the dead letter is replayed, once.
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let out = cli.run(&["dlq", "replay", "--all"]).await;
    out.ok();
    let again = wait_until(Duration::from_secs(30), "the replayed delivery", || async {
        let got = received(&server, "/slow").await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, id, "the same idempotency key");
    let out = cli.run(&["dlq", "replay", "--all"]).await;
    out.ok();
    wait_until(Duration::from_secs(10), "nothing pending", || async {
        (stack.pending("webhooks").await == 0).then_some(())
    })
    .await;
    assert_eq!(received(&server, "/slow").await.len(), 1, "replayed once");
    assert!(
        received(&server, "/ok").await.is_empty(),
        "the endpoint that took it is not sent it again"
    );
}
