//! `chatctl dlq replay`: re-drives dead letters into the stream their group
//! reads. On a standalone Redis each one moves in one script (`replay.lua`):
//! re-added and removed from the dead-letter stream atomically, so a second
//! replay finds nothing to re-drive. On Redis Cluster the two streams are in
//! different slots: a lease (`lease.lua`) is taken, the entry re-added, then
//! the dead letter removed; a crash between the last two leaves the dead
//! letter in place and a later replay re-drives it once more, which the
//! consumers absorb (fanout and notify count by offset, the archive upserts).

use super::{Group, range, select};
use crate::context::Context;
use anyhow::bail;
use chat_core::group::DeadLetter;
use chat_core::redis_conn::Conn;
use indicatif::{ProgressBar, ProgressStyle};
use redis::Value;
use std::io::IsTerminal;

/// Dead letters read (and moved, on a standalone Redis) per round trip.
const PAGE: usize = 200;
/// A cluster replay's hold on one dead letter; ample for two commands.
const LEASE_MS: u64 = 60_000;

pub struct Args {
    pub streams: Vec<String>,
    pub ids: Vec<String>,
    pub all: bool,
    pub dry_run: bool,
}

/// What happened to the dead letters of one group.
#[derive(Default)]
struct Tally {
    redriven: u64,
    /// Gone by the time it was moved: replayed already (by another run).
    gone: u64,
    /// No stream to re-drive it into, held by a concurrent replay, or not a
    /// dead letter at all.
    skipped: u64,
}

struct Mover {
    replay: redis::Script,
    lease: redis::Script,
    cluster: bool,
    dry_run: bool,
    bar: ProgressBar,
}

/// Returns false when some dead letter could not be replayed.
pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<bool> {
    // Exactly one of the two (clap enforces it too).
    if args.all != args.ids.is_empty() {
        bail!("give the dead-letter ids to replay, or --all");
    }
    if let Some(bad) = args.ids.iter().find(|id| !stream_id(id)) {
        bail!("{bad:?} is not a stream entry id (like 1700000000000-0; see `chatctl dlq list`)");
    }
    let groups = select(ctx, &args.streams)?;
    let mut conn = ctx.redis().await?;
    let mut mover = Mover {
        replay: redis::Script::new(include_str!("replay.lua")),
        lease: redis::Script::new(include_str!("lease.lua")),
        cluster: conn.is_cluster(),
        dry_run: args.dry_run,
        bar: ProgressBar::hidden(),
    };
    if !mover.cluster && !mover.dry_run {
        // Loaded once, so each page's pipeline runs it by SHA.
        mover.replay.prepare_invoke().load_async(&mut conn).await?;
    }
    let mut ok = true;
    if args.all {
        // Up to the newest dead letter now: one that is dead-lettered again
        // while this runs (its cause not fixed) is not replayed in a loop.
        let mut plan = Vec::new();
        let mut total = 0;
        for g in &groups {
            let newest = range_rev_first(&mut conn, &g.dlq).await?;
            let n: u64 = redis::cmd("XLEN")
                .arg(&g.dlq)
                .query_async(&mut conn)
                .await?;
            total += n;
            plan.push((g, newest));
        }
        mover.bar = progress(total);
        for (g, newest) in plan {
            let mut tally = Tally::default();
            if let Some(end) = newest {
                let mut start = "-".to_owned();
                loop {
                    let page = range(&mut conn, &g.dlq, &start, &end, PAGE).await?;
                    // Past every entry read, one that is no dead letter too.
                    let Some(last) = &page.last_id else { break };
                    start = format!("({last}");
                    mover.others(g, &page.others, &mut tally);
                    mover
                        .page(ctx, &mut conn, g, &page.letters, &mut tally)
                        .await?;
                }
            }
            ok &= tally.skipped == 0;
            mover.report(g, &tally);
        }
    } else {
        let mut found: Vec<Vec<DeadLetter>> = groups.iter().map(|_| Vec::new()).collect();
        // Asked for, but not dead letters: left in place, reported.
        let mut others: Vec<Vec<(String, String)>> = groups.iter().map(|_| Vec::new()).collect();
        let mut missing = Vec::new();
        for id in &args.ids {
            let mut hits = Vec::new();
            for (i, g) in groups.iter().enumerate() {
                let page = range(&mut conn, &g.dlq, id, id, 1).await?;
                if page.read() > 0 {
                    hits.push((i, page));
                }
            }
            match hits.len() {
                0 => missing.push(id.as_str()),
                1 => {
                    let (i, mut page) = hits.remove(0);
                    found[i].append(&mut page.letters);
                    others[i].append(&mut page.others);
                }
                _ => {
                    let names: Vec<&str> = hits.iter().map(|(i, _)| groups[*i].kind).collect();
                    bail!(
                        "{id} is in more than one dead-letter stream ({}); name one with --stream",
                        names.join(", ")
                    );
                }
            }
        }
        mover.bar = progress(
            found
                .iter()
                .zip(&others)
                .map(|(f, o)| (f.len() + o.len()) as u64)
                .sum(),
        );
        for ((g, letters), others) in groups.iter().zip(&found).zip(&others) {
            if letters.is_empty() && others.is_empty() {
                continue;
            }
            let mut tally = Tally::default();
            mover.others(g, others, &mut tally);
            for page in letters.chunks(PAGE) {
                mover.page(ctx, &mut conn, g, page, &mut tally).await?;
            }
            ok &= tally.skipped == 0;
            mover.report(g, &tally);
        }
        for id in missing {
            // Not an error: replaying twice is meant to be harmless.
            println!("{id}: not in a dead-letter stream (replayed already?); 0 re-driven");
        }
    }
    mover.bar.finish_and_clear();
    Ok(ok)
}

