//! Prometheus metrics: one recorder per process (the one-process stack and
//! the tests share it), rendered at `/metrics` by the ingress, and by a small
//! listener in each worker (`CHAT_METRICS_LISTEN`).
//!
//! Names follow Prometheus conventions: counters end in `_total`, durations
//! are `_seconds`. What each means is in docs/operations.md; [`FAMILIES`]
//! is the list, with the `# HELP` text each family carries. Each service
//! calls [`register`] at start, so its families exist (at zero) before
//! their first event, as dashboards and alerts expect.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::OnceLock;
use tokio_util::sync::CancellationToken;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder (once; later calls reuse it).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(HOP_METRIC.into()),
                    &HOP_BUCKETS,
                )
                .ok()?
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("chat_archive_batch_size".into()),
                    &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
                )
                .ok()?
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &buckets,
                )
                .ok()?
                .install_recorder()
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()?;
            // Histogram samples pile up until drained: a process nobody
            // scrapes would grow by every delivery's sample without this.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            Some(handle)
        })
        .as_ref()
}

/// Per-hop delivery latency (`hop` = `read`, `publish`, `write`, `total`);
/// see docs/operations.md. Finer buckets than the other durations: the
/// hops are tens of microseconds to milliseconds, and `chatctl bench` reads
/// its quantiles from them.
pub const HOP_METRIC: &str = "chat_delivery_hop_seconds";

/// Upper bounds, roughly 1.25x apart from 25 µs to 2.5 s.
pub const HOP_BUCKETS: [f64; 42] = [
    0.000025, 0.00005, 0.000075, 0.0001, 0.000125, 0.00015, 0.0002, 0.00025, 0.0003, 0.0004,
    0.0005, 0.0006, 0.0008, 0.001, 0.00125, 0.0015, 0.00175, 0.002, 0.0025, 0.003, 0.004, 0.005,
    0.006, 0.008, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.15, 0.2,
    0.3, 0.5, 1.0, 1.5, 2.5,
];

