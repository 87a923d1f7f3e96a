//! Liveness, readiness and metrics.

use crate::state::Shared;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
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

/// Liveness: the process serves HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
    })
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

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format",
        content_type = "text/plain", body = String))
)]
pub async fn metrics() -> String {
    chat_core::metrics::render()
}
