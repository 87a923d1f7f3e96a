//! The due pass: collapsed pushes whose window has ended are queued as
//! work on the notify stream (`due.lua`), twice a second, beside the
//! consumer.

use chat_core::backoff::Backoff;
use chat_core::config::NotifyPolicy;
use chat_core::keys::Keys;
use chat_core::redis_conn::Conn;
use chat_core::scripts::{DueMember, ScriptError, Scripts};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How often collapsed pushes are checked for the end of their window.
const DUE_EVERY: Duration = Duration::from_millis(500);

pub struct Due {
    keys: Keys,
    conn: Conn,
    scripts: Scripts,
    policy: NotifyPolicy,
}

impl Due {
    pub fn new(keys: Keys, conn: Conn, policy: NotifyPolicy) -> Self {
        Self {
            keys,
            conn,
            scripts: Scripts::default(),
            policy,
        }
    }

    /// Every `DUE_EVERY` until `shutdown`, backing off while Redis fails.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::redis();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(DUE_EVERY) => {}
                _ = shutdown.cancelled() => return,
            }
            match self.run_due().await {
                Ok(_) => backoff.reset(),
                Err(e) => {
                    warn!(error = %e, "due pass failed; backing off");
                    if !backoff.sleep(&shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    /// Queues the collapsed pushes whose window has ended, in rounds of 256
    /// until none is due (bounded, so a huge backlog cannot starve the rest).
    async fn run_due(&mut self) -> Result<u64, ScriptError> {
        const ROUND: u64 = 256;
        let mut total = 0;
        for _ in 0..40 {
            if self.conn.is_cluster() {
                let n = self.run_due_cluster(ROUND).await?;
                total += n;
                if n < ROUND {
                    break;
                }
                continue;
            }
            let n: u64 = self
                .scripts
                .due_batch(&self.keys, ROUND, self.policy.maxlen)
                .invoke_async(&mut self.conn)
                .await?;
            total += n;
            if n < ROUND {
                break;
            }
        }
        Ok(total)
    }

    /// `run_due` in a Redis Cluster, where the due set, the collapse state
    /// and the notify stream live in different slots. Each due member is
    /// removed first (only the notifier whose `ZREM` removed it goes on; a
    /// push scheduled meanwhile re-adds it), then its push is taken in its
    /// room's slot into the room's outbox (`due.lua`, single-member form),
    /// and the outboxes are applied (`chat_core::outbox`): a failure after
    /// the take repeats the push later instead of losing it. A take that
    /// fails puts its member back.
    async fn run_due_cluster(&mut self, round: u64) -> Result<u64, ScriptError> {
        let now = chat_core::clock::now_ms();
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.notify_due())
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(round)
            .query_async(&mut self.conn)
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut remove = redis::pipe();
        for m in &due {
            remove.zrem(self.keys.notify_due(), m);
        }
        let removed: Vec<i64> = remove.query_async(&mut self.conn).await?;
        let mine: Vec<(&String, DueMember<'_>)> = due
            .iter()
            .zip(removed)
            .filter(|(_, n)| *n == 1)
            .filter_map(|(m, _)| Some((m, DueMember::decode(m)?)))
            .collect();
        let notify = &self.policy;
        let taken = futures_util::future::join_all(mine.iter().map(|(_, member)| {
            let mut conn = self.conn.clone();
            let call = self.scripts.due_one(&self.keys, member, notify);
            async move { call.invoke_async::<redis::Value>(&mut conn).await }
        }))
        .await;
        let mut outboxes = Vec::new();
        for ((member, DueMember { room, user, .. }), reply) in mine.iter().zip(taken) {
            let entries = reply
                .map_err(ScriptError::from)
                .and_then(|v| chat_core::outbox::entries(&v));
            match entries {
                Ok(entries) => outboxes.push(chat_core::outbox::Outbox {
                    room: (*room).to_owned(),
                    entries,
                }),
                Err(e) => {
                    warn!(room, user, error = %e, "trailing push not taken; rescheduled");
                    let _: redis::RedisResult<()> = redis::cmd("ZADD")
                        .arg(self.keys.notify_due())
                        .arg("NX")
                        .arg(now)
                        .arg(*member)
                        .query_async(&mut self.conn)
                        .await;
                }
            }
        }
        chat_core::outbox::apply(
            &self.conn,
            &self.scripts.due,
            &self.keys,
            notify.maxlen,
            &outboxes,
        )
        .await?;
        Ok(due.len() as u64)
    }
}
