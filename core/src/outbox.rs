//! Push work in Redis Cluster, applied from a room's outbox. The notify and
//! due scripts run in a room's slot and cannot write the `notify` stream or
//! the due set (other slots), so they append those writes to the room's
//! outbox list and return them, with any entries older than 10 s (left by a
//! caller that crashed or failed); `apply` performs them and then removes
//! exactly what it performed. An error or a crash before the removal leaves
//! the entries for a later call on that room to return: push work is
//! repeated (the notifier sends a repeated push once), never lost. Callers
//! still applying their own fresh entries are not raced into repeats.
//!
//! An entry is a JSON array `[nonce, kind, ...]`: `x` user room count sender
//! preview offset epoch (queue a push), `z` score member (schedule a trailing
//! push unless scheduled), `r` max-score member (unschedule unless
//! rescheduled after max-score). The nonce makes entries unique, so removing
//! one never removes a later identical one.

use crate::keys::Keys;
use crate::redis_conn::Conn;
use crate::scripts::ScriptError;
use redis::Value;

/// The outbox entries one script call returned, with their room.
pub struct Outbox {
    pub room: String,
    pub entries: Vec<String>,
}

/// Parses a script's outbox reply (a list of strings).
pub fn entries(v: &Value) -> Result<Vec<String>, ScriptError> {
    Ok(crate::entry::array(v)?
        .iter()
        .map(crate::entry::string)
        .collect::<Result<_, _>>()?)
}

/// Performs every entry, then removes them from their outboxes. `due` is
/// the due script (`Scripts::due`).
pub async fn apply(
    conn: &Conn,
    due_script: &redis::Script,
    keys: &Keys,
    notify_maxlen: u64,
    outboxes: &[Outbox],
) -> Result<(), ScriptError> {
    let mut stream = redis::pipe();
    let mut due = due_script.prepare_invoke();
    due.key(keys.notify_due()).arg("ops");
    let mut due_ops = 0;
    let mut clear = redis::pipe();
    for o in outboxes {
        for raw in &o.entries {
            clear.lrem(keys.room_push_outbox(&o.room), 1, raw).ignore();
            let op: Vec<String> = match serde_json::from_str(raw) {
                Ok(op) => op,
                Err(e) => {
                    // Dropped, not retried: it would block the room's push work.
                    tracing::warn!(room = %o.room, entry = %raw, error = %e, "unreadable outbox entry dropped");
                    continue;
                }
            };
            match op.as_slice() {
                [_, x, user, room, count, sender, preview, offset, epoch] if x == "x" => {
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
                [_, k, score, member] if k == "z" || k == "r" => {
                    due.arg(k).arg(score).arg(member);
                    due_ops += 1;
                }
                _ => tracing::warn!(room = %o.room, entry = %raw, "unknown outbox entry dropped"),
            }
        }
    }
    if clear.is_empty() {
        return Ok(());
    }
    let (mut a, mut b) = (conn.clone(), conn.clone());
    let (queued, scheduled) = tokio::join!(
        async {
            if stream.is_empty() {
                Ok(())
            } else {
                stream.query_async::<()>(&mut a).await
            }
        },
        async {
            if due_ops > 0 {
                due.invoke_async::<Value>(&mut b).await.map(drop)
            } else {
                Ok(())
            }
        }
    );
    queued?;
    scheduled?;
    clear.query_async::<()>(&mut conn.clone()).await?;
    Ok(())
}