/// `<ms>-<seq>`, as Redis writes stream ids.
fn stream_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.bytes().all(|b| b.is_ascii_digit())
            && seq.bytes().all(|b| b.is_ascii_digit())
    })
}

async fn range_rev_first(conn: &mut Conn, dlq: &str) -> anyhow::Result<Option<String>> {
    let v: Value = redis::cmd("XREVRANGE")
        .arg(dlq)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(chat_core::entry::entries(&v)?.pop().map(|e| e.id))
}

/// A bar on a terminal only: piped output stays plain lines.
fn progress(total: u64) -> ProgressBar {
    if total < 2 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("replaying");
    bar
}

impl Mover {
    /// Moves one page of a group's dead letters.
    async fn page(
        &mut self,
        ctx: &Context,
        conn: &mut Conn,
        g: &Group,
        letters: &[DeadLetter],
        tally: &mut Tally,
    ) -> anyhow::Result<()> {
        let mut moves: Vec<(&DeadLetter, String)> = Vec::new();
        for dl in letters {
            match g.target(ctx, dl) {
                Ok(_) if dl.fields.is_empty() => {
                    self.skip(g, dl, "it carries no entry fields");
                    tally.skipped += 1;
                }
                Ok(target) => moves.push((dl, target)),
                Err(why) => {
                    self.skip(g, dl, &why);
                    tally.skipped += 1;
                }
            }
        }
        if self.dry_run {
            for (dl, target) in &moves {
                self.bar.suspend(|| {
                    println!(
                        "{} {}: would re-drive ({}) into {target}",
                        g.name, dl.id, dl.reason
                    )
                });
            }
            tally.redriven += moves.len() as u64;
        } else if self.cluster {
            for (dl, target) in &moves {
                self.one_in_cluster(ctx, conn, g, dl, target, tally).await?;
            }
        } else if !moves.is_empty() {
            let mut pipe = redis::pipe();
            for (dl, target) in &moves {
                pipe.invoke_script(
                    self.replay
                        .key(&g.dlq)
                        .key(target)
                        .arg(&dl.id)
                        .arg(g.maxlen),
                );
            }
            let replies: Vec<Value> = match pipe.query_async(conn).await {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    // Not loaded yet (or Redis restarted): load it and run the
                    // page again; what moved already is gone and not re-driven.
                    self.replay.prepare_invoke().load_async(conn).await?;
                    pipe.query_async(conn).await?
                }
                r => r?,
            };
            for r in replies {
                match r {
                    Value::Nil | Value::Boolean(false) => tally.gone += 1,
                    _ => tally.redriven += 1,
                }
            }
        }
        self.bar.inc(letters.len() as u64);
        Ok(())
    }

    async fn one_in_cluster(
        &self,
        ctx: &Context,
        conn: &mut Conn,
        g: &Group,
        dl: &DeadLetter,
        target: &str,
        tally: &mut Tally,
    ) -> anyhow::Result<()> {
        let lease = ctx.keys.dead_letter_lease(&g.name, &dl.id);
        let held: i64 = self
            .lease
            .key(&g.dlq)
            .key(&lease)
            .arg(&dl.id)
            .arg(LEASE_MS)
            .invoke_async(conn)
            .await?;
        match held {
            0 => tally.gone += 1,
            1 => {
                let mut add = redis::cmd("XADD");
                add.arg(target)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(g.maxlen)
                    .arg("*");
                for (k, v) in &dl.fields {
                    add.arg(k).arg(v);
                }
                let _: String = add.query_async(conn).await?;
                // Same slot as the lease: both go in one round trip.
                let _: () = redis::pipe()
                    .cmd("XDEL")
                    .arg(&g.dlq)
                    .arg(&dl.id)
                    .ignore()
                    .del(&lease)
                    .ignore()
                    .query_async(conn)
                    .await?;
                tally.redriven += 1;
            }
            _ => {
                self.skip(g, dl, "another replay is moving it right now");
                tally.skipped += 1;
            }
        }
        Ok(())
    }

    fn skip(&self, g: &Group, dl: &DeadLetter, why: &str) {
        self.bar
            .suspend(|| eprintln!("{} {}: not replayed: {why}", g.name, dl.id));
    }

    /// Entries of the dead-letter stream that are not dead letters: each
    /// reported, counted as not replayed, and left where they are.
    fn others(&self, g: &Group, others: &[(String, String)], tally: &mut Tally) {
        for (id, why) in others {
            self.bar
                .suspend(|| eprintln!("{} {id}: not replayed: {why}; left in place", g.name));
            tally.skipped += 1;
        }
        self.bar.inc(others.len() as u64);
    }

    fn report(&self, g: &Group, t: &Tally) {
        let verb = if self.dry_run {
            "would be re-driven"
        } else {
            "re-driven"
        };
        self.bar.suspend(|| {
            println!(
                "{}: {} {verb}, {} already gone, {} not replayed",
                g.name, t.redriven, t.gone, t.skipped
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stream_ids_are_taken() {
        assert!(stream_id("1700000000000-0"));
        assert!(!stream_id("1700000000000"));
        assert!(!stream_id("-1"));
        assert!(!stream_id("a-1"));
        assert!(!stream_id("1-2-3"));
    }
}
