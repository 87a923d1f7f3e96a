//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.
//! Paths come from the `#[utoipa::path]` of the handlers registered in
//! `router` (utoipa-axum), so the document and the routes cannot drift.

use axum::Extension;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Security scheme names used in the handlers' `security(...)`.
pub const ADMIN: &str = "api_key";
pub const USER: &str = "user_jwt";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chat ingress",
        description = "The chat backend's HTTP API, on the same port as the WebSocket \
            (`GET /v1/ws`, whose frames are described in the wire contract and our notes on \
            it, docs/protocol.md in the chat repository).\n\n\
            Errors are `{\"error\": {\"code\", \"message\"}}` with the code's status \
            (docs/protocol.md, \"HTTP status codes\"); unknown routes answer 404 \
            `not_found` in that shape, a known path with another method 405 with no body. \
            Requests refused by the framework before a handler runs answer `text/plain` \
            instead: a path parameter that is not UTF-8 once percent-decoded (400), a \
            `GET /v1/ws` that is not a WebSocket handshake (400), and a connection the \
            node has no room for (503, `CHAT_MAX_CONNECTIONS`).\n\n\
            Bodies are read only after the caller is authenticated, within \
            `CHAT_BODY_TIMEOUT` (408 `bad_request` when slower) and up to 64 KiB \
            (413 `too_large`).\n\n\
            Admin calls take `Authorization: Bearer <API key>`, user calls the user's JWT."
    ),
    servers(
        (url = "/", description = "The node that serves this document: every ingress node serves the same API"),
    ),
    modifiers(&BearerSchemes),
    tags(
        (name = "rooms", description = "Publish, history, members, presence, deletion, export"),
        (name = "sessions", description = "The auth server's session handoff"),
        (name = "devices", description = "Push device tokens of the calling user"),
        (name = "summaries", description = "Summarization jobs and a room's latest summary"),
        (name = "websocket", description = "The WebSocket upgrade"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "demo", description = "The demo page, the JavaScript client, dev tokens"),
    )
)]
pub struct ApiDoc;

struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, api: &mut Document) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ADMIN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A server-to-server API key (CHAT_API_KEYS): admin calls.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            USER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The user's JWT (`sub`, `exp`; `sid` when sessions are required).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as served, serialized once when the router is built.
#[derive(Clone)]
pub struct Served(Bytes);

impl Served {
    pub fn new(doc: &Document) -> Self {
        // Plain data with string keys: serializing cannot fail.
        Self(Bytes::from(
            serde_json::to_vec(doc).expect("the OpenAPI document serializes"),
        ))
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API",
            content_type = "application/json", body = Object),
    )
)]
pub async fn openapi_json(Extension(doc): Extension<Served>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], doc.0)
}
