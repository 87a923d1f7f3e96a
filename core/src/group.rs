//! Consumer-group plumbing shared by the workers (fanout, notifier): creating
//! the groups, parsing `XREADGROUP`/`XAUTOCLAIM`/`XPENDING`/`XINFO` replies,
//! and the dead-letter stream.

use crate::entry::{self, Entry, ReplyError};
use crate::redis_conn::Conn;
use redis::Value;

/// Creates the group on every stream (with `MKSTREAM`); an existing group is fine.
pub async fn ensure_groups(
    conn: &mut Conn,
    streams: &[String],
    group: &str,
) -> redis::RedisResult<()> {
    for s in streams {
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(s)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match r {
            Ok(()) => tracing::info!(stream = %s, group, "consumer group created"),
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `[[stream, entries], ...]` (RESP2) or a map (RESP3).
pub fn read_reply(v: &Value) -> Result<Vec<(String, Vec<Entry>)>, ReplyError> {
    let mut out = Vec::new();
    match v {
        Value::Nil => {}
        Value::Map(m) => {
            for (k, es) in m {
                out.push((entry::string(k)?, entry::entries(es)?));
            }
        }
        other => {
            for s in entry::array(other)? {
                let [name, es] = entry::array(s)? else {
                    return Err(ReplyError("stream reply is not [name, entries]".into()));
                };
                out.push((entry::string(name)?, entry::entries(es)?));
            }
        }
    }
    Ok(out)
}

/// `XAUTOCLAIM` reply: next cursor, claimed entries, ids deleted meanwhile.
pub fn autoclaim_reply(v: &Value) -> Result<(String, Vec<Entry>, Vec<String>), ReplyError> {
    let parts = entry::array(v)?;
    let (next, es) = match parts {
        [next, es, ..] => (entry::string(next)?, entry::entries(es)?),
        _ => return Err(ReplyError("XAUTOCLAIM reply too short".into())),
    };
    let deleted = match parts.get(2) {
        Some(d) => entry::array(d)?
            .iter()
            .map(entry::string)
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    Ok((next, es, deleted))
}

/// Delivery counts from `XPENDING key group IDLE 0 start end count`.
pub fn pending_counts(v: &Value) -> Result<Vec<(String, u64)>, ReplyError> {
    entry::array(v)?
        .iter()
        .map(|row| {
            let r = entry::array(row)?;
            let [id, _consumer, _idle, n] = r else {
                return Err(ReplyError(
                    "XPENDING row is not [id, consumer, idle, count]".into(),
                ));
            };
            Ok((entry::string(id)?, entry::int(n)? as u64))
        })
        .collect()
}

/// Adds one `XACK` of `ids` on `stream` (its reply ignored); nothing when
/// `ids` is empty.
pub fn ack<I: redis::ToRedisArgs>(
    pipe: &mut redis::Pipeline,
    stream: &str,
    group: &str,
    ids: &[I],
) {
    if !ids.is_empty() {
        pipe.cmd("XACK").arg(stream).arg(group).arg(ids).ignore();
    }
}

/// Prefix of the dead-lettered entry's own fields in a dead letter.
pub const DEAD_LETTER_FIELD: &str = "f.";

/// A dead letter as [`dead_letter`] writes it: `stream` (where the entry was
/// read), `entry` (its id there), `reason`, then the entry's fields each as
/// `f.<field>`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The dead letter's own id in the dead-letter stream.
    pub id: String,
    pub stream: String,
    pub entry: String,
    pub reason: String,
    /// The dead-lettered entry's fields, in their order.
    pub fields: Vec<(String, String)>,
}

impl DeadLetter {
    /// `None` for an entry not written by [`dead_letter`] (no `stream`).
    pub fn parse(e: &Entry) -> Option<Self> {
        let fields = e
            .fields
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(DEAD_LETTER_FIELD)?.to_owned(), v.clone())))
            .collect();
        Some(Self {
            id: e.id.clone(),
            stream: e.get("stream")?.to_owned(),
            entry: e.get("entry").unwrap_or_default().to_owned(),
            reason: e.get("reason").unwrap_or_default().to_owned(),
            fields,
        })
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Adds an entry to the dead-letter stream with where it came from and why.
pub fn dead_letter(
    pipe: &mut redis::Pipeline,
    dlq: &str,
    maxlen: u64,
    stream: &str,
    e: &Entry,
    reason: &str,
) {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(dlq)
        .arg("MAXLEN")
        .arg("~")
        .arg(maxlen)
        .arg("*")
        .arg("stream")
        .arg(stream)
        .arg("entry")
        .arg(&e.id)
        .arg("reason")
        .arg(reason);
    for (k, v) in &e.fields {
        cmd.arg(format!("{DEAD_LETTER_FIELD}{k}")).arg(v);
    }
    pipe.add_command(cmd).ignore();
}

/// Consumers of `XINFO CONSUMERS` with no pending entries and idle longer
/// than `idle_ms`: what crashed or stopped workers leave behind.
pub fn idle_consumers(v: &Value, idle_ms: i64) -> Result<Vec<String>, ReplyError> {
    let mut out = Vec::new();
    for c in entry::array(v)? {
        let pairs: Vec<(String, &Value)> = match c {
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| Ok((entry::string(k)?, v)))
                .collect::<Result<_, ReplyError>>()?,
            other => entry::array(other)?
                .chunks(2)
                .filter_map(|kv| match kv {
                    [k, v] => Some(entry::string(k).map(|k| (k, v))),
                    _ => None,
                })
                .collect::<Result<_, _>>()?,
        };
        let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        let (Some(name), Some(pending), Some(idle)) = (get("name"), get("pending"), get("idle"))
        else {
            continue;
        };
        if entry::int(pending)? == 0 && entry::int(idle)? > idle_ms {
            out.push(entry::string(name)?);
        }
    }
    Ok(out)
}

/// Delivery counts of exactly these entries: one `XPENDING key group id id 1`
/// each, pipelined (a range query would return whatever else is pending in
/// between instead).
pub async fn delivery_counts(
    conn: &mut crate::redis_conn::Conn,
    stream: &str,
    group: &str,
    ids: &[&str],
) -> Result<std::collections::HashMap<String, u64>, crate::scripts::ScriptError> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .arg(*id)
            .arg(*id)
            .arg(1);
    }
    let replies: Vec<Value> = pipe.query_async(conn).await?;
    let mut out = std::collections::HashMap::new();
    for r in &replies {
        out.extend(pending_counts(r)?);
    }
    Ok(out)
}

