//! The Lua scripts, loaded once and called by SHA (`EVALSHA`, falling back to
//! `EVAL` only after a `NOSCRIPT`), and their typed results.

use crate::config::RetentionPolicy;
use crate::entry::{self, ReplyError, room_message};
use crate::keys::Keys;
use crate::protocol::{Ack, Kind, Message, Since};
use crate::redis_conn::Conn;
use redis::Script;

mod push;
pub use push::{DueMember, NotifyArgs};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Reply(#[from] ReplyError),
    /// Stored, but not yet on the replicas `CHAT_REDIS_ACK_REPLICAS` asks
    /// for: not acknowledged (a retry with the same id is answered once
    /// they have it).
    #[error(transparent)]
    Replicas(#[from] crate::replicas::WaitError),
    /// An event refused for what it asks (no such message, not its author...).
    #[error(transparent)]
    Refused(#[from] crate::protocol::Refusal),
}

/// What a client is told when a script fails.
impl From<&ScriptError> for crate::protocol::ErrorCode {
    fn from(e: &ScriptError) -> Self {
        use crate::protocol::ErrorCode;
        match e {
            ScriptError::Redis(r) if crate::redis_conn::is_unavailable(r) => ErrorCode::Unavailable,
            // Stored, but whether the replicas hold it is not known (too
            // few in time, or the node was demoted while asked): not acked;
            // a retry with the same id is answered from the dedup record.
            ScriptError::Replicas(_) => ErrorCode::Unavailable,
            ScriptError::Refused(r) => r.code,
            ScriptError::Redis(_) | ScriptError::Reply(_) => ErrorCode::Internal,
        }
    }
}

/// The scripts, compiled once per process.
pub struct Scripts {
    append: Script,
    join: Script,
    range: Script,
    history: Script,
    thread: Script,
    unread: Script,
    /// Run by fanout inside its batch pipeline (so loaded up front).
    pub notify: Script,
    /// Run by the notifier for collapsed pushes whose window ended.
    pub due: Script,
    /// Whether append and join renew the epoch of a room last written by
    /// another Redis process (`CHAT_REDIS_DURABLE` off, the default): see
    /// docs/design.md, "When Redis loses acknowledged writes".
    check_store: bool,
    /// Appends are acked once this many replicas hold them.
    acks: crate::replicas::AckReplicas,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            check_store: true,
            acks: crate::replicas::AckReplicas::default(),
            append: Script::new(include_str!("append.lua")),
            join: Script::new(concat!(
                include_str!("unread.lua"),
                include_str!("join.lua")
            )),
            unread: Script::new(concat!(
                include_str!("unread.lua"),
                include_str!("unread_one.lua")
            )),
            range: Script::new(concat!(
                include_str!("events.lua"),
                include_str!("range.lua")
            )),
            history: Script::new(concat!(
                include_str!("events.lua"),
                include_str!("history.lua")
            )),
            thread: Script::new(concat!(
                include_str!("events.lua"),
                include_str!("thread.lua")
            )),
            notify: Script::new(include_str!("notify.lua")),
            due: Script::new(include_str!("due.lua")),
        }
    }
}

/// What append and join do with a room last written by another Redis
/// process, `writer` (its run_id): when that process is still a live master
/// of the cluster, the room moved with its slot (resharding) and keeps its
/// epoch ("adopt"); otherwise the process restarted or was replaced, writes
/// it acknowledged may be gone, and the room goes on in a new epoch
/// ("renew"). Asked only when a room's writer changed: rare, so one `INFO`
/// to every master then is cheap.
async fn after_writer_change(conn: &mut Conn, writer: &str) -> Result<&'static str, ScriptError> {
    use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
    let Conn::Cluster(c) = conn else {
        return Ok("renew");
    };
    let mut info = redis::cmd("INFO");
    info.arg("server");
    let reply = c
        .route_command(
            info,
            RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
        )
        .await?;
    let needle = format!("run_id:{writer}");
    Ok(if mentions(&reply, &needle) {
        "adopt"
    } else {
        "renew"
    })
}

/// Whether any text in `v` (nested replies included) contains `needle`.
fn mentions(v: &redis::Value, needle: &str) -> bool {
    use redis::Value;
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).contains(needle),
        Value::SimpleString(s) => s.contains(needle),
        Value::VerbatimString { text, .. } => text.contains(needle),
        Value::Array(items) | Value::Set(items) => items.iter().any(|i| mentions(i, needle)),
        Value::Map(pairs) => pairs
            .iter()
            .any(|(k, v)| mentions(k, needle) || mentions(v, needle)),
        _ => false,
    }
}

