//! History pages for the WebSocket `history` frame and `GET
//! /v1/rooms/{room}/messages`: both tiers read as `chat_archive::tiers`
//! reads them, with the node's connections, and a failure logged and
//! answered with the contract's code.

use crate::state::AppState;
use chat_archive::tiers::{HistoryError, Page, Tiers, read};
use chat_core::protocol::ErrorCode as Code;
use chat_core::protocol::ErrorCode;

/// The `limit` messages just below `before` in `epoch` (the current epoch
/// when `None`; the newest when `before` is `None`).
pub async fn page(
    state: &AppState,
    room: &str,
    epoch: Option<&str>,
    before: Option<u64>,
    limit: u32,
    viewer: Option<&str>,
) -> Result<Page, ErrorCode> {
    read(&tiers(state, viewer), room, epoch, before, limit)
        .await
        .map_err(|e| failed(room, e))
}

/// The replies to the message at `parent` (current epoch), as a page.
pub async fn thread(
    state: &AppState,
    room: &str,
    parent: u64,
    before: Option<u64>,
    limit: u32,
    viewer: &str,
) -> Result<Page, ErrorCode> {
    chat_archive::tiers::thread(&tiers(state, Some(viewer)), room, parent, before, limit)
        .await
        .map_err(|e| failed(room, e))
}

fn tiers<'a>(state: &'a AppState, viewer: Option<&'a str>) -> Tiers<'a> {
    Tiers {
        redis: &state.redis,
        scripts: &state.scripts,
        keys: &state.keys,
        archive: state.archive.as_ref(),
        viewer,
    }
}

fn failed(room: &str, e: HistoryError) -> Code {
    tracing::warn!(room, error = ?e, "history failed");
    match &e {
        HistoryError::Redis(s) => ErrorCode::from(s),
        HistoryError::Archive(_) => ErrorCode::Unavailable,
    }
}
