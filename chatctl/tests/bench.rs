//! `chatctl bench` against a test stack: a small shape, checked end to end.

use e2e::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_every_delivery_checked() {
    let stack = Stack::builder()
        .nodes(2)
        .env("CHAT_RATE_PER_SEC", "1000")
        .env("CHAT_RATE_BURST", "1000")
        .start()
        .await;
    let urls = format!("{},{}", stack.ws_url(0), stack.ws_url(1));
    let pid = std::process::id().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_chatctl"))
            .args([
                "bench",
                "--urls",
                &urls,
                "--secret",
                SECRET,
                "--rooms",
                "3",
                "--members",
                "4",
            ])
            .args([
                "--rate",
                "60",
                "--duration",
                "2s",
                "--warmup",
                "500ms",
                "--drain",
                "3s",
            ])
            .args(["--pids", &format!("stack={pid}")])
            .output()
            .expect("run chatctl bench")
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
    let sent = r["sent"].as_u64().expect("sent");
    // How many a busy machine manages is the bench's figure, not a check:
    // what is checked is that every one sent is accounted for.
    assert!(sent > 0, "nothing sent: {r}");
    assert_eq!(r["expected_deliveries"].as_u64(), Some(sent * 4));
    assert_eq!(r["delivered"], r["expected_deliveries"], "{r}");
    for k in ["lost", "duplicates", "out_of_order", "offset_gaps"] {
        assert_eq!(r[k], 0, "{k}: {r}");
    }
    assert_eq!(r["acked"].as_u64(), Some(sent));
    assert!(r["latency_ms"]["p99"].as_f64().is_some_and(|p| p > 0.0));
    assert_eq!(
        r["latency_ms"]["count"].as_u64(),
        Some(sent * 4),
        "every delivery in the histogram"
    );
    assert!(r["cpu"]["stack"]["seconds"].as_f64().is_some());
}
