//! The per-hop breakdown of `chatctl bench`: the ingress nodes' histograms
//! `chat_delivery_hop_seconds{hop}` (see ingress/src/hops.rs) scraped before
//! and after the measured window, summed over the nodes, and read as
//! quantiles; and the client-side p99 per 100 ms window, which tells a
//! periodic tail (a timer, a sweep) from queueing.

use chat_core::metrics::HOP_METRIC;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The hops in delivery order (`total` is not one of them).
pub const HOPS: [&str; 4] = ["read", "publish", "receive", "write"];

/// Cumulative bucket counts per hop: `hop -> [(le, count)]`, summed over nodes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Buckets(BTreeMap<String, Vec<(f64, f64)>>);

/// Reads the hop buckets from a Prometheus text exposition.
pub fn parse(text: &str, into: &mut Buckets) {
    let prefix = format!("{HOP_METRIC}_bucket{{");
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let Ok(count) = value.trim().parse::<f64>() else {
            continue;
        };
        let (mut hop, mut le) = (None, None);
        for kv in labels.split(',') {
            match kv.split_once('=') {
                Some(("hop", v)) => hop = Some(v.trim_matches('"')),
                Some(("le", v)) => le = Some(v.trim_matches('"')),
                _ => {}
            }
        }
        let (Some(hop), Some(le)) = (hop, le) else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            }
        };
        let buckets = into.0.entry(hop.to_owned()).or_default();
        match buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += count,
            None => {
                buckets.push((le, count));
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }
}

/// A node's `/metrics` from the socket URL the bench connects to
/// (`ws://host:port/v1/ws`) or its HTTP base.
pub fn metrics_url(url: &str) -> Option<reqwest::Url> {
    let mut u = reqwest::Url::parse(url).ok()?;
    let scheme = match u.scheme() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        _ => return None,
    };
    u.set_scheme(scheme).ok()?;
    u.set_path("/metrics");
    u.set_query(None);
    Some(u)
}

/// Scrapes every node's `/metrics`; a node that does not answer adds nothing.
pub async fn scrape(urls: &[String]) -> Buckets {
    let mut all = Buckets::default();
    let client = reqwest::Client::new();
    for url in urls {
        let Some(url) = metrics_url(url) else {
            continue;
        };
        let got = client
            .get(url)
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await;
        if let Ok(r) = got
            && let Ok(text) = r.text().await
        {
            parse(&text, &mut all);
        }
    }
    all
}

/// The q-quantile in seconds, interpolated inside its bucket as
/// Prometheus's `histogram_quantile` does; `None` without samples.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let within = count - prev.1;
            let frac = if within > 0.0 {
                (rank - prev.1) / within
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, count);
    }
    Some(prev.0)
}

/// What happened between two scrapes: per hop, count, p50 and p99 in ms,
/// and the hop with the longest p99 (the one that makes the tail).
pub fn breakdown(before: &Buckets, after: &Buckets) -> Value {
    let mut out = serde_json::Map::new();
    let mut worst: Option<(&str, f64)> = None;
    for (hop, buckets) in &after.0 {
        let base = before.0.get(hop);
        let diff: Vec<(f64, f64)> = buckets
            .iter()
            .map(|&(le, c)| {
                let was = base
                    .and_then(|b| b.iter().find(|(l, _)| *l == le))
                    .map_or(0.0, |(_, c)| *c);
                (le, (c - was).max(0.0))
            })
            .collect();
        let ms = |v: Option<f64>| v.map(|s| (s * 1e5).round() / 100.0);
        let p99 = quantile(&diff, 0.99);
        if let (Some(p), Some(name)) = (p99, HOPS.iter().find(|h| **h == hop))
            && worst.is_none_or(|(_, w)| p > w)
        {
            worst = Some((name, p));
        }
        out.insert(
            hop.clone(),
            json!({
                "count": diff.last().map_or(0.0, |d| d.1),
                "p50_ms": ms(quantile(&diff, 0.50)),
                "p99_ms": ms(p99),
            }),
        );
    }
    if out.is_empty() {
        return json!(null);
    }
    out.insert("tail_hop".into(), json!(worst.map(|(h, _)| h)));
    Value::Object(out)
}

