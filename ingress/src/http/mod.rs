//! The HTTP API and the router.

mod caller;
pub mod demo;
mod devices;
mod error;
mod export;
mod health;
mod rooms;
mod sessions;
mod summaries;

use crate::state::Shared;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};

pub use error::ApiError;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(demo::page))
        .route("/client.js", get(demo::client_js))
        .route("/dev/token", post(demo::dev_token))
        .route("/v1/ws", get(crate::ws::upgrade))
        .route(
            "/v1/rooms/{room}/messages",
            post(rooms::publish).get(rooms::get_history),
        )
        .route(
            "/v1/rooms/{room}/members/{user}",
            put(rooms::put_member).delete(rooms::delete_member),
        )
        .route("/v1/rooms/{room}/presence", get(rooms::presence))
        .route("/v1/rooms/{room}/export", get(export::export))
        .route("/v1/rooms/{room}", delete(rooms::delete_room))
        .route(
            "/v1/sessions/{sid}",
            put(sessions::put).delete(sessions::delete),
        )
        .route("/v1/summaries", post(summaries::submit))
        .route("/v1/summaries/{job_id}", get(summaries::status))
        .route("/v1/rooms/{room}/summary", get(summaries::latest))
        .route("/v1/devices", post(devices::register))
        .route("/v1/devices/{token}", delete(devices::unregister))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(|| async { chat_core::metrics::render() }))
        .route("/readyz", get(health::readyz))
        .fallback(|| async {
            ApiError::new(chat_core::protocol::ErrorCode::NotFound, "no such route")
        })
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}
