//! Liveness and readiness.

use crate::state::Shared;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when Redis answers a PING in time.
pub async fn readyz(State(state): State<Shared>) -> (StatusCode, Json<Value>) {
    let mut conn = state.redis.clone();
    let ping = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        redis::cmd("PING").query_async::<String>(&mut conn),
    )
    .await;
    match ping {
        Ok(Ok(_)) if !state.shutdown.is_cancelled() => {
            (StatusCode::OK, Json(json!({"status": "ready"})))
        }
        Ok(Ok(_)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "redis unreachable"})),
        ),
    }
}
