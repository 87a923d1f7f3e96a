//! What an operator's Prometheus and Grafana see. A test binary of its own:
//! the recorder is process-wide, so "at start" means before anything here
//! has counted. Every family exists at start with `# HELP` and the right
//! `# TYPE`, the text parses as Prometheus text, and after a short run every
//! metric the Grafana dashboard (deploy/grafana/chat-dashboard.json)
//! queries is exported.

use chat_core::metrics::{FAMILIES, Kind};
use e2e::*;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

const PROCESS_FAMILIES: [&str; 4] = [
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
];

async fn fetch(url: &str) -> String {
    let r = http().get(url).send().await.expect("scrape");
    assert_eq!(r.status(), 200);
    r.text().await.expect("text")
}

/// `# TYPE` of each family, and the parsed scrape.
fn parse(text: &str) -> (HashMap<String, String>, prometheus_parse::Scrape) {
    let types = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    (types, scrape)
}

#[tokio::test]
async fn every_family_exists_at_start_and_the_dashboards_metrics_after_a_short_run() {
    let mut stack = Stack::builder()
        .notifiers(1)
        .summarizers(1)
        .archive()
        // A webhook endpoint (its series start with the worker), for rooms
        // this test does not use.
        .streams(|s| {
            s.webhooks.endpoints.push(chat_core::config::Endpoint {
                name: "obs".into(),
                url: "http://127.0.0.1:9/hook".into(),
                rooms: vec!["nomatch:*".into()],
                events: chat_core::config::EventType::ALL.to_vec(),
                secret_env: "OBS_HOOK_SECRET".into(),
            })
        })
        .start()
        .await;
    stack
        .add_webhooker(&[("OBS_HOOK_SECRET", "obs-secret-0123456789")])
        .await;
    let url = format!("{}/metrics", stack.http(0));
    let text = fetch(&url).await;
    let (types, scrape) = parse(&text);
    for f in FAMILIES {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        assert_eq!(
            types.get(f.name).map(String::as_str),
            Some(kind),
            "{} at start",
            f.name
        );
        assert!(scrape.docs.contains_key(f.name), "# HELP {}", f.name);
    }
    for name in PROCESS_FAMILIES {
        assert!(scrape.docs.contains_key(name), "# HELP {name}");
        assert!(types.contains_key(name), "# TYPE {name}");
    }
    // Every sample belongs to a family with HELP and TYPE.
    for s in &scrape.samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| s.metric.strip_suffix(suffix))
            .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            .unwrap_or(&s.metric);
        assert!(scrape.docs.contains_key(family), "no HELP for {}", s.metric);
    }
    let build = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "chat_build_info")
        .filter_map(|s| s.labels.get("service"))
        .collect::<BTreeSet<_>>();
    for service in [
        "ingress",
        "fanout-worker",
        "notifier-worker",
        "summarizer-worker",
        "archive-worker",
        "webhook-worker",
    ] {
        assert!(build.contains(service), "chat_build_info for {service}");
    }
    let rss = scrape
        .samples
        .iter()
        .find(|s| s.metric == "process_resident_memory_bytes")
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) => v,
            _ => 0.0,
        });
    assert!(rss.is_some_and(|v| v > 1e6), "rss {rss:?}");

    // A short run: messages delivered, stored and archived.
    let mut a = stack.connect(0, "alice").await;
    let mut b = stack.connect(0, "bob").await;
    a.join("dash").await;
    b.join("dash").await;
    for i in 0..3 {
        a.send("dash", &format!("m{i}"), &format!("c{i}")).await;
    }
    b.messages(3).await;
    stack.wait_archived("dash", 3).await;
    let after = wait_until(Duration::from_secs(15), "the group gauges", || async {
        let t = fetch(&url).await;
        t.contains("chat_group_lag{group=\"archive\"}").then_some(t)
    })
    .await;
    let (_, scrape) = parse(&after);
    let exported: BTreeSet<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    let queried = dashboard_metrics();
    assert!(queried.len() >= 15, "{queried:?}");
    for name in &queried {
        // The parser folds a histogram's _bucket, _sum and _count into one.
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        assert!(
            exported.contains(name.as_str()) || exported.contains(base),
            "the dashboard queries {name}, which /metrics does not export"
        );
    }
}

/// Every metric name in the dashboard's PromQL expressions.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/chat-dashboard.json"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut names = BTreeSet::new();
    for panel in doc["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            // Identifiers that are metric names: ours and the process ones.
            let words = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            for w in words {
                if w.starts_with("chat_") || w.starts_with("process_") {
                    names.insert(w.to_owned());
                }
            }
        }
    }
    names
}
