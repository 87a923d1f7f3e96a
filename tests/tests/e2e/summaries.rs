//! Summaries: batch submission over HTTP, job status, the latest summary,
//! publication into the room, duplicate submissions, the automatic trigger,
//! and the extractive fallback without a Gemini key.

use e2e::*;
use e2e::{submit_summaries as submit, summary_finished as finished, summary_status as status};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn chat(stack: &Stack, room: &str, lines: &[(&str, &str)]) {
    for (user, text) in lines {
        stack.say(room, user, text).await;
    }
}

const CHAT: &[(&str, &str)] = &[
    ("ann", "The deploy failed again last night."),
    (
        "bob",
        "Was it the database migration? The migration deploy touched every table.",
    ),
    (
        "ann",
        "Yes, the migration deploy broke the database. I rolled it back.",
    ),
    ("cat", "Nice weather today."),
    ("bob", "Let's rerun the migration deploy on staging first."),
];

#[tokio::test]
async fn without_a_key_the_extractive_summary_is_drawn_from_the_chat_and_published() {
    let stack = Stack::builder().summarizers(1).start().await;
    let mut watcher = stack.connect(0, "watcher").await;
    watcher.join("standup").await;
    chat(&stack, "standup", CHAT).await;
    watcher.messages(CHAT.len()).await;
    let jobs = submit(&stack, json!({"rooms": ["standup"]})).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["room"], "standup");
    let job = jobs[0]["job_id"].as_str().expect("job id").to_owned();
    let s = finished(&stack, &job, Duration::from_secs(15)).await;
    assert_eq!(s["status"], "done", "{s}");
    assert_eq!(s["method"], "extractive");
    assert_eq!(s["attempts"], 1);
    let summary = s["summary"].as_str().expect("summary");
    assert!(
        summary.starts_with("Extractive summary (no language model configured) of 5 messages"),
        "{summary}"
    );
    let body: Vec<&str> = summary.lines().skip(1).collect();
    assert!(!body.is_empty());
    for l in &body {
        let (user, sentence) = l
            .trim_start_matches("- ")
            .split_once(": ")
            .expect("user: sentence");
        assert!(
            CHAT.iter().any(|(u, t)| *u == user && t.contains(sentence)),
            "not from the chat: {l}"
        );
    }
    assert!(summary.contains("migration deploy"));
    assert!(!summary.contains("weather"));
    // Stored as the room's latest, and published into the room.
    let latest: Value = http()
        .get(format!("{}/v1/rooms/standup/summary", stack.http(0)))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("latest")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (latest["method"].clone(), latest["job_id"].clone()),
        (json!("extractive"), json!(job))
    );
    assert_eq!(latest["messages"], 5);
    let m = watcher.messages(1).await.remove(0);
    assert_eq!(
        (m["kind"].clone(), m["user"].clone(), m["offset"].clone()),
        (json!("summary"), json!("summarizer"), json!(6))
    );
    assert_eq!(m["text"], s["summary"]);
}

