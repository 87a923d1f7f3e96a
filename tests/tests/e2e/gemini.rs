//! Summaries through Gemini `generateContent`, against the local fake:
//! batches, each error retried or failed with attempts counted, blocked
//! prompts, map-reduce over long histories, and workers that never run the
//! same job twice at once.

use e2e::fake_gemini::{FakeGemini, GeminiAnswer};
use e2e::*;
use e2e::{submit_summaries as submit, summary_finished as finished};
use serde_json::{Value, json};
use std::time::Duration;

const KEY: &str = "test-gemini-key-0123456789";

async fn with_gemini(
    summarizers: usize,
    f: impl FnOnce(StackBuilder) -> StackBuilder,
) -> (FakeGemini, Stack) {
    let fake = FakeGemini::start(KEY).await;
    let b = Stack::builder()
        .env("CHAT_GEMINI_API_KEY", KEY)
        .env("CHAT_GEMINI_ENDPOINT", &fake.endpoint())
        .env("CHAT_GEMINI_MODEL", "gemini-test")
        .env("CHAT_GEMINI_RPM", "6000")
        .summarizers(summarizers);
    let stack = f(b).start().await;
    (fake, stack)
}

async fn chat(stack: &Stack, room: &str, n: usize) {
    for i in 0..n {
        stack
            .say(
                room,
                &format!("u{}", i % 3),
                &format!("{room} line {i} about the release."),
            )
            .await;
    }
}

async fn one(stack: &Stack, room: &str) -> Value {
    let jobs = submit(stack, json!({"rooms": [room]})).await;
    let id = jobs[0]["job_id"].as_str().expect("id").to_owned();
    finished(stack, &id, Duration::from_secs(30)).await
}

#[tokio::test]
async fn a_batch_of_twenty_rooms_all_reach_done_stored_and_published() {
    let (fake, stack) = with_gemini(1, |b| b.env("CHAT_SUMMARIZER_CONCURRENCY", "4")).await;
    let rooms: Vec<String> = (0..20).map(|i| format!("batch-{i}")).collect();
    let mut watcher = stack.connect(0, "watcher").await;
    for r in &rooms {
        watcher.join(r).await;
    }
    for r in &rooms {
        chat(&stack, r, 3).await;
    }
    watcher.messages(60).await;
    let jobs = submit(&stack, json!({"rooms": rooms})).await;
    assert_eq!(jobs.len(), 20);
    for j in &jobs {
        let s = finished(
            &stack,
            j["job_id"].as_str().expect("id"),
            Duration::from_secs(30),
        )
        .await;
        let room = j["room"].as_str().expect("room");
        assert_eq!(s["status"], "done", "{s}");
        assert_eq!(s["method"], "gemini:gemini-test");
        let summary = s["summary"].as_str().expect("summary");
        // Derived by the fake from the prompt: the transcript's heading and last line.
        assert!(
            summary.starts_with("Summary of 4 lines: Chat transcript:"),
            "{summary}"
        );
        assert!(
            summary.ends_with(&format!("u2: {room} line 2 about the release.")),
            "{summary}"
        );
        let latest: Value = http()
            .get(format!("{}/v1/rooms/{room}/summary", stack.http(0)))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("latest")
            .json()
            .await
            .expect("json");
        assert_eq!(latest["summary"], s["summary"]);
    }
    let published = watcher.messages(20).await;
    assert!(
        published
            .iter()
            .all(|m| m["kind"] == "summary" && m["user"] == "summarizer")
    );
    assert_eq!(fake.call_count(), 20);
    let call = &fake.calls()[0];
    assert_eq!(call.model, "gemini-test");
    assert!(call.body["generationConfig"]["maxOutputTokens"].is_number());
    assert!(!call.system.is_empty(), "a system instruction is sent");
    assert!(!fake.key_in_url_seen(), "the key never goes in the URL");
}

