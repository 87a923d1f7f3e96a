//! Push work in Redis Cluster: each room's notify call appends its writes to
//! the room's outbox and returns them (with any a crash left); see
//! `chat_core::outbox`, which applies them.

use crate::FanoutError;
use chat_core::entry::{self, ReplyError};
use chat_core::keys::Keys;
use chat_core::outbox::{self, Outbox};
use chat_core::redis_conn::Conn;
use chat_core::scripts::Scripts;
use futures_util::future::join_all;
use redis::{ScriptInvocation, Value};

/// One room's notify call, built by the caller (key: the room's outbox).
pub struct RoomCall<'a> {
    pub room: &'a str,
    pub call: ScriptInvocation<'a>,
}

/// Runs every room's notify call and queues their push work. Returns the
/// summary flag of each room.
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
    let mut outboxes = Vec::with_capacity(calls.len());
    for (c, reply) in calls.iter().zip(replies) {
        let reply = reply?;
        let [f, entries] = entry::array(&reply)? else {
            return Err(ReplyError(format!("notify returned {reply:?}")).into());
        };
        flags.push(
            entry::array(f)?
                .first()
                .map(entry::int)
                .transpose()?
                .unwrap_or(0),
        );
        outboxes.push(Outbox {
            room: c.room.to_owned(),
            entries: outbox::entries(entries).map_err(FanoutError::from)?,
        });
    }
    outbox::apply(conn, &scripts.due, keys, notify_maxlen, &outboxes)
        .await
        .map_err(FanoutError::from)?;
    Ok(flags)
}