/// The text exposition of every metric, process figures read now.
pub fn render() -> String {
    let Some(handle) = install() else {
        return String::new();
    };
    let mut text = handle.render();
    text.push_str(&process::render());
    text
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric family: its name, type and `# HELP` text.
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn family(name: &'static str, kind: Kind, help: &'static str) -> Family {
    Family { name, kind, help }
}

use Kind::{Counter, Gauge, Histogram};

/// Every family any service exports (docs/operations.md has the long form).
pub const FAMILIES: &[Family] = &[
    family(
        "chat_build_info",
        Gauge,
        "Always 1: the service and its version, as labels.",
    ),
    family(
        "chat_connections",
        Gauge,
        "Authenticated sockets on this node.",
    ),
    family(
        "chat_frames_in_total",
        Counter,
        "Client frames received, by type.",
    ),
    family(
        "chat_appends_total",
        Counter,
        "Appends by result: stored, duplicate, error.",
    ),
    family(
        "chat_deliveries_total",
        Counter,
        "Message frames written to sockets (one per recipient).",
    ),
    family(
        "chat_delivery_latency_seconds",
        Histogram,
        "Append (Redis time) to delivery on this node, per message.",
    ),
    family(
        HOP_METRIC,
        Histogram,
        "Where a delivery's time goes, by hop: read, publish, receive, write, total.",
    ),
    family(
        "chat_slow_consumers_total",
        Counter,
        "Sockets closed 4008: queue full, or nothing taken for 10 s.",
    ),
    family(
        "chat_listener_connections",
        Gauge,
        "Open connections of every kind, by listener.",
    ),
    family(
        "chat_connections_shed_total",
        Counter,
        "Connections evicted or refused at the connection cap.",
    ),
    family(
        "chat_accept_errors_total",
        Counter,
        "Failed accept calls (out of descriptors).",
    ),
    family(
        "chat_upgrades_refused_total",
        Counter,
        "Sockets refused, by reason.",
    ),
    family(
        "chat_sends_refused_total",
        Counter,
        "Sends refused unavailable because deliveries ran behind.",
    ),
    family(
        "chat_redis_errors_total",
        Counter,
        "Redis errors that reached a client as unavailable or internal.",
    ),
    family(
        "chat_fanout_published_total",
        Counter,
        "Messages published to ingress nodes.",
    ),
    family(
        "chat_group_lag",
        Gauge,
        "Entries not yet read by a consumer group.",
    ),
    family(
        "chat_group_pending",
        Gauge,
        "Entries read by a consumer group and not acknowledged.",
    ),
    family(
        "chat_group_shard_lag",
        Gauge,
        "Entries not yet read by a consumer group, per shard stream.",
    ),
    family(
        "chat_dead_lettered_total",
        Counter,
        "Entries moved to a group's dead-letter stream.",
    ),
    family(
        "chat_archived_total",
        Counter,
        "Messages written to MongoDB.",
    ),
    family(
        "chat_webhook_deliveries_total",
        Counter,
        "Webhook requests by endpoint and outcome: delivered (2xx), retried (an attempt failed), dead_lettered (every attempt failed).",
    ),
    family(
        "chat_archive_batch_size",
        Histogram,
        "Documents per MongoDB write.",
    ),
    family(
        "chat_mongodb_errors_total",
        Counter,
        "Failed MongoDB writes and probes, by op.",
    ),
    family(
        "chat_pushes_total",
        Counter,
        "FCM push attempts, by outcome.",
    ),
    family(
        "chat_summary_jobs_total",
        Counter,
        "Summary job attempts, by status.",
    ),
];

/// A service, for [`register`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Ingress,
    Fanout,
    Notifier,
    Summarizer,
    Archive,
    Webhook,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Fanout => "fanout-worker",
            Self::Notifier => "notifier-worker",
            Self::Summarizer => "summarizer-worker",
            Self::Archive => "archive-worker",
            Self::Webhook => "webhook-worker",
        }
    }

    /// The series this service starts at zero: every family it exports,
    /// with the label values known up front. (A consumer group's series are
    /// started by the consumer loop, which knows the group's name.)
    fn series(self) -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
        let one = |name| (name, vec![]);
        let each = |name, label, values: &[&'static str]| {
            values
                .iter()
                .map(|v| (name, vec![(label, *v)]))
                .collect::<Vec<_>>()
        };
        let mut all = Vec::new();
        match self {
            Self::Ingress => {
                all.extend(["chat_connections", "chat_deliveries_total"].map(one));
                all.extend(["chat_slow_consumers_total", "chat_accept_errors_total"].map(one));
                all.push(one("chat_delivery_latency_seconds"));
                let frames = [
                    "auth", "join", "leave", "send", "history", "typing", "read", "ping",
                    "refresh", "edit", "delete", "react", "moderate",
                ];
                all.extend(each("chat_frames_in_total", "type", &frames));
                let results = ["stored", "duplicate", "refused", "error"];
                all.extend(each("chat_appends_total", "result", &results));
                let reasons = [
                    "origin",
                    "draining",
                    "auth",
                    "rate",
                    "capacity",
                    "unavailable",
                ];
                all.extend(each("chat_upgrades_refused_total", "reason", &reasons));
                all.extend(each("chat_sends_refused_total", "reason", &["overloaded"]));
                all.extend(each("chat_redis_errors_total", "service", &["ingress"]));
                let hops = ["receive", "write", "total"];
                all.extend(each(HOP_METRIC, "hop", &hops));
                for listener in ["public", "metrics"] {
                    all.push(("chat_listener_connections", vec![("listener", listener)]));
                    for how in ["evicted", "refused"] {
                        let labels = vec![("listener", listener), ("how", how)];
                        all.push(("chat_connections_shed_total", labels));
                    }
                }
            }
            Self::Fanout => {
                all.push(one("chat_fanout_published_total"));
                all.extend(each(HOP_METRIC, "hop", &["read", "publish"]));
            }
            Self::Notifier => {
                let outcomes = [
                    "sent",
                    "bad_token",
                    "bad_payload",
                    "rejected",
                    "misconfigured",
                    "retry",
                    "dry_run",
                ];
                all.extend(each("chat_pushes_total", "outcome", &outcomes));
            }
            Self::Summarizer => {
                let statuses = ["done", "failed", "retry"];
                all.extend(each("chat_summary_jobs_total", "status", &statuses));
            }
            Self::Archive => {
                all.extend(["chat_archived_total", "chat_archive_batch_size"].map(one));
                all.extend(each("chat_mongodb_errors_total", "op", &["write", "probe"]));
            }
            // Per endpoint: the worker starts each configured one's series.
            Self::Webhook => {}
        }
        all
    }
}

