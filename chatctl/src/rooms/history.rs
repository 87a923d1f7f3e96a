//! `chatctl rooms history ROOM`: the room's history through the ingress's own
//! history code (Redis first, then the MongoDB archive when
//! `CHAT_MONGODB_URL` is set), following `next` cursors across pages and
//! epochs until `--limit` messages are found. Printed oldest first.

use crate::context::{Context, check_room};
use crate::output;
use anyhow::{Context as _, bail};
use chat_archive::tiers::{Tiers, read};
use chat_core::protocol::{HistoryCursor, Message, valid_epoch};
use chat_core::scripts::Scripts;

/// The API's page size: the most one read asks for.
const PAGE: u32 = 100;
/// More than an operator reads in a terminal; `export` is for whole rooms.
pub const MAX_LIMIT: u32 = 100_000;

pub struct Args {
    pub room: String,
    pub before: Option<u64>,
    pub limit: u32,
    pub epoch: Option<String>,
    pub json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    check_room(&args.room)?;
    if !(1..=MAX_LIMIT).contains(&args.limit) {
        bail!("--limit must be 1 to {MAX_LIMIT}");
    }
    if let Some(e) = &args.epoch
        && !valid_epoch(e)
    {
        bail!("bad epoch {e:?}: epochs match ^[A-Za-z0-9_-]{{1,64}}$");
    }
    let conn = ctx.redis().await?;
    let archive = match &ctx.mongodb {
        Some(m) => Some(
            chat_archive::Store::connect(m, &ctx.common.streams.archive.collection)
                .await
                .context("connecting to the MongoDB archive")?,
        ),
        None => None,
    };
    let scripts = Scripts::default();
    let tiers = Tiers {
        redis: &conn,
        scripts: &scripts,
        keys: &ctx.keys,
        archive: archive.as_ref(),
        viewer: None,
    };
    let room = args.room.as_str();
    // Pages newest first; each page is oldest first.
    let mut pages: Vec<(String, Vec<Message>)> = Vec::new();
    let mut found = 0u32;
    let (mut epoch, mut before) = (args.epoch, args.before);
    let mut next: Option<HistoryCursor> = None;
    while found < args.limit {
        let want = (args.limit - found).min(PAGE);
        let page = read(&tiers, room, epoch.as_deref(), before, want)
            .await
            .with_context(|| format!("reading the history of {room}"))?;
        found += page.messages.len() as u32;
        next = page.next;
        pages.push((page.epoch, page.messages));
        match &next {
            // A cursor always moves down (or into an earlier epoch), so this ends.
            Some(c) => (epoch, before) = (Some(c.epoch.clone()), Some(c.before)),
            None => break,
        }
    }
    let mut shown_epoch: Option<&str> = None;
    for (page_epoch, messages) in pages.iter().rev() {
        for m in messages {
            if !args.json && shown_epoch != Some(page_epoch.as_str()) {
                output::line(&format!("# {room}, epoch {page_epoch}"))?;
                shown_epoch = Some(page_epoch);
            }
            output::line(&output::message(m, args.json))?;
        }
    }
    if found == 0 {
        eprintln!("{room}: no messages");
    }
    if let Some(c) = next {
        eprintln!(
            "older messages: chatctl rooms history {room} --epoch {} --before {}",
            c.epoch, c.before
        );
    }
    Ok(())
}
