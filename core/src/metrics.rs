//! Prometheus metrics: one recorder per process (the one-process stack and
//! the tests share it), rendered at `/metrics` by the ingress, and by a small
//! listener in each worker (`CHAT_METRICS_LISTEN`).
//!
//! Names follow Prometheus conventions: counters end in `_total`, durations
//! are `_seconds`. What each means is in docs/operations.md.

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

/// The text exposition of every metric.
pub fn render() -> String {
    install().map(PrometheusHandle::render).unwrap_or_default()
}

/// Serves `/metrics` and `/healthz` for a worker until `shutdown`.
pub async fn serve(listen: SocketAddr, shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
    install();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(|| async { render() }))
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