/// One message to append.
pub struct AppendRequest<'a> {
    pub room: &'a str,
    pub user: &'a str,
    pub text: &'a str,
    pub client_id: &'a str,
    /// The kind of a message (`Op::Post`); an event's comes from its op.
    pub kind: Kind,
    pub retention: &'a RetentionPolicy,
    pub dedup_window: Duration,
    pub shard_maxlen: u64,
    pub op: Op<'a>,
    /// Refuse a muted user, space posts by slow mode: a user's own frames
    /// (not the admin API's).
    pub checks: Checks,
}

/// The moderation checks an append makes (docs/protocol.md, "Moderation").
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Checks {
    /// Refuse the user when muted in the room.
    pub mute: bool,
    /// The room's slow mode: a user's posts at least this far apart.
    pub slow_mode: Option<Duration>,
}

/// What an append stores (docs/protocol.md, "Conversation events").
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Op<'a> {
    /// A message; `reply_to` names the message it answers.
    #[default]
    Post,
    Reply {
        to: u64,
    },
    /// Events acting on the message at `target` of `epoch` (the current
    /// one when `None`).
    Edit {
        target: u64,
        epoch: Option<&'a str>,
    },
    /// `staff`: the caller may delete anyone's message (a moderator, the admin API).
    Delete {
        target: u64,
        epoch: Option<&'a str>,
        staff: bool,
    },
    React {
        target: u64,
        epoch: Option<&'a str>,
        emoji: &'a str,
        remove: bool,
    },
    /// A `system` message recording a moderation action (JSON).
    Notice {
        action: &'a str,
    },
    /// A post by a room's staff (owner, moderator): no slow mode.
    StaffPost {
        reply_to: Option<u64>,
    },
}

impl Op<'_> {
    fn args(&self) -> (&'static str, u64, &str, &str, &'static str) {
        match *self {
            Op::Post => ("post", 0, "", "", "0"),
            Op::Reply { to } => ("post", to, "", "", "0"),
            Op::StaffPost { reply_to } => ("post", reply_to.unwrap_or(0), "", "", "1"),
            Op::Notice { action } => ("notice", 0, "", action, "1"),
            Op::Edit { target, epoch } => ("edit", target, epoch.unwrap_or(""), "", "0"),
            Op::Delete {
                target,
                epoch,
                staff,
            } => (
                "delete",
                target,
                epoch.unwrap_or(""),
                "",
                if staff { "1" } else { "0" },
            ),
            Op::React {
                target,
                epoch,
                emoji,
                remove,
            } => (
                if remove { "unreact" } else { "react" },
                target,
                epoch.unwrap_or(""),
                emoji,
                "0",
            ),
        }
    }

    /// The kind of the entry stored.
    pub fn kind(&self, message: Kind) -> Kind {
        match self {
            Op::Post | Op::Reply { .. } | Op::StaffPost { .. } => message,
            Op::Notice { .. } => Kind::System,
            Op::Edit { .. } => Kind::Edit,
            Op::Delete { .. } => Kind::Delete,
            Op::React { .. } => Kind::Reaction,
        }
    }
}

/// What `join` found.
#[derive(Debug)]
pub struct Joined {
    pub epoch: String,
    pub last: u64,
    /// `None` when no `since` was given. When true, the messages after
    /// `since.offset` up to `last` are retained and can be streamed with `range`.
    pub recovered: Option<bool>,
    /// The joining user's unread messages (`unread.lua`; 0 without a user).
    pub unread: u64,
}

/// A socket joining a room.
#[derive(Clone, Copy, Debug)]
pub struct JoinRequest<'a> {
    pub room: &'a str,
    /// Recover after this position.
    pub since: Option<&'a Since>,
    /// More missed messages than this are not recovered.
    pub max_recover: u64,
    /// The room's TTL (a new room's meta gets it).
    pub ttl: Duration,
    /// Whose unread count `Joined` carries ("" for none).
    pub user: &'a str,
}

