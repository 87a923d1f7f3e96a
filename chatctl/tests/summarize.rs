//! `chatctl summarize` against a running stack: a table of the results,
//! exit 0 when every job is done, 1 when one failed.

use e2e::fake_gemini::{FakeGemini, GeminiAnswer};
use e2e::*;
use serde_json::json;
use std::process::Command;

async fn chat(stack: &Stack, room: &str) {
    for i in 0..3 {
        let r = http()
            .post(format!("{}/v1/rooms/{room}/messages", stack.http(0)))
            .bearer_auth(API_KEY)
            .json(&json!({"text": format!("{room} line {i}."), "user": "ann", "kind": "user"}))
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), 200);
    }
}

fn chatctl(url: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chatctl"))
        .args([
            "summaries",
            "submit",
            "--url",
            url,
            "--api-key",
            API_KEY,
            "--timeout",
            "60s",
        ])
        .args(extra)
        .output()
        .expect("run chatctl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summarize_prints_a_table_and_exits_by_outcome() {
    let fake = FakeGemini::start("cli-key-0123456789").await;
    let stack = Stack::builder()
        .env("CHAT_GEMINI_API_KEY", "cli-key-0123456789")
        .env("CHAT_GEMINI_ENDPOINT", &fake.endpoint())
        .env("CHAT_GEMINI_RPM", "6000")
        .summarizers(1)
        .start()
        .await;
    for room in ["alpha", "beta", "gamma"] {
        chat(&stack, room).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rooms.txt");
    std::fs::write(&file, "# rooms\nbeta\n\ngamma\n").expect("write");
    let url = stack.http(0);
    let out = tokio::task::spawn_blocking(move || {
        chatctl(
            &url,
            &[
                "--room",
                "alpha",
                "--rooms-file",
                file.to_str().expect("path"),
            ],
        )
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}: {text}", out.status);
    for room in ["alpha", "beta", "gamma"] {
        let row = text
            .lines()
            .find(|l| l.starts_with(room))
            .unwrap_or_else(|| panic!("no row for {room}: {text}"));
        assert!(row.contains(" done ") && row.contains("gemini:"), "{row}");
    }
    // One failing room: exit status 1, the row says why.
    fake.answer_when_prompt_contains("delta line", GeminiAnswer::Status(400))
        .await;
    chat(&stack, "delta").await;
    let url = stack.http(0);
    let out =
        tokio::task::spawn_blocking(move || chatctl(&url, &["--room", "alpha", "--room", "delta"]))
            .await
            .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("delta"))
        .expect("delta row");
    assert!(row.contains(" failed ") && row.contains("400"), "{row}");
}
