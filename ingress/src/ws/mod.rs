//! `GET /v1/ws`: the WebSocket side of the contract.

mod conn;
mod frames;
mod rate;
mod session;
mod writer;

use crate::conns::Slot;
use crate::state::Shared;
use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The WebSocket upgrade.
///
/// After the upgrade: one JSON object per text frame, as in the wire
/// contract (docs/protocol.md, "WebSocket"). Authenticate
/// with `Authorization: Bearer <jwt>` here, or with an `auth` frame first
/// (browsers). Token and session failures come as frames and close codes
/// after the upgrade, not as HTTP statuses.
#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "websocket",
    operation_id = "websocket",
    params(
        ("Upgrade" = String, Header, description = "`websocket`"),
        ("Connection" = String, Header, description = "Includes `Upgrade`"),
        ("Sec-WebSocket-Version" = String, Header, description = "`13`"),
        ("Sec-WebSocket-Key" = String, Header, description = "The handshake key"),
        ("Origin" = Option<String>, Header,
            description = "Sent by browsers: the same host or one of CHAT_ALLOWED_ORIGINS"),
    ),
    security((), ("user_jwt" = [])),
    responses(
        (status = 101, description = "Switching Protocols: frames as in docs/protocol.md, \"WebSocket\""),
        (status = 400, description = "Not a WebSocket handshake", content_type = "text/plain", body = String),
        (status = 403, description = "`origin not allowed`", content_type = "text/plain", body = String),
        (status = 503, description = "`no capacity`: the node is at CHAT_MAX_CONNECTIONS with nothing to evict, or draining",
            content_type = "text/plain", body = String),
    )
)]
pub async fn upgrade(
    State(state): State<Shared>,
    headers: HeaderMap,
    slot: Option<Extension<Slot>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Checked before the handshake itself, so that a plain GET from a
    // refused page learns why too: a browser hides a failed handshake's
    // status from scripts, and the client asks this way to tell a refusal
    // that will not change from a transient failure. Any origin may read
    // the refusal; it carries nothing else.
    if !origin_allowed(&state.settings.allowed_origins, &headers) {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        tracing::info!(origin, "upgrade refused: origin not allowed");
        metrics::counter!("chat_upgrades_refused_total", "reason" => "origin").increment(1);
        return (
            StatusCode::FORBIDDEN,
            [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
            "origin not allowed",
        )
            .into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(not_a_handshake) => return not_a_handshake.into_response(),
    };
    // The connection cap itself is kept by the listener: this socket holds
    // its connection's slot from accept on (ingress/src/conns.rs).
    if state.shutdown.is_cancelled() {
        metrics::counter!("chat_upgrades_refused_total", "reason" => "draining").increment(1);
        return (StatusCode::SERVICE_UNAVAILABLE, "no capacity").into_response();
    }
    let slot = slot.map(|Extension(s)| s);
    let header_token = crate::auth::bearer(&headers).map(str::to_owned);
    let max = state.settings.limits.max_frame_bytes;
    let tracker = state.tracker.clone();
    ws.max_message_size(max)
        .max_frame_size(max)
        // Client frames are small; a larger frame takes a few more reads.
        // The buffer is allocated (and zeroed) for every socket, idle or not.
        .read_buffer_size(1024)
        .write_buffer_size(4096)
        .on_upgrade(move |socket| async move {
            // Tracked, not detached: the drain waits for every socket's last write.
            tracker.spawn(conn::run(state, socket, header_token, slot));
        })
}

/// Browsers send `Origin`; other clients do not and are not limited by it.
/// Without a configured list only the same host may connect.
fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    allowed.is_empty() && host.is_some() && origin_host == host
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().expect("host"));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().expect("origin"));
        }
        h
    }

    #[test]
    fn origins() {
        assert!(origin_allowed(&[], &headers(None, "a:1")));
        assert!(origin_allowed(&[], &headers(Some("http://a:1"), "a:1")));
        assert!(!origin_allowed(&[], &headers(Some("http://evil"), "a:1")));
        let list = vec!["https://app.example".to_owned()];
        assert!(origin_allowed(
            &list,
            &headers(Some("https://app.example"), "a:1")
        ));
        assert!(!origin_allowed(&list, &headers(Some("http://a:1"), "a:1")));
        assert!(origin_allowed(
            &["*".to_owned()],
            &headers(Some("http://x"), "a:1")
        ));
    }
}