/// Client-side latencies of the measured window by 100 ms window of send
/// time: the p99 of each, and the windows well above the typical one.
pub fn series(samples: &[(u32, u32)]) -> Value {
    let mut by_window: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &(w, us) in samples {
        by_window.entry(w).or_default().push(us);
    }
    let p99s: Vec<(u32, f64)> = by_window
        .into_iter()
        .map(|(w, mut v)| {
            v.sort_unstable();
            let i = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
            (w, v[i] as f64 / 1000.0)
        })
        .collect();
    if p99s.is_empty() {
        return json!(null);
    }
    let mut sorted: Vec<f64> = p99s.iter().map(|p| p.1).collect();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let max = sorted[sorted.len() - 1];
    let round = |v: f64| (v * 100.0).round() / 100.0;
    // Windows at more than twice the median p99, by start time (s into
    // the window): evenly spaced ones point at a timer.
    let spikes: Vec<f64> = p99s
        .iter()
        .filter(|(_, p)| *p > median * 2.0)
        .map(|(w, _)| *w as f64 / 10.0)
        .collect();
    json!({
        "window_ms": 100,
        "windows": p99s.len(),
        "median_p99_ms": round(median),
        "max_p99_ms": round(max),
        "spikes_at_s": spikes,
        "p99_ms": p99s.iter().map(|p| round(p.1)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "# TYPE chat_delivery_hop_seconds histogram
chat_delivery_hop_seconds_bucket{hop=\"write\",le=\"0.001\"} 90
chat_delivery_hop_seconds_bucket{hop=\"write\",le=\"0.002\"} 99
chat_delivery_hop_seconds_bucket{hop=\"write\",le=\"+Inf\"} 100
chat_delivery_hop_seconds_bucket{hop=\"read\",le=\"0.001\"} 100
chat_delivery_hop_seconds_bucket{hop=\"read\",le=\"+Inf\"} 100
chat_delivery_hop_seconds_sum{hop=\"write\"} 0.1
";

    #[test]
    fn hops_from_two_scrapes_over_two_nodes() {
        let mut before = Buckets::default();
        let mut after = Buckets::default();
        // Two nodes after; before the window, one of them had already
        // counted as much (it does not count).
        parse(SCRAPE, &mut after);
        parse(SCRAPE, &mut after);
        parse(SCRAPE, &mut before);
        let b = breakdown(&before, &after);
        assert_eq!(b["write"]["count"], 100.0);
        // 100 samples: 90 below 1 ms, the 99th between 1 and 2 ms.
        assert_eq!(b["write"]["p99_ms"], 2.0);
        assert_eq!(b["read"]["count"], 100.0);
        assert_eq!(b["tail_hop"], "write");
    }

    #[test]
    fn metrics_are_read_from_the_nodes_socket_url() {
        for (given, want) in [
            ("ws://127.0.0.1:8080/v1/ws", "http://127.0.0.1:8080/metrics"),
            (
                "wss://chat.example/v1/ws?x=1",
                "https://chat.example/metrics",
            ),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/metrics"),
        ] {
            assert_eq!(
                metrics_url(given).map(|u| u.to_string()).as_deref(),
                Some(want)
            );
        }
        assert!(metrics_url("ftp://x/").is_none());
    }

    #[test]
    fn no_samples_no_breakdown() {
        assert_eq!(
            breakdown(&Buckets::default(), &Buckets::default()),
            json!(null)
        );
        assert_eq!(series(&[]), json!(null));
    }

    #[test]
    fn a_periodic_spike_is_named_with_its_time() {
        let mut s = Vec::new();
        for w in 0..50u32 {
            for i in 0..100u32 {
                let slow = w % 10 == 5 && i > 90;
                s.push((w, if slow { 20_000 } else { 1_000 + i }));
            }
        }
        let v = series(&s);
        assert_eq!(v["windows"], 50);
        assert_eq!(v["spikes_at_s"], json!([0.5, 1.5, 2.5, 3.5, 4.5]));
        assert_eq!(v["max_p99_ms"], 20.0);
    }
}
