//! `/metrics`: Prometheus text from a maintained exporter, with the counters
//! the operations docs describe, moving with traffic. A test binary of its
//! own: the recorder is process-wide, and here nothing else moves it, so
//! what the traffic must add is checked exactly.

use e2e::*;
use serde_json::json;
use std::time::Duration;

async fn scrape(url: &str) -> String {
    let r = http().get(url).send().await.expect("scrape");
    assert_eq!(r.status(), 200);
    r.text().await.expect("text")
}

/// The summed value of every sample of `name` whose labels contain `labels`.
fn value(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_are_exposed_and_move_with_traffic() {
    let stack = Stack::builder().notifiers(1).summarizers(1).start().await;
    let url = format!("{}/metrics", stack.http(0));
    let before = scrape(&url).await;
    let mut a = stack.connect(0, "alice").await;
    let mut b = stack.connect(0, "bob").await;
    a.join("m").await;
    b.join("m").await;
    stack.add_member("m", "carol").await;
    stack.register_device("carol", "carol-phone").await;
    for i in 0..5 {
        a.send("m", &format!("hello {i}"), &format!("c{i}")).await;
    }
    b.messages(5).await;
    let jobs = submit_summaries(&stack, json!({"rooms": ["m"]})).await;
    summary_finished(
        &stack,
        jobs[0]["job_id"].as_str().expect("id"),
        Duration::from_secs(15),
    )
    .await;
    // The summary is published into the room: a sixth message, delivered
    // to both sockets before anything is counted.
    let seen_a = a.messages(6).await;
    let seen_b = b.messages(1).await;
    assert_eq!(seen_a[5]["offset"], 6);
    assert_eq!(seen_b[0]["offset"], 6);
    stack.settled().await;
    // Gauges are refreshed on the workers' claim cycle.
    let after = wait_until(Duration::from_secs(10), "the group gauges", || async {
        let t = scrape(&url).await;
        t.contains("chat_group_lag{group=\"fanout\"}").then_some(t)
    })
    .await;
    for (name, labels, exactly) in [
        ("chat_frames_in_total", "type=\"send\"", 5.0),
        // The ingress's appends; the summary is the summarizer's.
        ("chat_appends_total", "result=\"stored\"", 5.0),
        // Six messages (five and the summary) to two sockets.
        ("chat_deliveries_total", "", 12.0),
        ("chat_delivery_latency_seconds_count", "", 6.0),
        // Per message on the node: the worker's times came in the header.
        ("chat_delivery_hop_seconds_count", "hop=\"read\"", 6.0),
        ("chat_delivery_hop_seconds_count", "hop=\"publish\"", 6.0),
        ("chat_delivery_hop_seconds_count", "hop=\"receive\"", 6.0),
        // Per delivery: alice's and bob's.
        ("chat_delivery_hop_seconds_count", "hop=\"write\"", 12.0),
        ("chat_delivery_hop_seconds_count", "hop=\"total\"", 12.0),
        ("chat_fanout_published_total", "", 6.0),
        // carol's first push; the rest of her window is pushed at its end.
        ("chat_pushes_total", "outcome=\"dry_run\"", 1.0),
        ("chat_summary_jobs_total", "status=\"done\"", 1.0),
    ] {
        let delta = value(&after, name, labels) - value(&before, name, labels);
        assert_eq!(delta, exactly, "{name}{{{labels}}}");
    }
    assert_eq!(value(&after, "chat_connections", ""), 2.0);
    for family in [
        "# TYPE chat_delivery_latency_seconds histogram",
        "# TYPE chat_appends_total counter",
        "chat_group_pending{group=\"fanout\"}",
    ] {
        assert!(after.contains(family), "missing {family}");
    }
}
