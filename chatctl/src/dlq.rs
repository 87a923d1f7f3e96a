//! `chatctl dlq`: the dead-letter streams of the consumer groups
//! (`chat:dlq:{group}`). Each dead letter is what `chat_core::group::
//! dead_letter` wrote: the stream the entry was read from, its id there, the
//! reason, and the entry's own fields as `f.<field>`. `list` shows them;
//! `replay` re-drives them into the stream their group reads.

pub mod replay;

use crate::context::Context;
use crate::output;
use anyhow::bail;
use chat_core::entry;
use chat_core::group::DeadLetter;
use chat_core::redis_conn::Conn;
use serde_json::json;

/// A consumer group with a dead-letter stream, and what it reads.
pub struct Group {
    /// `fanout`, `archive`, `webhooks` or `notify`: the section of streams.toml.
    pub kind: &'static str,
    /// The group's configured name (the dead-letter stream's tag).
    pub name: String,
    pub dlq: String,
    /// The streams the group reads now.
    pub sources: Vec<String>,
    /// The `MAXLEN ~` its writers keep those streams at.
    pub maxlen: u64,
}

impl Group {
    /// Where a dead letter goes back to: the stream it came from while the
    /// group still reads it; else, for a shard entry, its room's shard now
    /// (the shard count changed since).
    pub fn target(&self, ctx: &Context, dl: &DeadLetter) -> Result<String, String> {
        if self.sources.contains(&dl.stream) {
            return Ok(dl.stream.clone());
        }
        if self.kind != "notify"
            && let Some(room) = dl.field("r").filter(|r| chat_core::pattern::valid_room(r))
        {
            return Ok(ctx.keys.room_shard_stream(room));
        }
        Err(format!(
            "it came from {}, which group {} does not read now",
            dl.stream, self.name
        ))
    }
}

/// Every group with a dead-letter stream, as configured.
pub fn groups(ctx: &Context) -> Vec<Group> {
    let s = &ctx.common.streams;
    let shards = ctx.keys.all_shard_streams();
    vec![
        Group {
            kind: "fanout",
            name: s.fanout.group.clone(),
            dlq: ctx.keys.dead_letter(&s.fanout.group),
            sources: shards.clone(),
            maxlen: s.fanout.shard_maxlen,
        },
        Group {
            kind: "archive",
            name: s.archive.group.clone(),
            dlq: ctx.keys.dead_letter(&s.archive.group),
            sources: shards,
            maxlen: s.fanout.shard_maxlen,
        },
        Group {
            kind: "webhooks",
            name: s.webhooks.group.clone(),
            dlq: ctx.keys.dead_letter(&s.webhooks.group),
            // Its dead letters go back to the re-drive stream, which only
            // this group reads, for the endpoint each one failed at.
            sources: {
                let mut all = ctx.keys.all_shard_streams();
                all.push(ctx.keys.webhook_redrive());
                all
            },
            maxlen: s.fanout.shard_maxlen,
        },
        Group {
            kind: "notify",
            name: s.notify.group.clone(),
            dlq: ctx.keys.dead_letter(&s.notify.group),
            sources: vec![ctx.keys.notify_stream()],
            maxlen: s.notify.maxlen,
        },
    ]
}

/// The groups `--group` names (by group name, as `dlq list` prints them;
/// a streams.toml section name such as `notify` works too), every group
/// when none is named.
pub fn select(ctx: &Context, wanted: &[String]) -> anyhow::Result<Vec<Group>> {
    let all = groups(ctx);
    if wanted.is_empty() {
        return Ok(all);
    }
    for w in wanted {
        if !all.iter().any(|g| matches(g, w)) {
            let names: Vec<&str> = all.iter().map(|g| g.name.as_str()).collect();
            bail!(
                "no consumer group {w:?} with dead letters; there are: {}",
                names.join(", ")
            );
        }
    }
    Ok(all
        .into_iter()
        .filter(|g| wanted.iter().any(|w| matches(g, w)))
        .collect())
}

fn matches(g: &Group, wanted: &str) -> bool {
    wanted == g.kind || wanted == g.name || (g.kind == "notify" && wanted == "notifier")
}

/// One read of a dead-letter stream.
pub struct Page {
    pub letters: Vec<DeadLetter>,
    /// Entries there that are not dead letters (written by something else,
    /// or by hand): their ids and why. Nothing reads or moves them.
    pub others: Vec<(String, String)>,
    /// The id of the last entry read, dead letter or not: where the next
    /// read continues. `None` when nothing was read.
    pub last_id: Option<String>,
}

