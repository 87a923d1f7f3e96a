//! `chatctl rooms tail ROOM`: follows a room from its stream, decoded, until
//! Ctrl-C or SIGTERM. Each read is the core `range` script (the room's epoch
//! and the entries after an offset, in one atomic call, as ingress hubs heal
//! gaps), so an entry is never labelled with the wrong epoch; between reads
//! an `XREAD BLOCK` on the room stream waits for the next entry. Both are
//! single-key commands on the room's slot, so this works on Redis Cluster too.

use crate::context::{Context, check_room};
use crate::output;
use anyhow::Context as _;
use chat_core::redis_conn::{self, Conn, is_unavailable};
use chat_core::scripts::{Range, ScriptError, Scripts};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long one wait blocks: also how soon a recreated room (new epoch,
/// whose stream restarts below the old ids) is noticed without new traffic.
const BLOCK: Duration = Duration::from_secs(2);
/// Entries per read.
const PAGE: u64 = 500;

pub struct Args {
    pub room: String,
    /// Print messages after this offset first (else only new ones).
    pub since: Option<u64>,
    pub json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    check_room(&args.room)?;
    let room = args.room.as_str();
    let mut conn = ctx.redis().await?;
    let mut waiter = redis_conn::blocking(&ctx.common.redis_url, BLOCK)
        .await
        .context("connecting to Redis")?;
    let scripts = Scripts::default();
    let stop = CancellationToken::new();
    chat_core::shutdown::cancel_on_signal(stop.clone());

    let first = scripts
        .range(&mut conn, &ctx.keys, room, u64::MAX, 1)
        .await
        .context("reading the room")?;
    let mut epoch = first.epoch;
    let mut after = args.since.unwrap_or(first.last);
    eprintln!(
        "following {room} ({}) after offset {after}; Ctrl-C stops",
        if epoch.is_empty() {
            "no such room yet".to_owned()
        } else {
            format!("epoch {epoch}")
        }
    );
    let stream = ctx.keys.room_stream(room);
    while !stop.is_cancelled() {
        let r = match read(&scripts, &mut conn, ctx, room, after, &stop).await? {
            Some(r) => r,
            None => break,
        };
        if r.epoch != epoch {
            // Deleted or expired and created afresh: a new stream from offset 1.
            eprintln!(
                "{room}: {}",
                if r.epoch.is_empty() {
                    "the room is gone; waiting for it to return".to_owned()
                } else {
                    format!("new epoch {}; following it from its start", r.epoch)
                }
            );
            epoch = r.epoch;
            after = 0;
            continue;
        }
        // Judged by the entries read, a malformed one (skipped, with a
        // warning) included: it was there, not trimmed.
        if let Some(first) = r.read_from
            && first > after + 1
            && after > 0
        {
            eprintln!(
                "{room}: offsets {}..{} were trimmed before they could be read",
                after + 1,
                first - 1
            );
        }
        for m in &r.messages {
            output::line(&output::message(m, args.json))?;
            after = m.offset;
        }
        // Continue after the last entry read, whether or not it parsed.
        after = after.max(r.read_to.unwrap_or(0));
        // A full page (counting malformed entries) may have more after it.
        if r.read >= PAGE {
            continue;
        }
        // Everything up to `last` was read.
        after = after.max(r.last);
        // Wakes as soon as an entry above `after` exists, at once if one
        // arrived since the read.
        let mut wait = redis::cmd("XREAD");
        wait.arg("BLOCK")
            .arg(chat_core::clock::millis(BLOCK))
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&stream)
            .arg(format!("{after}-{}", u64::MAX));
        tokio::select! {
            _ = stop.cancelled() => break,
            r = wait.query_async::<redis::Value>(&mut waiter) => {
                if let Err(e) = r {
                    retry_later(e, &stop).await?;
                }
            }
        }
    }
    Ok(())
}

/// One range read; Redis being away is waited out (`None`: stopped meanwhile).
async fn read(
    scripts: &Scripts,
    conn: &mut Conn,
    ctx: &Context,
    room: &str,
    after: u64,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Range>> {
    loop {
        let r = tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            r = scripts.range(conn, &ctx.keys, room, after, PAGE) => r,
        };
        match r {
            Ok(r) => return Ok(Some(r)),
            Err(ScriptError::Redis(e)) => retry_later(e, stop).await?,
            Err(e) => return Err(e.into()),
        }
    }
}

/// An outage is reported and waited out; any other error ends the tail.
async fn retry_later(e: redis::RedisError, stop: &CancellationToken) -> anyhow::Result<()> {
    if !is_unavailable(&e) {
        return Err(e.into());
    }
    eprintln!("redis unavailable ({e}); retrying");
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
    Ok(())
}