/// Sets the `chat_group_lag` and `chat_group_pending` gauges of a group,
/// summed over its streams, and `chat_group_shard_lag` per stream (`XINFO GROUPS`).
pub async fn report_gauges(conn: &mut crate::redis_conn::Conn, streams: &[String], group: &str) {
    let mut pipe = redis::pipe();
    for s in streams {
        pipe.cmd("XINFO").arg("GROUPS").arg(s);
    }
    let Ok(replies) = pipe
        .query_async::<Vec<redis::streams::StreamInfoGroupsReply>>(conn)
        .await
    else {
        return;
    };
    let (mut lag, mut pending) = (0u64, 0u64);
    for (s, r) in streams.iter().zip(&replies) {
        for g in r.groups.iter().filter(|g| g.name == group) {
            lag += g.lag.unwrap_or(0) as u64;
            pending += g.pending as u64;
            // Per shard too: one slow shard hides in a sum.
            metrics::gauge!("chat_group_shard_lag", "group" => group.to_owned(), "stream" => s.clone())
                .set(g.lag.unwrap_or(0) as f64);
        }
    }
    metrics::gauge!("chat_group_lag", "group" => group.to_owned()).set(lag as f64);
    metrics::gauge!("chat_group_pending", "group" => group.to_owned()).set(pending as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_reads_back_as_written() {
        let e = Entry {
            id: "5-0".into(),
            fields: vec![("r".into(), "room".into()), ("t".into(), "f.x".into())],
        };
        let mut pipe = redis::pipe();
        dead_letter(
            &mut pipe,
            "chat:dlq:{g}",
            10,
            "chat:fanout:{1}",
            &e,
            "malformed",
        );
        let cmd = pipe.cmd_iter().next().expect("one XADD");
        let args: Vec<String> = cmd
            .args_iter()
            .filter_map(|a| match a {
                redis::Arg::Simple(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect();
        // XADD key MAXLEN ~ n * field value ...
        let fields: Vec<(String, String)> = args[6..]
            .chunks(2)
            .map(|kv| (kv[0].clone(), kv[1].clone()))
            .collect();
        let dl = DeadLetter::parse(&Entry {
            id: "9-1".into(),
            fields,
        })
        .expect("a dead letter");
        assert_eq!(
            (dl.stream.as_str(), dl.entry.as_str(), dl.reason.as_str()),
            ("chat:fanout:{1}", "5-0", "malformed")
        );
        assert_eq!(dl.fields, e.fields);
        assert_eq!(dl.field("t"), Some("f.x"));
        assert_eq!(
            DeadLetter::parse(&Entry {
                id: "1-1".into(),
                fields: vec![]
            }),
            None
        );
    }
}