impl Page {
    /// Entries read, dead letters or not.
    pub fn read(&self) -> usize {
        self.letters.len() + self.others.len()
    }
}

/// Up to `count` entries from `start` (inclusive, or `(id` exclusive) to
/// `end`. An entry that is not a dead letter does not fail the read: it
/// is set apart in [`Page::others`] for the caller to report.
pub async fn range(
    conn: &mut Conn,
    dlq: &str,
    start: &str,
    end: &str,
    count: usize,
) -> anyhow::Result<Page> {
    let v: redis::Value = redis::cmd("XRANGE")
        .arg(dlq)
        .arg(start)
        .arg(end)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    let entries = entry::entries(&v)?;
    let mut page = Page {
        letters: Vec::new(),
        others: Vec::new(),
        last_id: entries.last().map(|e| e.id.clone()),
    };
    for e in &entries {
        match DeadLetter::parse(e) {
            Some(dl) => page.letters.push(dl),
            None => page.others.push((
                e.id.clone(),
                "not a dead letter (no `stream` field)".to_owned(),
            )),
        }
    }
    Ok(page)
}

/// When a stream id's entry was written (ms).
fn id_ms(id: &str) -> u64 {
    id.split_once('-')
        .and_then(|(ms, _)| ms.parse().ok())
        .unwrap_or(0)
}

/// What the entry was, in a few words: the message of a shard entry, the
/// push of a notify entry, else its fields.
fn describe(dl: &DeadLetter) -> String {
    let f = |k: &str| dl.field(k).unwrap_or("?");
    if dl.field("r").is_some() && dl.field("o").is_some() {
        let text: String = output::one_line(f("t")).chars().take(60).collect();
        format!(
            "room={} offset={} user={} text={text}",
            f("r"),
            f("o"),
            f("u")
        )
    } else if dl.field("user").is_some() && dl.field("room").is_some() {
        format!(
            "push user={} room={} offset={}",
            f("user"),
            f("room"),
            f("offset")
        )
    } else {
        let all: Vec<String> = dl
            .fields
            .iter()
            .map(|(k, v)| format!("{k}={}", output::one_line(v)))
            .collect();
        all.join(" ").chars().take(120).collect()
    }
}

pub struct ListArgs {
    pub streams: Vec<String>,
    pub json: bool,
    pub limit: usize,
}

pub async fn list(ctx: &Context, args: ListArgs) -> anyhow::Result<()> {
    let groups = select(ctx, &args.streams)?;
    let mut conn = ctx.redis().await?;
    let mut totals = Vec::new();
    for g in &groups {
        let total: u64 = redis::cmd("XLEN")
            .arg(&g.dlq)
            .query_async(&mut conn)
            .await?;
        let page = range(&mut conn, &g.dlq, "-", "+", args.limit).await?;
        for (id, why) in &page.others {
            eprintln!("{} {id}: skipped: {why}", g.name);
        }
        for dl in &page.letters {
            if args.json {
                let fields: serde_json::Map<String, serde_json::Value> = dl
                    .fields
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                output::line(
                    &json!({
                        "group": g.name, "dlq": g.dlq, "id": dl.id, "ts": id_ms(&dl.id),
                        "reason": dl.reason, "stream": dl.stream, "entry": dl.entry,
                        "fields": fields,
                    })
                    .to_string(),
                )?;
            } else {
                output::line(&format!(
                    "{:<9} {:<16} {}  {:<16} {} {}  {}",
                    g.name,
                    dl.id,
                    output::time(id_ms(&dl.id)),
                    output::one_line(&dl.reason),
                    dl.stream,
                    dl.entry,
                    describe(dl)
                ))?;
            }
        }
        totals.push((g, total, page.read(), page.others.len()));
    }
    if !args.json {
        for (g, total, read, others) in totals {
            let more = if (read as u64) < total {
                format!(" (the oldest {read} shown; --limit)")
            } else {
                String::new()
            };
            // XLEN counts the entries that are not dead letters too.
            let letters = total.saturating_sub(others as u64);
            let others = match others {
                0 => String::new(),
                1 => "; 1 entry that is not a dead letter skipped (see stderr)".to_owned(),
                n => format!("; {n} entries that are not dead letters skipped (see stderr)"),
            };
            output::line(&format!(
                "{}: {letters} dead letter{} in {}{more}{others}",
                g.name,
                if letters == 1 { "" } else { "s" },
                g.dlq
            ))?;
        }
    }
    Ok(())
}