#[tokio::test]
async fn transient_errors_are_retried_and_permanent_ones_fail_with_attempts_counted() {
    // One call per job attempt here, so the job's own retries are what is counted.
    let (fake, stack) = with_gemini(1, |b| {
        b.env("CHAT_SUMMARY_MAX_ATTEMPTS", "3")
            .env("CHAT_GEMINI_CALL_ATTEMPTS", "1")
    })
    .await;
    // Transient, then a success: retried, attempts counted.
    for (room, answer) in [
        (
            "t429",
            GeminiAnswer::ResourceExhausted {
                retry_delay: Some("1s"),
            },
        ),
        ("t500", GeminiAnswer::Status(500)),
        ("t503", GeminiAnswer::Status(503)),
        ("t504", GeminiAnswer::Status(504)),
    ] {
        chat(&stack, room, 2).await;
        fake.answer_next(1, answer).await;
        let s = one(&stack, room).await;
        assert_eq!(
            (s["status"].clone(), s["attempts"].clone()),
            (json!("done"), json!(2)),
            "{room}: {s}"
        );
    }
    // Always failing with a transient error: failed after the attempts allowed.
    chat(&stack, "always503", 2).await;
    fake.answer_when_prompt_contains("always503 line", GeminiAnswer::Status(503))
        .await;
    let s = one(&stack, "always503").await;
    assert_eq!(
        (s["status"].clone(), s["attempts"].clone()),
        (json!("failed"), json!(3)),
        "{s}"
    );
    assert!(s["error"].as_str().is_some_and(|e| e.contains("503")));
    // Permanent: one attempt, no retry.
    for (room, code) in [("p400", 400u16), ("p403", 403), ("p404", 404)] {
        chat(&stack, room, 2).await;
        fake.answer_when_prompt_contains(&format!("{room} line"), GeminiAnswer::Status(code))
            .await;
        let before = fake.call_count();
        let s = one(&stack, room).await;
        assert_eq!(
            (s["status"].clone(), s["attempts"].clone()),
            (json!("failed"), json!(1)),
            "{room}: {s}"
        );
        assert_eq!(fake.call_count() - before, 1, "{room} not retried");
        // apalis reschedules a failed task (its `scheduled` set); this one
        // was settled as dead instead, so no retry is coming.
        let id = s["job_id"].as_str().expect("job_id");
        wait_until(
            Duration::from_secs(10),
            "apalis to settle the job",
            || async {
                let place = queue_place(&stack, id).await;
                (place == ["dead"]).then_some(())
            },
        )
        .await;
    }
}

/// The apalis sets and lists that hold the task `job_id` (our job id is
/// its task id).
async fn queue_place(stack: &Stack, job_id: &str) -> Vec<&'static str> {
    let q = chat_jobs::queue_config(&stack.keys());
    let mut r = stack.jobs_redis().await;
    let (dead, done, scheduled, active): (bool, bool, Option<f64>, Option<i64>) = redis::pipe()
        .sismember(q.dead_jobs_set(), job_id)
        .sismember(q.done_jobs_set(), job_id)
        .zscore(q.scheduled_jobs_set(), job_id)
        .cmd("LPOS")
        .arg(q.active_jobs_list())
        .arg(job_id)
        .query_async(&mut r)
        .await
        .expect("apalis keys");
    let places = [
        ("dead", dead),
        ("done", done),
        ("scheduled", scheduled.is_some()),
        ("active", active.is_some()),
    ];
    places.iter().filter(|p| p.1).map(|p| p.0).collect()
}

#[tokio::test]
async fn a_429_is_retried_within_the_call_after_its_retry_delay() {
    let (fake, stack) = with_gemini(1, |b| b).await;
    chat(&stack, "quota", 2).await;
    fake.answer_next(
        1,
        GeminiAnswer::ResourceExhausted {
            retry_delay: Some("3s"),
        },
    )
    .await;
    let s = one(&stack, "quota").await;
    assert_eq!(
        (s["status"].clone(), s["attempts"].clone()),
        (json!("done"), json!(1)),
        "{s}"
    );
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert!(
        calls[1].at - calls[0].at >= Duration::from_secs(3),
        "RetryInfo honoured: {:?}",
        calls[1].at - calls[0].at
    );
}

