//! The HTTP API and the router.

mod body;
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
mod unread;

use crate::state::Shared;
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
        .routes(routes!(rooms::edit_message, rooms::delete_message))
        .routes(routes!(rooms::react))
        .routes(routes!(unread::unread))
        .routes(routes!(unread::receipts))
        .routes(routes!(rooms::moderate))
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
        .routes(routes!(health::livez))
        .routes(routes!(health::healthz))
        .routes(routes!(health::metrics))
        .routes(routes!(health::readyz))
        .routes(routes!(openapi::openapi_json))
        .fallback(|| async {
            ApiError::new(chat_core::protocol::ErrorCode::NotFound, "no such route")
        })
        .split_for_parts();
    let cors =
        (!state.settings.allowed_origins.is_empty()).then(|| cors(&state.settings.allowed_origins));
    router
        .layer(Extension(openapi::Served::new(&doc)))
        .layer(tower::util::option_layer(cors))
        .with_state(state)
}

/// The pages of `CHAT_ALLOWED_ORIGINS` may call the HTTP API too (a user's
/// token in `Authorization`, no cookies), e.g. a room's history or presence
/// from the browser client. Without a list, only the ingress's own host
/// (the demo page) calls it, and no CORS header is sent.
fn cors(allowed: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allowed = allowed.to_vec();
    let origin = AllowOrigin::predicate(move |origin, _| {
        allowed
            .iter()
            .any(|a| a == "*" || a.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
    });
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(std::time::Duration::from_secs(600))
}

/// What the metrics listener (`CHAT_METRICS_LISTEN`) serves: metrics and
/// the probes, on a private address out of the public listener's way.
/// Its routes are the public ones of the same paths (its own document is
/// not served).
pub fn operations_router(state: Shared) -> Router {
    let (router, _) = OpenApiRouter::new()
        .routes(routes!(health::private_metrics))
        .routes(routes!(health::livez))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .split_for_parts();
    router.with_state(state)
}
