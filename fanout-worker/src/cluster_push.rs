//! Push work in Redis Cluster. The notify script cannot write the `notify`
//! stream and the due set from a room's slot, so it appends those writes to
//! the room's outbox and returns the outbox; this module applies them and
//! then removes them. A crash or error anywhere in between leaves the
//! outbox in place: the redelivered batch returns it again, so pushes are
//! repeated (the notifier sends a repeated push once) rather than lost.

use crate::FanoutError;
use chat_core::entry::{self, ReplyError};
use chat_core::keys::Keys;
use chat_core::redis_conn::Conn;
use chat_core::scripts::Scripts;
use futures_util::future::join_all;
use redis::{ScriptInvocation, Value};

/// One room's notify call, built by the caller (key: the room's outbox).
pub struct RoomCall<'a> {
    pub room: &'a str,
    pub call: ScriptInvocation<'a>,
}

/// Runs every room's notify call, queues their push work, and clears what
/// was queued from the outboxes. Returns the summary flag of each room.
pub async fn run(
    conn: &Conn,
    scripts: &Scripts,
    keys: &Keys,
    notify_maxlen: u64,
    calls: Vec<RoomCall<'_>>,
) -> Result<Vec<i64>, FanoutError> {
    // Concurrent: each call is one room's slot; a NOSCRIPT is retried per call.
    let replies = join_all(calls.iter().map(|c| {
        let mut conn = conn.clone();
        async move { c.call.invoke_async::<Value>(&mut conn).await }
    }))
    .await;
    let mut flags = Vec::with_capacity(calls.len());
    let mut stream = redis::pipe();
    let mut due = scripts.due.prepare_invoke();
    due.key(keys.notify_due()).arg("ops");
    let mut due_ops = 0;
    let mut clear = redis::pipe();
    for (c, reply) in calls.iter().zip(replies) {
        let reply = reply?;
        let [f, outbox] = entry::array(&reply)? else {
            return Err(ReplyError(format!("notify returned {reply:?}")).into());
        };
        flags.push(
            entry::array(f)?
                .first()
                .map(entry::int)
                .transpose()?
                .unwrap_or(0),
        );
        for raw in entry::array(outbox)? {
            let raw = entry::string(raw)?;
            let op: Vec<String> = serde_json::from_str(&raw)
                .map_err(|e| ReplyError(format!("outbox entry {raw:?}: {e}")))?;
            match op.as_slice() {
                [x, user, room, count, sender, preview, offset, epoch] if x == "x" => {
                    stream
                        .cmd("XADD")
                        .arg(keys.notify_stream())
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(notify_maxlen)
                        .arg("*")
                        .arg(&[
                            ("user", user),
                            ("room", room),
                            ("count", count),
                            ("sender", sender),
                            ("preview", preview),
                            ("offset", offset),
                            ("epoch", epoch),
                        ])
                        .ignore();
                }
                [k, score, member] if k == "z" || k == "r" => {
                    due.arg(k).arg(score).arg(member);
                    due_ops += 1;
                }
                _ => return Err(ReplyError(format!("outbox entry {raw:?}")).into()),
            }
            clear.lrem(keys.room_push_outbox(c.room), 1, raw).ignore();
        }
    }
    if clear.is_empty() {
        return Ok(flags);
    }
    let (mut a, mut b) = (conn.clone(), conn.clone());
    let (queued, scheduled) = tokio::join!(stream.query_async::<()>(&mut a), async {
        if due_ops > 0 {
            due.invoke_async::<Value>(&mut b).await.map(drop)
        } else {
            Ok(())
        }
    });
    queued?;
    scheduled?;
    clear.query_async::<()>(&mut conn.clone()).await?;
    Ok(flags)
}
