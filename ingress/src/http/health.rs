//! Liveness, readiness and metrics.

use super::error::{ApiError, ErrorBody};
use crate::state::Shared;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chat_core::protocol::ErrorCode;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: HealthStatus,
}

#[derive(Serialize, ToSchema)]
pub enum HealthStatus {
    #[serde(rename = "ok")]
    Ok,
    #[serde(rename = "ready")]
    Ready,
    #[serde(rename = "draining")]
    Draining,
    #[serde(rename = "redis unreachable")]
    RedisUnreachable,
}

/// Liveness: the process serves HTTP. Redis being away does not make it
/// fail: restarting a node does not bring Redis back (that is `/readyz`).
#[utoipa::path(
    get,
    path = "/livez",
    tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Health))
)]
pub async fn livez() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
    })
}

/// The same as `/livez`, under its older name.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    livez().await
}

/// Readiness: Redis answers a PING in time and the node is not draining.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "`{\"status\": \"ready\"}`", body = Health),
        (status = 503, description = "`draining` (shutting down) or `redis unreachable`", body = Health),
    )
)]
pub async fn readyz(State(state): State<Shared>) -> (StatusCode, Json<Health>) {
    let mut conn = state.redis.clone();
    let ping = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        redis::cmd("PING").query_async::<String>(&mut conn),
    )
    .await;
    let (code, status) = match ping {
        Ok(Ok(_)) if !state.shutdown.is_cancelled() => (StatusCode::OK, HealthStatus::Ready),
        Ok(Ok(_)) => (StatusCode::SERVICE_UNAVAILABLE, HealthStatus::Draining),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            HealthStatus::RedisUnreachable,
        ),
    };
    (code, Json(Health { status }))
}

/// Prometheus metrics (also at `CHAT_METRICS_LISTEN` when set; production
/// scrapes that one and turns this one off with `CHAT_PUBLIC_METRICS=false`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition format",
            content_type = "text/plain", body = String),
        (status = 404, description = "`CHAT_PUBLIC_METRICS=false`: scrape `CHAT_METRICS_LISTEN`", body = ErrorBody),
    )
)]
pub async fn metrics(State(state): State<Shared>) -> Result<String, ApiError> {
    if state.settings.public_metrics {
        Ok(render_metrics().await)
    } else {
        Err(ApiError::new(
            ErrorCode::NotFound,
            "metrics are served on the metrics listener",
        ))
    }
}

async fn render_metrics() -> String {
    chat_core::metrics::render()
}

/// Prometheus metrics on the metrics listener (`CHAT_METRICS_LISTEN`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "private_metrics",
    responses((status = 200, description = "Prometheus text exposition format",
        content_type = "text/plain", body = String))
)]
pub async fn private_metrics() -> String {
    render_metrics().await
}