/// One room's unread count for a user.
#[derive(Debug, Clone, PartialEq)]
pub struct Unread {
    /// Empty when the room does not exist.
    pub epoch: String,
    pub last: u64,
    /// Messages of others after the read marker, up to `UNREAD_CAP`.
    pub unread: u64,
    /// The read marker's offset in `epoch` (0 when none there).
    pub read: u64,
}

/// `Unread::unread` counts up to this: it means "this many or more".
pub const UNREAD_CAP: u64 = 100;

/// One history read of the room stream.
#[derive(Debug)]
pub struct HistoryRead {
    /// Empty when the room does not exist.
    pub epoch: String,
    /// Oldest first.
    pub messages: Vec<Message>,
    /// Stream entries read, those that did not parse (skipped from
    /// `messages`) included: a full page when this is the limit asked for.
    pub read: u64,
    /// The offset of the oldest entry read, parsed or not: Redis holds
    /// nothing of the page below it.
    pub oldest: Option<u64>,
}

/// Messages after an offset.
#[derive(Debug)]
pub struct Range {
    /// Empty when the room does not exist.
    pub epoch: String,
    pub last: u64,
    pub messages: Vec<Message>,
    /// Stream entries read, malformed ones (skipped from `messages`)
    /// included: a read that asked for `max` is a full page when this is
    /// `max`, however few `messages` it has.
    pub read: u64,
    /// The offsets of the first and last stream entries read, malformed or
    /// not (`read_to` is where the next read continues). `None` when
    /// nothing was read.
    pub read_from: Option<u64>,
    pub read_to: Option<u64>,
}

/// The messages of a range reply. An entry that does not parse (written by
/// hand, or by something else) is skipped and logged, so one bad entry
/// cannot block a room.
fn messages(room: &str, epoch: &str, es: &[entry::Entry]) -> Vec<Message> {
    es.iter()
        .filter_map(|e| {
            room_message(room, epoch, e)
                .map_err(|err| tracing::warn!(room, id = %e.id, error = %err, "skipping malformed room entry"))
                .ok()
        })
        .collect()
}

/// Removes the fanout shard stream's copies of room entries `ids` (of
/// `room` and `epoch`), so that a deleted message's text does not outlive
/// it there. The copy was added right after the entry (same script on a
/// standalone Redis, the next command in a cluster), so it is looked for
/// among the shard's entries of the seconds around the entry's time, at
/// most `SCAN_MAX` of them.
async fn scrub_shard(
    conn: &mut Conn,
    keys: &Keys,
    room: &str,
    epoch: &str,
    ids: &[String],
) -> Result<(), ScriptError> {
    const SCAN_MAX: usize = 50_000;
    const CHUNK: usize = 1_000;
    let shard = keys.room_shard_stream(room);
    for id in ids {
        let Some((_, ms)) = entry::parse_room_id(id) else {
            continue;
        };
        let mut from = format!("{}-0", ms.saturating_sub(2_000));
        let to = format!("{}-0", ms + 10_000);
        let mut scanned = 0;
        'scan: while scanned < SCAN_MAX {
            let reply: redis::Value = redis::cmd("XRANGE")
                .arg(&shard)
                .arg(&from)
                .arg(&to)
                .arg("COUNT")
                .arg(CHUNK)
                .query_async(conn)
                .await?;
            let es = entry::entries(&reply)?;
            scanned += es.len();
            for e in &es {
                if e.get("i") == Some(id) && e.get("r") == Some(room) && e.get("e") == Some(epoch) {
                    redis::cmd("XDEL")
                        .arg(&shard)
                        .arg(&e.id)
                        .query_async::<redis::Value>(conn)
                        .await?;
                    break 'scan;
                }
            }
            match es.last() {
                Some(last) if es.len() == CHUNK => from = format!("({}", last.id),
                _ => break,
            }
        }
    }
    Ok(())
}

/// A reply's epoch and entries (newest first) as messages, oldest first,
/// with `viewer`'s reactions marked; the entries too.
fn newest_first(
    room: &str,
    epoch: &redis::Value,
    entries: &redis::Value,
    viewer: Option<&str>,
) -> Result<(String, Vec<Message>, Vec<entry::Entry>), ScriptError> {
    let epoch = entry::string(epoch)?;
    let entries = entry::entries(entries)?;
    let mut messages = messages(room, &epoch, &entries);
    messages.reverse();
    for m in &mut messages {
        m.seen_by(viewer);
    }
    Ok((epoch, messages, entries))
}