/// Installs the recorder, gives every family its `# HELP`, and starts this
/// service's series at zero, with `chat_build_info` and the process figures.
pub fn register(service: Service) {
    if install().is_none() {
        return;
    }
    for f in FAMILIES {
        match f.kind {
            Counter => metrics::describe_counter!(f.name, f.help),
            Gauge => metrics::describe_gauge!(f.name, f.help),
            Histogram => metrics::describe_histogram!(f.name, f.help),
        }
    }
    let version = env!("CARGO_PKG_VERSION");
    metrics::gauge!("chat_build_info", "service" => service.name(), "version" => version).set(1.0);
    for (name, labels) in service.series() {
        zero(name, &labels);
    }
}

/// Starts a consumer group's series at zero (the consumer loop calls this).
pub fn register_group(group: &str, streams: &[String]) {
    for name in ["chat_group_lag", "chat_group_pending"] {
        metrics::gauge!(name, "group" => group.to_owned()).increment(0.0);
    }
    for stream in streams {
        let labels = [("group", group.to_owned()), ("stream", stream.clone())];
        metrics::gauge!("chat_group_shard_lag", &labels).increment(0.0);
    }
    metrics::counter!("chat_dead_lettered_total", "group" => group.to_owned()).increment(0);
}

/// Registers one series without changing it: a counter or gauge already
/// counting keeps its value; a histogram gets no sample.
fn zero(name: &'static str, labels: &[(&'static str, &'static str)]) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, *v))
        .collect();
    match FAMILIES.iter().find(|f| f.name == name).map(|f| f.kind) {
        Some(Counter) => metrics::counter!(name, labels).increment(0),
        Some(Gauge) => metrics::gauge!(name, labels).increment(0.0),
        Some(Histogram) => drop(metrics::histogram!(name, labels)),
        None => debug_assert!(false, "{name} is not in FAMILIES"),
    }
}

/// CPU, memory and descriptors from /proc (Linux; elsewhere none), read
/// at each scrape and written as Prometheus's client libraries name them.
/// Rendered here rather than through the recorder, whose counters are
/// integers. Four numbers from /proc do not warrant a crate.
mod process {
    use std::fmt::Write;

    pub fn render() -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, value: Option<f64>| {
            if let Some(v) = value {
                let _ = write!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n\n"
                );
            }
        };
        family(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
            cpu_seconds(),
        );
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory, in bytes.",
            rss_bytes(),
        );
        let open = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64);
        family("process_open_fds", "gauge", "Open file descriptors.", open);
        family(
            "process_max_fds",
            "gauge",
            "The open file descriptor limit (soft).",
            max_fds(),
        );
        out
    }

    fn read(path: &str) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    fn cpu_seconds() -> Option<f64> {
        let stat = read("/proc/self/stat")?;
        // The fields after the command's closing parenthesis; utime and
        // stime are the 12th and 13th, in USER_HZ, which is 100 on Linux.
        let (_, after) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
        Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
    }

    fn rss_bytes() -> Option<f64> {
        let status = read("/proc/self/status")?;
        let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
        Some(
            kb.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()?
                * 1024.0,
        )
    }

    fn max_fds() -> Option<f64> {
        let limits = read("/proc/self/limits")?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }
}
/// Serves `/metrics` and `/healthz` for a worker until `shutdown`.
pub async fn serve(listen: SocketAddr, shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
    install();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(|| async { render() }))
        .route("/livez", axum::routing::get(|| async { "ok" }))
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(addr)
}

/// Serves metrics at `CHAT_METRICS_LISTEN` when it is set (workers).
pub async fn serve_configured(
    settings: &dyn crate::config::Strings,
    shutdown: CancellationToken,
) -> std::io::Result<Option<SocketAddr>> {
    let Some(listen) = settings
        .get("CHAT_METRICS_LISTEN")
        .filter(|v| !v.trim().is_empty())
    else {
        return Ok(None);
    };
    let addr: SocketAddr = listen.trim().parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("CHAT_METRICS_LISTEN={listen:?}: {e}"),
        )
    })?;
    let bound = serve(addr, shutdown).await?;
    tracing::info!(%bound, "metrics listening");
    Ok(Some(bound))
}
