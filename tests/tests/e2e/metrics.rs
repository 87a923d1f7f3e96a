//! `/metrics`: Prometheus text from a maintained exporter, with the counters
//! the operations docs describe, moving with traffic. The recorder is shared
//! by every test in this binary, so movement is checked as "at least".

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
    let r = http()
        .put(format!("{}/v1/rooms/m/members/carol", stack.http(0)))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("member");
    assert_eq!(r.status(), 204);
    stack.register_device("carol", "carol-phone").await;
    for i in 0..5 {
        a.send("m", &format!("hello {i}"), &format!("c{i}")).await;
    }
    b.messages(5).await;
    let jobs = crate::summaries::submit(&stack, json!({"rooms": ["m"]})).await;
    crate::summaries::finished(
        &stack,
        jobs[0]["job_id"].as_str().expect("id"),
        Duration::from_secs(15),
    )
    .await;
    crate::notify::settled(&stack).await;
    // Gauges are refreshed on the workers' claim cycle.
    let after = wait_until(Duration::from_secs(10), "the group gauges", || async {
        let t = scrape(&url).await;
        t.contains("chat_group_lag{group=\"fanout\"}").then_some(t)
    })
    .await;
    for (name, labels, at_least) in [
        ("chat_frames_in_total", "type=\"send\"", 5.0),
        ("chat_appends_total", "result=\"stored\"", 5.0),
        ("chat_deliveries_total", "", 10.0),
        ("chat_delivery_latency_seconds_count", "", 5.0),
        // Per message on the node: the worker's times came in the header.
        ("chat_delivery_hop_seconds_count", "hop=\"read\"", 5.0),
        ("chat_delivery_hop_seconds_count", "hop=\"publish\"", 5.0),
        ("chat_delivery_hop_seconds_count", "hop=\"receive\"", 5.0),
        // Per delivery: alice's and bob's.
        ("chat_delivery_hop_seconds_count", "hop=\"write\"", 10.0),
        ("chat_delivery_hop_seconds_count", "hop=\"total\"", 10.0),
        ("chat_fanout_published_total", "", 5.0),
        ("chat_pushes_total", "outcome=\"dry_run\"", 1.0),
        ("chat_summary_jobs_total", "status=\"done\"", 1.0),
    ] {
        let delta = value(&after, name, labels) - value(&before, name, labels);
        assert!(
            delta >= at_least,
            "{name}{{{labels}}} moved by {delta}, expected at least {at_least}"
        );
    }
    assert!(value(&after, "chat_connections", "") >= 2.0);
    for family in [
        "# TYPE chat_delivery_latency_seconds histogram",
        "# TYPE chat_appends_total counter",
        "chat_group_pending{group=\"fanout\"}",
    ] {
        assert!(after.contains(family), "missing {family}");
    }
    // A worker process serves the same text on its own listener.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let addr = chat_core::metrics::serve("127.0.0.1:0".parse().expect("addr"), shutdown.clone())
        .await
        .expect("serve");
    let worker = scrape(&format!("http://{addr}/metrics")).await;
    assert!(worker.contains("chat_fanout_published_total"));
    shutdown.cancel();
}