/// A fresh epoch: random, so a recreated room never reuses an old one.
pub fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

impl Scripts {
    /// The scripts for a store declared durable (`CHAT_REDIS_DURABLE`): a
    /// room keeps its epoch across Redis restarts and failovers. `acks`:
    /// appends wait for replicas (`CHAT_REDIS_ACK_REPLICAS`) before the ack.
    pub fn for_store(durable: bool, acks: crate::replicas::AckReplicas) -> Self {
        Self {
            check_store: !durable,
            acks,
            ..Self::default()
        }
    }

    fn check_arg(&self) -> &'static str {
        if self.check_store { "1" } else { "0" }
    }

    /// Whether a read writes the mark its `WAIT` then covers: with acks
    /// that wait for replicas, nothing is shown that a failover could take
    /// back. `WAIT` is documented to cover the connection's own writes, and
    /// a reader's connection may have written nothing since what it reads.
    fn mark_arg(&self) -> &'static str {
        if self.acks.is_on() { "1" } else { "0" }
    }

    /// Dedup, offset, XADD with trimming, TTL, shard copy: one round trip.
    /// Stores one message. On a standalone Redis this is one script call
    /// that also copies the message to its fanout shard stream. In a cluster
    /// the shard stream is in another slot, so the copy is a second command
    /// before the ack; a retried `send` (a duplicate) adds the copy again, so
    /// an acknowledged message always reaches the shard stream, and its
    /// consumers drop repeats by offset.
    pub async fn append(
        &self,
        conn: &mut Conn,
        keys: &Keys,
        req: &AppendRequest<'_>,
    ) -> Result<Ack, ScriptError> {
        Ok(self.store(conn, keys, req).await?.0)
    }

    /// An event (`req.op`): stored like a message, after its target is
    /// checked. A delete then removes the copies of what it deleted from
    /// the fanout shard stream too (best effort: they also age out with
    /// `shard_maxlen`). A reaction already as asked stores nothing and
    /// answers an ack with offset 0 and `duplicate`.
    pub async fn act(
        &self,
        conn: &mut Conn,
        keys: &Keys,
        req: &AppendRequest<'_>,
    ) -> Result<Ack, ScriptError> {
        let (ack, gone) = self.store(conn, keys, req).await?;
        if !gone.is_empty() {
            scrub_shard(conn, keys, req.room, &ack.epoch, &gone).await?;
        }
        Ok(ack)
    }

    async fn store(
        &self,
        conn: &mut Conn,
        keys: &Keys,
        req: &AppendRequest<'_>,
    ) -> Result<(Ack, Vec<String>), ScriptError> {
        let cluster = conn.is_cluster();
        let mut check = self.check_arg();
        let (op, target, target_epoch, emoji, staff) = req.op.args();
        let kind = req.op.kind(req.kind);
        let reply = loop {
            let mut call = self.append.prepare_invoke();
            call.key(keys.room_meta(req.room))
                .key(keys.room_stream(req.room))
                .key(keys.room_dedup(req.room, req.user, req.client_id))
                .key(keys.room_state(req.room))
                .key(keys.room_threads(req.room))
                .key(keys.room_sanctions(req.room))
                .key(keys.room_slow(req.room));
            if !cluster {
                call.key(keys.room_shard_stream(req.room));
            }
            let reply: redis::Value = call
                .arg(req.room)
                .arg(req.user)
                .arg(req.text)
                .arg(req.client_id)
                .arg(kind.as_str())
                .arg(new_epoch())
                .arg(req.retention.maxlen)
                .arg(req.retention.max_age.map_or(0, crate::clock::millis))
                .arg(secs(req.retention.ttl))
                .arg(secs(req.dedup_window))
                .arg(req.shard_maxlen)
                .arg(check)
                .arg(op)
                .arg(target)
                .arg(target_epoch)
                .arg(emoji)
                .arg(staff)
                .arg(if req.checks.mute { "1" } else { "0" })
                .arg(req.checks.slow_mode.map_or(0, crate::clock::millis))
                .invoke_async(conn)
                .await?;
            match entry::array(&reply)? {
                [flag, writer, _] if check == "1" && entry::int(flag)? == 2 => {
                    check = after_writer_change(conn, &entry::string(writer)?).await?;
                }
                _ => break reply,
            }
        };
        let parts = entry::array(&reply)?;
        let flag = parts.first().map(entry::int).transpose()?;
        let mut gone = Vec::new();
        let (duplicate, epoch, offset, id) = match (flag, parts) {
            (Some(1), [_, stored]) => {
                let s = entry::string(stored)?;
                let mut it = s.splitn(3, '|');
                let (Some(e), Some(o), Some(i)) = (it.next(), it.next(), it.next()) else {
                    return Err(ReplyError(format!("bad dedup record {s:?}")).into());
                };
                let o = o
                    .parse()
                    .map_err(|_| ReplyError("bad dedup offset".into()))?;
                (true, e.to_owned(), o, i.to_owned())
            }
            (Some(0), [_, e, o, i, g]) => {
                gone = entry::array(g)?
                    .iter()
                    .map(entry::string)
                    .collect::<Result<_, _>>()?;
                (
                    false,
                    entry::string(e)?,
                    entry::int(o)? as u64,
                    entry::string(i)?,
                )
            }
            (Some(3), [_, code, message]) => {
                let code: crate::protocol::ErrorCode =
                    serde_json::from_value(serde_json::Value::String(entry::string(code)?))
                        .map_err(|_| ReplyError(format!("append refused with {reply:?}")))?;
                return Err(crate::protocol::Refusal::new(code, entry::string(message)?).into());
            }
            (Some(4), [_]) => {
                // Nothing to change, so nothing to wait for or fan out.
                let ack = Ack {
                    room: req.room.to_owned(),
                    client_id: req.client_id.to_owned(),
                    offset: 0,
                    epoch: String::new(),
                    id: String::new(),
                    ts: 0,
                    duplicate: true,
                };
                return Ok((ack, gone));
            }
            _ => return Err(ReplyError(format!("append returned {reply:?}")).into()),
        };
        let ts = entry::parse_room_id(&id).map_or(0, |(_, ts)| ts);
        // A duplicate rewrote its dedup record, so this covers the first
        // attempt's write too, whichever connection made it.
        self.acks.wait(conn, &keys.room_meta(req.room)).await?;
        if cluster {
            self.copy_to_shard(conn, keys, req, kind, duplicate, &epoch, offset, &id)
                .await?;
        }
        let ack = Ack {
            room: req.room.to_owned(),
            client_id: req.client_id.to_owned(),
            offset,
            epoch,
            id,
            ts,
            duplicate,
        };
        Ok((ack, gone))
    }

    /// The shard copy in a cluster (see `append`). A duplicate's copy is
    /// made from what was stored, not from the retry (whose text could
    /// differ), and so is an event's (the script added what the archive
    /// needs of its target); a stored entry already trimmed is too old to
    /// fan out.
    #[allow(clippy::too_many_arguments)]
    async fn copy_to_shard(
        &self,
        conn: &mut Conn,
        keys: &Keys,
        req: &AppendRequest<'_>,
        kind: Kind,
        duplicate: bool,
        epoch: &str,
        offset: u64,
        id: &str,
    ) -> Result<(), ScriptError> {
        let fields: Vec<(String, String)> = if duplicate || !kind.is_message() {
            let reply: redis::Value = redis::cmd("XRANGE")
                .arg(keys.room_stream(req.room))
                .arg(id)
                .arg(id)
                .query_async(conn)
                .await?;
            match entry::entries(&reply)?.into_iter().next() {
                Some(e) => e.fields,
                None => return Ok(()),
            }
        } else {
            let mut f = vec![
                ("u".to_owned(), req.user.to_owned()),
                ("t".to_owned(), req.text.to_owned()),
                ("c".to_owned(), req.client_id.to_owned()),
                ("k".to_owned(), kind.as_str().to_owned()),
            ];
            match req.op {
                Op::Reply { to } | Op::StaffPost { reply_to: Some(to) } => {
                    f.push(("p".to_owned(), to.to_string()))
                }
                Op::Notice { action } => f.push(("a".to_owned(), action.to_owned())),
                _ => {}
            }
            f
        };
        let mut cmd = redis::cmd("XADD");
        cmd.arg(keys.room_shard_stream(req.room))
            .arg("MAXLEN")
            .arg("~")
            .arg(req.shard_maxlen)
            .arg("*")
            .arg("r")
            .arg(req.room)
            .arg("e")
            .arg(epoch)
            .arg("o")
            .arg(offset)
            .arg("i")
            .arg(id);
        for (k, v) in &fields {
            cmd.arg(k).arg(v);
        }
        cmd.query_async::<redis::Value>(conn).await?;
        self.acks
            .wait(conn, &keys.room_shard_stream(req.room))
            .await?;
        Ok(())
    }

    /// The room's epoch and last offset (creating the epoch for a new room),
    /// and with `since` whether every missed message is retained.
    pub async fn join(
        &self,
        conn: &mut Conn,
        keys: &Keys,
        req: &JoinRequest<'_>,
    ) -> Result<Joined, ScriptError> {
        let JoinRequest {
            room,
            since,
            max_recover,
            ttl,
            user,
        } = *req;
        let mut check = self.check_arg();
        let reply = loop {
            let reply: redis::Value = self
                .join
                .key(keys.room_meta(room))
                .key(keys.room_stream(room))
                .key(keys.room_state(room))
                .key(keys.room_threads(room))
                .key(keys.room_reads(room))
                .arg(new_epoch())
                .arg(secs(ttl))
                .arg(since.map_or("", |s| s.epoch.as_str()))
                .arg(since.map_or(0, |s| s.offset))
                .arg(max_recover)
                .arg(check)
                .arg(self.mark_arg())
                .arg(user)
                .invoke_async(conn)
                .await?;
            match entry::array(&reply)? {
                [w, writer, _, _]
                    if check == "1" && entry::string(w).is_ok_and(|w| w == "writer") =>
                {
                    check = after_writer_change(conn, &entry::string(writer)?).await?;
                }
                _ => break reply,
            }
        };
        // The last offset a joiner is told must not be one a failover takes back.
        self.acks.wait(conn, &keys.room_meta(room)).await?;
        let [e, last, rec, unread] = entry::array(&reply)? else {
            return Err(ReplyError(format!("join returned {reply:?}")).into());
        };
        let epoch = entry::string(e)?;
        let recovered = match entry::int(rec)? {
            -1 => None,
            0 => Some(false),
            _ => Some(true),
        };
        Ok(Joined {
            epoch,
            last: entry::int(last)? as u64,
            recovered,
            unread: entry::int(unread)? as u64,
        })
    }

    /// `user`'s unread count in `room`: the messages of others after the
    /// read marker, up to `UNREAD_CAP`.
    pub async fn unread(
        &self,
        conn: &mut Conn,
        keys: &Keys,
        room: &str,
        user: &str,
    ) -> Result<Unread, ScriptError> {
        let reply: redis::Value = self
            .unread
            .key(keys.room_meta(room))
            .key(keys.room_stream(room))
            .key(keys.room_reads(room))
            .arg(user)
            .invoke_async(conn)
            .await?;
        let [e, last, n, read] = entry::array(&reply)? else {
            return Err(ReplyError(format!("unread returned {reply:?}")).into());
        };
        Ok(Unread {
            epoch: entry::string(e)?,
            last: entry::int(last)? as u64,
            unread: entry::int(n)? as u64,
            read: entry::int(read)? as u64,
        })
    }

    /// Up to `max` messages after `after`, with the room's epoch and last offset.
    pub async fn range(
        &self,
        conn: &mut Conn,
        keys: &Keys,
        room: &str,
        after: u64,
        max: u64,
    ) -> Result<Range, ScriptError> {
        let reply: redis::Value = self
            .range
            .key(keys.room_meta(room))
            .key(keys.room_stream(room))
            .key(keys.room_state(room))
            .arg(after)
            .arg(max.max(1))
            .arg(self.mark_arg())
            .invoke_async(conn)
            .await?;
        self.acks.wait(conn, &keys.room_meta(room)).await?;
        let [e, last, es] = entry::array(&reply)? else {
            return Err(ReplyError(format!("range returned {reply:?}")).into());
        };
        let epoch = entry::string(e)?;
        let entries = entry::entries(es)?;
        let offset = |e: &entry::Entry| entry::parse_room_id(&e.id).map(|(offset, _)| offset);
        let read_from = entries.first().and_then(offset);
        let read_to = entries.last().and_then(offset);
        Ok(Range {
            messages: messages(room, &epoch, &entries),
            epoch,
            last: entry::int(last)? as u64,
            read: entries.len() as u64,
            read_from,
            read_to,
        })
    }

    /// The `limit` messages just below `before` (or the newest), oldest
    /// first, as they are now (edited text, tombstones, reactions with
    /// `viewer`'s marked, reply counts). The epoch is empty when the room
    /// does not exist.
    pub async fn history(
        &self,
        conn: &mut Conn,
        keys: &Keys,
        room: &str,
        before: Option<u64>,
        limit: u32,
        viewer: Option<&str>,
    ) -> Result<HistoryRead, ScriptError> {
        let before_arg = match before {
            Some(b) => b.to_string(),
            None => String::new(),
        };
        let reply: redis::Value = self
            .history
            .key(keys.room_meta(room))
            .key(keys.room_stream(room))
            .key(keys.room_state(room))
            .key(keys.room_threads(room))
            .arg(before_arg)
            .arg(limit.max(1))
            .arg(self.mark_arg())
            .invoke_async(conn)
            .await?;
        self.acks.wait(conn, &keys.room_meta(room)).await?;
        let [e, es] = entry::array(&reply)? else {
            return Err(ReplyError(format!("history returned {reply:?}")).into());
        };
        let (epoch, messages, entries) = newest_first(room, e, es, viewer)?;
        Ok(HistoryRead {
            messages,
            epoch,
            read: entries.len() as u64,
            oldest: entries
                .last()
                .and_then(|e| entry::parse_room_id(&e.id))
                .map(|(offset, _)| offset),
        })
    }

    /// The `limit` newest replies to `parent` below `before` (or the
    /// newest), oldest first, as `history` shows them. `read` counts the
    /// replies listed, so a page is full when it is `limit`.
    pub async fn thread(
        &self,
        conn: &mut Conn,
        keys: &Keys,
        room: &str,
        parent: u64,
        (before, limit): (Option<u64>, u32),
        viewer: Option<&str>,
    ) -> Result<HistoryRead, ScriptError> {
        let reply: redis::Value = self
            .thread
            .key(keys.room_meta(room))
            .key(keys.room_stream(room))
            .key(keys.room_state(room))
            .key(keys.room_threads(room))
            .arg(parent)
            .arg(before.map(|b| b.to_string()).unwrap_or_default())
            .arg(limit.max(1))
            .arg(self.mark_arg())
            .invoke_async(conn)
            .await?;
        self.acks.wait(conn, &keys.room_meta(room)).await?;
        let [e, es, listed] = entry::array(&reply)? else {
            return Err(ReplyError(format!("thread returned {reply:?}")).into());
        };
        let (epoch, messages, _) = newest_first(room, e, es, viewer)?;
        Ok(HistoryRead {
            oldest: messages.first().map(|m| m.offset),
            messages,
            epoch,
            read: entry::int(listed)? as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;
    use crate::replicas::WaitError;
    use redis::{ErrorKind, RedisError, ServerErrorKind};

    fn code(e: ScriptError) -> ErrorCode {
        ErrorCode::from(&e)
    }

    #[test]
    fn a_store_between_roles_is_unavailable_and_a_bad_reply_internal() {
        let server = |k| ErrorKind::Server(k);
        for kind in [
            ServerErrorKind::ReadOnly,
            ServerErrorKind::BusyLoading,
            ServerErrorKind::MasterDown,
            ServerErrorKind::TryAgain,
            ServerErrorKind::ClusterDown,
        ] {
            let e = RedisError::from((server(kind), "between roles"));
            assert_eq!(
                code(ScriptError::Redis(e)),
                ErrorCode::Unavailable,
                "{kind:?}"
            );
        }
        // WAIT asked of a primary demoted mid-failover: stored, unconfirmed.
        let demoted = RedisError::from((
            server(ServerErrorKind::ResponseError),
            "WAIT cannot be used with replica instances",
        ));
        assert_eq!(
            code(ScriptError::Replicas(WaitError::Redis(demoted))),
            ErrorCode::Unavailable
        );
        let short = WaitError::Short {
            got: 0,
            want: 1,
            timeout: std::time::Duration::from_millis(1),
        };
        assert_eq!(code(ScriptError::Replicas(short)), ErrorCode::Unavailable);
        let wrong = RedisError::from((server(ServerErrorKind::ResponseError), "WRONGTYPE"));
        assert_eq!(code(ScriptError::Redis(wrong)), ErrorCode::Internal);
        assert_eq!(
            code(ScriptError::Reply(ReplyError("append returned nil".into()))),
            ErrorCode::Internal
        );
    }
}
