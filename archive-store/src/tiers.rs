//! History across both tiers, shared by the WebSocket `history` frame and
//! `GET /v1/rooms/{room}/messages`. Redis holds the tail of the room's
//! current epoch; the archive (MongoDB, when configured) holds everything,
//! earlier epochs included. A page is read from Redis first and completed
//! from the archive below the oldest offset Redis returned, so the boundary
//! has neither a gap nor a duplicate; a page never mixes epochs, and its
//! `next` cursor leads to the next older page, into the previous epoch
//! once this one is exhausted.

use crate::{Store, StoreError};
use chat_core::keys::Keys;
use chat_core::protocol::{HistoryCursor, Message};
use chat_core::redis_conn::Conn;
use chat_core::scripts::{ScriptError, Scripts};

/// Why a history read failed, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("reading the room's stream")]
    Redis(#[from] ScriptError),
    #[error("reading the archive")]
    Archive(#[from] StoreError),
}

/// What a history read needs: the node's state, or an operator tool's own
/// connections (`chatctl rooms history`), so both read the same way.
pub struct Tiers<'a> {
    pub redis: &'a Conn,
    pub scripts: &'a Scripts,
    pub keys: &'a Keys,
    /// The archive, when `CHAT_MONGODB_URL` is set.
    pub archive: Option<&'a Store>,
    /// Whose reactions are marked `me`.
    pub viewer: Option<&'a str>,
}

pub struct Page {
    /// The epoch the messages belong to ("" for a room Redis does not know
    /// and the archive has nothing of).
    pub epoch: String,
    /// Oldest first.
    pub messages: Vec<Message>,
    pub next: Option<HistoryCursor>,
}

/// The `limit` messages just below `before` in `epoch` (the current epoch
/// when `None`; the newest when `before` is `None`).
pub async fn read(
    tiers: &Tiers<'_>,
    room: &str,
    epoch: Option<&str>,
    before: Option<u64>,
    limit: u32,
) -> Result<Page, HistoryError> {
    let mut conn = tiers.redis.clone();
    let read = tiers
        .scripts
        .history(&mut conn, tiers.keys, room, before, limit, tiers.viewer)
        .await?;
    let mut messages = read.messages;
    let (epoch, in_redis, oldest) = match epoch {
        Some(e) if e != read.epoch => {
            // An earlier epoch: only the archive has it.
            messages.clear();
            (e.to_owned(), false, None)
        }
        _ => (read.epoch, true, read.oldest),
    };
    let Some(archive) = tiers.archive else {
        // Redis alone: a full page may have older messages below it. Pages
        // count entries read, so entries that did not parse (skipped) do
        // not end the scroll early.
        let next = match oldest {
            Some(o) if read.read == u64::from(limit) && o > 1 => Some(HistoryCursor {
                epoch: epoch.clone(),
                before: o,
            }),
            _ => None,
        };
        return Ok(Page {
            epoch,
            messages,
            next,
        });
    };
    archived_page(
        (archive, tiers.viewer),
        room,
        epoch,
        in_redis,
        oldest.or(before),
        limit,
        messages,
    )
    .await
    .map_err(HistoryError::from)
}

/// The replies to `parent` in the room's current epoch, a page as
/// `read` gives one (`next` leads to older replies). Threads are read from
/// Redis: replies it no longer holds are not listed.
pub async fn thread(
    tiers: &Tiers<'_>,
    room: &str,
    parent: u64,
    before: Option<u64>,
    limit: u32,
) -> Result<Page, HistoryError> {
    let mut conn = tiers.redis.clone();
    let read = tiers
        .scripts
        .thread(
            &mut conn,
            tiers.keys,
            room,
            parent,
            (before, limit),
            tiers.viewer,
        )
        .await?;
    let next = match read.oldest {
        Some(o) if read.read == u64::from(limit) => Some(HistoryCursor {
            epoch: read.epoch.clone(),
            before: o,
        }),
        _ => None,
    };
    Ok(Page {
        epoch: read.epoch,
        messages: read.messages,
        next,
    })
}

/// Completes a page from the archive and finds where the next one starts.
async fn archived_page(
    (archive, viewer): (&Store, Option<&str>),
    room: &str,
    epoch: String,
    in_redis: bool,
    below: Option<u64>,
    limit: u32,
    mut messages: Vec<Message>,
) -> Result<Page, StoreError> {
    // Below the oldest entry Redis read (or below `before`): Redis has
    // nothing older, so the archive continues exactly there.
    let below = below.unwrap_or(u64::MAX);
    let missing = limit.saturating_sub(messages.len() as u32);
    let mut exhausted = false;
    if missing > 0 && below > 1 && !epoch.is_empty() {
        let mut older = archive.older(room, &epoch, below, missing).await?;
        archive.fold(room, &epoch, &mut older, viewer).await?;
        exhausted = (older.len() as u32) < missing;
        messages.splice(0..0, older);
    } else if missing > 0 {
        exhausted = true;
    }
    let lowest = messages.first().map(|m| m.offset).unwrap_or(below);
    if lowest > 1 && !exhausted {
        return Ok(Page {
            next: Some(HistoryCursor {
                epoch: epoch.clone(),
                before: lowest,
            }),
            epoch,
            messages,
        });
    }
    // This epoch is done: the next page is the newest of the one before it.
    let first_ts = match messages.first() {
        Some(m) => m.ts,
        None if epoch.is_empty() => u64::MAX,
        None => match archive.first_of_epoch(room, &epoch).await? {
            Some(m) => m.ts,
            // The current epoch with nothing archived yet: everything
            // archived is older.
            None if in_redis => u64::MAX,
            // An epoch this room never had: nowhere to go from it.
            None => {
                return Ok(Page {
                    epoch,
                    messages,
                    next: None,
                });
            }
        },
    };
    let next = archive
        .previous_epoch(room, &epoch, first_ts)
        .await?
        .map(|(e, last)| HistoryCursor {
            epoch: e,
            before: last + 1,
        });
    Ok(Page {
        epoch,
        messages,
        next,
    })
}
