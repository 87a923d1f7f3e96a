//! The HTTP API and the router.

mod caller;
pub mod demo;
mod devices;
mod error;
mod export;
mod health;
mod openapi;
mod rooms;
mod sessions;
mod summaries;

use crate::state::Shared;
use axum::extract::DefaultBodyLimit;
use axum::{Extension, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

/// Every route goes through `routes!` so it is in /openapi.json too; a plain
/// axum route here would be served but undocumented (tests/openapi.rs checks).
pub fn router(state: Shared) -> Router {
    let (router, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(demo::page))
        .routes(routes!(demo::client_js))
        .routes(routes!(demo::dev_token))
        .routes(routes!(crate::ws::upgrade))
        .routes(routes!(rooms::publish, rooms::get_history))
        .routes(routes!(rooms::put_member, rooms::delete_member))
        .routes(routes!(rooms::presence))
        .routes(routes!(export::export))
        .routes(routes!(rooms::delete_room))
        .routes(routes!(sessions::put, sessions::delete))
        .routes(routes!(summaries::submit))
        .routes(routes!(summaries::status))
        .routes(routes!(summaries::latest))
        .routes(routes!(devices::register))
        .routes(routes!(devices::unregister))
        .routes(routes!(health::healthz))
        .routes(routes!(health::metrics))
        .routes(routes!(health::readyz))
        .routes(routes!(openapi::openapi_json))
        .fallback(|| async {
            ApiError::new(chat_core::protocol::ErrorCode::NotFound, "no such route")
        })
        .split_for_parts();
    router
        .layer(Extension(openapi::Served::new(&doc)))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}
