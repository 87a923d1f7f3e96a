//! History pages for the WebSocket `history` frame and `GET
//! /v1/rooms/{room}/messages`: both tiers read as `chat_archive::tiers`
//! reads them, with the node's connections, and a failure logged and
//! answered with the contract's code.

use crate::state::AppState;
use chat_archive::tiers::{HistoryError, Page, Tiers, read};
use chat_core::protocol::ErrorCode;

/// The `limit` messages just below `before` in `epoch` (the current epoch
/// when `None`; the newest when `before` is `None`).
pub async fn page(
    state: &AppState,
    room: &str,
    epoch: Option<&str>,
    before: Option<u64>,
    limit: u32,
) -> Result<Page, ErrorCode> {
    let tiers = Tiers {
        redis: &state.redis,
        scripts: &state.scripts,
        keys: &state.keys,
        archive: state.archive.as_ref(),
    };
    read(&tiers, room, epoch, before, limit).await.map_err(|e| {
        tracing::warn!(room, error = ?e, "history failed");
        match &e {
            HistoryError::Redis(s) => ErrorCode::from(s),
            HistoryError::Archive(_) => ErrorCode::Unavailable,
        }
    })
}