#[tokio::test]
async fn a_duplicate_submission_returns_the_pending_job() {
    let stack = Stack::builder().start().await; // no summarizer: jobs stay pending
    chat(&stack, "dup", CHAT).await;
    let first = submit(&stack, json!({"rooms": ["dup", "other"]})).await;
    let again = submit(&stack, json!({"rooms": ["dup"]})).await;
    assert_eq!(again[0]["job_id"], first[0]["job_id"]);
    assert_eq!(
        (first[0]["existing"].clone(), again[0]["existing"].clone()),
        (json!(false), json!(true))
    );
    let s = status(&stack, first[0]["job_id"].as_str().expect("id")).await;
    assert_eq!(
        (s["status"].clone(), s["attempts"].clone()),
        (json!("pending"), json!(0))
    );
    // Bad requests.
    let http = http();
    for (body, code) in [
        (json!({"rooms": []}), 400),
        (json!({"rooms": ["bad room"]}), 400),
        (json!({"rooms": ["a"], "since": 5, "until": 1}), 400),
        (json!({"room": "a"}), 400),
    ] {
        let r = http
            .post(format!("{}/v1/summaries", stack.http(0)))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), code, "{body}");
    }
    let r = http
        .get(format!("{}/v1/summaries/nope~00", stack.http(0)))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let r = http
        .post(format!("{}/v1/summaries", stack.http(0)))
        .json(&json!({"rooms": ["a"]}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_job_submitted_by_one_process_runs_on_a_worker_in_another_promptly() {
    let stack = Stack::builder().summarizers(1).start().await;
    chat(&stack, "quick", CHAT).await;
    let jobs = submit(&stack, json!({"rooms": ["quick"]})).await;
    let job = jobs[0]["job_id"].as_str().expect("id").to_owned();
    // From the accepted submission: the worker polls every 100 ms here. A
    // generous bound on a busy machine; the pick-up time itself is measured
    // by bench/, not asserted.
    let t0 = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "the worker to start it",
        || async {
            matches!(
                status(&stack, &job).await["status"].as_str(),
                Some("running" | "done")
            )
            .then_some(())
        },
    )
    .await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "picked up after {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn the_automatic_trigger_fires_once_per_every_messages() {
    let stack = Stack::builder()
        .summarizers(1)
        .streams(|s| s.summarize.every_messages = 5)
        .start()
        .await;
    let mut watcher = stack.connect(0, "watcher").await;
    watcher.join("auto").await;
    let mut summaries = 0;
    for i in 1..=12 {
        chat(
            &stack,
            "auto",
            &[("ann", &format!("update number {i} about the launch plan."))],
        )
        .await;
        let m = watcher.messages(1).await.remove(0);
        assert_eq!(m["kind"], "user", "nothing before its time (message {i})");
        if i % 5 == 0 {
            // Each multiple of 5 queues one summary; it is awaited here so
            // the next multiple finds no job pending (one per room at a time).
            let m = watcher.messages(1).await.remove(0);
            assert_eq!(
                (m["kind"].clone(), m["user"].clone()),
                (json!("summary"), json!("summarizer"))
            );
            summaries += 1;
        }
    }
    stack.settled().await;
    let mut r = stack.redis().await;
    let e: redis::streams::StreamRangeReply =
        redis::AsyncCommands::xrange_all(&mut r, stack.keys().room_stream("auto"))
            .await
            .expect("xrange");
    let in_stream = e
        .ids
        .iter()
        .filter(|e| e.get::<String>("k").as_deref() == Some("summary"))
        .count();
    assert_eq!(
        (summaries, in_stream),
        (2, 2),
        "12 messages, every 5: two automatic summaries"
    );
}

#[tokio::test]
async fn a_threshold_crossed_while_a_job_is_pending_queues_no_second_job() {
    // No summarizer: the first automatic job stays pending.
    let stack = Stack::builder()
        .streams(|s| s.summarize.every_messages = 2)
        .start()
        .await;
    let mut watcher = stack.connect(0, "watcher").await;
    watcher.join("busy").await;
    for i in 1..=6 {
        chat(&stack, "busy", &[("ann", &format!("message {i}."))]).await;
    }
    watcher.messages(6).await;
    stack.settled().await;
    let mut r = stack.redis().await;
    let current: Option<String> =
        redis::AsyncCommands::get(&mut r, stack.keys().room_summary_job("busy"))
            .await
            .expect("get");
    let job = current.expect("one automatic job");
    let keys: Vec<String> =
        redis::AsyncCommands::keys(&mut r, format!("{}*", stack.keys().summary_job("busy", "")))
            .await
            .expect("keys");
    assert_eq!(keys.len(), 1, "three thresholds crossed, one job: {keys:?}");
    assert_eq!(status(&stack, &job).await["status"], "pending");
}
