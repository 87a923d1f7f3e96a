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
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &buckets,
                )
                .ok()?
                .install_recorder()
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()
        })
        .as_ref()
}

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