#[tokio::test]
async fn a_window_limits_the_messages_and_long_room_names_still_publish() {
    let (fake, stack) = with_gemini(1, |b| b).await;
    let room = format!("long-{}", "r".repeat(100));
    let mut watcher = stack.connect(0, "watcher").await;
    watcher.join(&room).await;
    chat(&stack, &room, 6).await;
    let msgs = watcher.messages(6).await;
    let since = msgs[2]["ts"].as_u64().expect("ts");
    let until = msgs[4]["ts"].as_u64().expect("ts");
    let jobs = submit(
        &stack,
        json!({"rooms": [room], "since": since, "until": until}),
    )
    .await;
    let s = finished(
        &stack,
        jobs[0]["job_id"].as_str().expect("id"),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(s["status"], "done");
    let prompt = &fake.calls()[0].prompt;
    assert!(
        prompt.contains("line 2") && prompt.contains("line 4"),
        "{prompt}"
    );
    assert!(
        !prompt.contains("line 1 ") && !prompt.contains("line 5 "),
        "outside the window: {prompt}"
    );
    // Two summaries of the same long-named room, within the dedup window: both published.
    let again = submit(&stack, json!({"rooms": [room]})).await;
    finished(
        &stack,
        again[0]["job_id"].as_str().expect("id"),
        Duration::from_secs(30),
    )
    .await;
    let published = watcher.messages(2).await;
    assert!(
        published.iter().all(|m| m["kind"] == "summary"),
        "{published:?}"
    );
}

#[tokio::test]
async fn a_blocked_prompt_or_answer_fails_once_and_max_tokens_is_kept_as_truncated() {
    let (fake, stack) = with_gemini(1, |b| b).await;
    let cases: Vec<(&str, GeminiAnswer, &str)> = vec![
        (
            "blocked",
            GeminiAnswer::PromptBlocked("SAFETY"),
            "prompt blocked: SAFETY",
        ),
        ("safety", GeminiAnswer::Finish("SAFETY"), "SAFETY"),
        (
            "recitation",
            GeminiAnswer::Finish("RECITATION"),
            "RECITATION",
        ),
        ("blocklist", GeminiAnswer::Finish("BLOCKLIST"), "BLOCKLIST"),
        (
            "prohibited",
            GeminiAnswer::Finish("PROHIBITED_CONTENT"),
            "PROHIBITED_CONTENT",
        ),
        ("spii", GeminiAnswer::Finish("SPII"), "SPII"),
    ];
    for (room, answer, reason) in cases {
        chat(&stack, room, 2).await;
        fake.answer_when_prompt_contains(&format!("{room} line"), answer)
            .await;
        let before = fake.call_count();
        let s = one(&stack, room).await;
        assert_eq!(
            (s["status"].clone(), s["attempts"].clone()),
            (json!("failed"), json!(1)),
            "{room}: {s}"
        );
        assert!(
            s["error"].as_str().is_some_and(|e| e.contains(reason)),
            "{room}: {s}"
        );
        assert_eq!(fake.call_count() - before, 1, "{room}: not retried");
    }
    chat(&stack, "long", 2).await;
    fake.answer_when_prompt_contains("long line", GeminiAnswer::MaxTokens)
        .await;
    let s = one(&stack, "long").await;
    assert_eq!(
        (s["status"].clone(), s["truncated"].clone()),
        (json!("done"), json!(true)),
        "{s}"
    );
}

#[tokio::test]
async fn a_history_over_the_budget_is_summarized_map_reduce() {
    let (fake, stack) = with_gemini(1, |b| b.env("CHAT_SUMMARY_INPUT_BUDGET", "600")).await;
    chat(&stack, "big", 60).await; // about 2,400 characters of transcript
    let s = one(&stack, "big").await;
    assert_eq!(s["status"], "done", "{s}");
    let calls = fake.calls();
    assert!(
        calls.len() >= 4,
        "several chunks and a combining call: {}",
        calls.len()
    );
    let (last, parts) = calls.split_last().expect("calls");
    assert!(
        parts.iter().all(|c| c.prompt.starts_with("Part ")),
        "map calls summarize parts"
    );
    assert!(
        parts.iter().all(|c| c.prompt.chars().count() <= 600 + 40),
        "each chunk within the budget"
    );
    assert!(
        last.prompt.starts_with("Partial summaries"),
        "the reduce call combines: {}",
        last.prompt
    );
    assert_eq!(
        s["summary"].as_str(),
        Some(e2e::fake_gemini::derived_summary(&last.prompt).as_str())
    );
}

#[tokio::test]
async fn two_workers_never_run_the_same_job() {
    let (fake, stack) = with_gemini(2, |b| b).await;
    fake.set_delay(Duration::from_millis(200));
    let rooms: Vec<String> = (0..10).map(|i| format!("dual-{i}")).collect();
    for r in &rooms {
        chat(&stack, r, 2).await;
    }
    let jobs = submit(&stack, json!({"rooms": rooms})).await;
    for j in &jobs {
        let s = finished(
            &stack,
            j["job_id"].as_str().expect("id"),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(s["status"], "done");
        assert_eq!(s["attempts"], 1);
    }
    let calls = fake.calls();
    for r in &rooms {
        let n = calls
            .iter()
            .filter(|c| c.prompt.contains(&format!("{r} line 0")))
            .count();
        assert_eq!(n, 1, "{r} summarized once");
    }
}

#[tokio::test]
async fn requests_are_paced_to_the_requests_per_minute_limit() {
    // 120 per minute: one start every 500 ms at most, however many jobs run.
    let (fake, stack) = with_gemini(1, |b| {
        b.env("CHAT_GEMINI_RPM", "120")
            .env("CHAT_SUMMARIZER_CONCURRENCY", "4")
    })
    .await;
    let rooms: Vec<String> = (0..4).map(|i| format!("paced-{i}")).collect();
    for r in &rooms {
        chat(&stack, r, 2).await;
    }
    let jobs = submit(&stack, json!({"rooms": rooms})).await;
    for j in &jobs {
        assert_eq!(
            finished(
                &stack,
                j["job_id"].as_str().expect("id"),
                Duration::from_secs(30)
            )
            .await["status"],
            "done"
        );
    }
    let mut at: Vec<std::time::Instant> = fake.calls().iter().map(|c| c.at).collect();
    at.sort();
    assert_eq!(at.len(), 4);
    // 120 a minute is one every 500 ms: four calls span at least 1.5 s as
    // paced, less what the receiving end's clock jitters on a busy machine.
    // Unpaced, the four (concurrency 4) would come together.
    let span = at[3] - at[0];
    assert!(
        span >= Duration::from_millis(1300),
        "four calls in {span:?}"
    );
    for w in at.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(250),
            "calls {:?} apart",
            w[1] - w[0]
        );
    }
}
