//! notifier-worker: consumer group `notifier` on the `notify` stream. Each
//! work item is a push for one offline user about one room; it is sent
//! through FCM HTTP v1 to each of the user's devices, once, and acknowledged
//! only when every device is settled. Collapsed pushes whose window ended
//! are queued here too. Without FCM credentials it runs dry.

pub mod fcm;
pub mod oauth;
pub mod payload;
pub use chat_core::settings::notifier as settings;
pub use chat_core::settings::service_account;
pub mod work;

use chat_core::entry::Entry;
use chat_core::group;
use chat_core::keys::Keys;
use chat_core::redis_conn;
use chat_core::redis_conn::Conn;
use chat_core::scripts::{DueMember, ScriptError, Scripts};
use settings::NotifierSettings;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};
use work::{Ctx, Outcome, Sender, WorkItem};

#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Reply(#[from] chat_core::entry::ReplyError),
    #[error("fcm: {0}")]
    Fcm(#[from] oauth::TokenError),
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Replicas(#[from] chat_core::replicas::WaitError),
}

impl From<ScriptError> for NotifierError {
    fn from(e: ScriptError) -> Self {
        match e {
            ScriptError::Redis(r) => Self::Redis(r),
            ScriptError::Reply(r) => Self::Reply(r),
            ScriptError::Replicas(r) => Self::Replicas(r),
        }
    }
}

struct InFlight(Arc<Mutex<HashSet<String>>>, String);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

/// How often collapsed pushes are checked for the end of their window.
const DUE_EVERY: Duration = Duration::from_millis(500);

pub struct Notifier {
    settings: NotifierSettings,
    keys: Keys,
    conn: Conn,
    reader: Conn,
    ctx: Arc<Ctx>,
    scripts: Scripts,
    tasks: JoinSet<()>,
    /// Entry ids being worked on here; their pending idle time is reset
    /// (`XCLAIM ... JUSTID`) so no one takes them over while we retry.
    in_flight: Arc<Mutex<HashSet<String>>>,
    last_claim: Instant,
    last_due: Instant,
    /// `XAUTOCLAIM` cursor: each round continues where the last stopped.
    claim_cursor: String,
}

impl Notifier {
    pub async fn build(settings: NotifierSettings) -> Result<Self, NotifierError> {
        let keys = settings.common.keys();
        let url = settings.common.redis_url.clone();
        let mut conn = redis_conn::manager(&url).await?;
        let reader = redis_conn::blocking(&url, settings.block).await?;
        let policy = &settings.common.streams.notify;
        group::ensure_groups(&mut conn, &[keys.notify_stream()], &policy.group).await?;
        let sender = match &settings.fcm {
            Some(f) => {
                let http = reqwest::Client::builder()
                    .timeout(settings.request_timeout)
                    .build()?;
                let tokens =
                    oauth::TokenSource::new(f.account.clone(), f.token_uri.clone(), http.clone())?;
                info!(project = %f.account.project_id, endpoint = %f.endpoint, "sending through FCM");
                Sender::Fcm(Box::new(fcm::FcmClient::new(
                    http,
                    &f.endpoint,
                    &f.account.project_id,
                    tokens,
                )))
            }
            None => {
                warn!(
                    "no FCM service account (CHAT_FCM_SERVICE_ACCOUNT): dry run, pushes go to the outbox stream"
                );
                Sender::DryRun {
                    outbox_maxlen: policy.outbox_maxlen,
                }
            }
        };
        let ctx = Arc::new(Ctx {
            keys: keys.clone(),
            redis: conn.clone(),
            sender,
            requests: tokio::sync::Semaphore::new(settings.concurrency),
            claim_send: redis::Script::new(include_str!("claim_send.lua")),
            worker: settings.consumer.clone(),
            lease: (settings.request_timeout * 2).max(settings.backoff_max)
                + Duration::from_secs(1),
            max_attempts: settings.max_attempts,
            backoff: chat_core::backoff::Backoff::new(settings.backoff_base, settings.backoff_max),
            paused_until: std::sync::atomic::AtomicU64::new(0),
        });
        info!(consumer = %settings.consumer, "notifier ready");
        Ok(Self {
            settings,
            keys,
            conn,
            reader,
            ctx,
            scripts: Scripts::default(),
            tasks: JoinSet::new(),
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            last_claim: Instant::now(),
            last_due: Instant::now(),
            claim_cursor: "0-0".into(),
        })
    }

    fn group(&self) -> String {
        self.settings.common.streams.notify.group.clone()
    }

    fn stream(&self) -> String {
        self.keys.notify_stream()
    }

    fn busy(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Runs until `shutdown`; items in hand get `grace` to finish, the rest
    /// stay pending for another worker.
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Result<(), NotifierError> {
        let claim_every = self.settings.common.streams.notify.claim_idle / 3;
        let mut backoff = chat_core::backoff::Backoff::redis();
        while !shutdown.is_cancelled() {
            while self.tasks.try_join_next().is_some() {}
            let result = if self.last_due.elapsed() >= DUE_EVERY {
                self.last_due = Instant::now();
                self.run_due().await.map(|_| ())
            } else if self.last_claim.elapsed() >= claim_every {
                self.last_claim = Instant::now();
                match self.touch().await {
                    Ok(()) => self.claim().await.map(|_| ()),
                    Err(e) => Err(e),
                }
            } else if self.busy() >= self.settings.max_in_flight {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(())
            } else {
                self.step().await.map(|_| ())
            };
            match result {
                Ok(()) => backoff.reset(),
                Err(NotifierError::Redis(e)) if e.code() == Some("NOGROUP") => {
                    warn!("notify group missing; recreating");
                    let (group, stream) = (self.group(), self.stream());
                    if let Err(e) = group::ensure_groups(&mut self.conn, &[stream], &group).await {
                        warn!(error = %e, "recreating the notify group failed");
                    }
                }
                Err(e) => {
                    warn!(error = %e, "notifier step failed; backing off");
                    if !backoff.sleep(&shutdown).await {
                        break;
                    }
                }
            }
        }
        let _ = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        info!(consumer = %self.settings.consumer, "notifier stopped");
        Ok(())
    }

    /// Reads new work (blocking up to `block`) and starts it. Returns how many.
    pub async fn step(&mut self) -> Result<usize, NotifierError> {
        let room = self
            .settings
            .max_in_flight
            .saturating_sub(self.busy())
            .clamp(1, 256);
        let reply: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(self.group())
            .arg(&self.settings.consumer)
            .arg("COUNT")
            .arg(room)
            .arg("BLOCK")
            .arg(chat_core::clock::millis(self.settings.block))
            .arg("STREAMS")
            .arg(self.stream())
            .arg(">")
            .query_async(&mut self.reader)
            .await?;
        let mut n = 0;
        for (_, entries) in group::read_reply(&reply)? {
            for e in entries {
                self.start(e).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Takes over work idle longer than `claim_idle` (a crashed notifier's);
    /// work delivered too often goes to the dead-letter stream.
    pub async fn claim(&mut self) -> Result<usize, NotifierError> {
        let policy = self.settings.common.streams.notify.clone();
        let (group, stream) = (self.group(), self.stream());
        group::report_gauges(&mut self.conn, std::slice::from_ref(&stream), &group).await;
        let reply: redis::Value = redis::cmd("XAUTOCLAIM")
            .arg(&stream)
            .arg(&group)
            .arg(&self.settings.consumer)
            .arg(chat_core::clock::millis(policy.claim_idle))
            .arg(&self.claim_cursor)
            .arg("COUNT")
            .arg(256)
            .query_async(&mut self.conn)
            .await?;
        let (next, entries, deleted) = group::autoclaim_reply(&reply)?;
        self.claim_cursor = next;
        if !deleted.is_empty() {
            let _: () = redis::cmd("XACK")
                .arg(&stream)
                .arg(&group)
                .arg(&deleted)
                .query_async(&mut self.conn)
                .await?;
        }
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let counts = group::delivery_counts(&mut self.conn, &stream, &group, &ids).await?;
        let mut n = 0;
        for e in entries {
            if self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&e.id)
            {
                continue;
            }
            if counts
                .get(&e.id)
                .is_some_and(|&c| c > policy.max_deliveries)
            {
                warn!(id = %e.id, "push work delivered too often; dead-lettered");
                self.dead_letter(&e, "max_deliveries").await?;
                continue;
            }
            info!(id = %e.id, "took over push work");
            self.start(e).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Queues the collapsed pushes whose window has ended, in rounds of 256
    /// until none is due (bounded, so a huge backlog cannot starve the rest).
    pub async fn run_due(&mut self) -> Result<u64, NotifierError> {
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
                .due_batch(
                    &self.keys,
                    ROUND,
                    self.settings.common.streams.notify.maxlen,
                )
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
    async fn run_due_cluster(&mut self, round: u64) -> Result<u64, NotifierError> {
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
        let notify = &self.settings.common.streams.notify;
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

    /// Resets the idle time of the work in hand, without counting a delivery.
    async fn touch(&mut self) -> Result<(), NotifierError> {
        let ids: Vec<String> = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(self.stream())
            .arg(self.group())
            .arg(&self.settings.consumer)
            .arg(0)
            .arg(&ids)
            .arg("JUSTID")
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }

    async fn dead_letter(&mut self, e: &Entry, reason: &str) -> Result<(), NotifierError> {
        metrics::counter!("chat_dead_lettered_total", "group" => self.group()).increment(1);
        let policy = &self.settings.common.streams.notify;
        let mut pipe = redis::pipe();
        group::dead_letter(
            &mut pipe,
            &self.keys.dead_letter(&policy.group),
            self.settings.common.streams.fanout.dead_letter_maxlen,
            &self.stream(),
            e,
            reason,
        );
        pipe.query_async::<()>(&mut self.conn).await?;
        // Acknowledged only once dead-lettered (another slot in a cluster).
        redis::cmd("XACK")
            .arg(self.stream())
            .arg(&policy.group)
            .arg(&e.id)
            .query_async::<()>(&mut self.conn)
            .await?;
        Ok(())
    }

    async fn start(&mut self, e: Entry) -> Result<(), NotifierError> {
        let Some(item) = WorkItem::parse(&e) else {
            warn!(id = %e.id, "malformed push work; dead-lettered");
            return self.dead_letter(&e, "malformed").await;
        };
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(e.id.clone());
        let (ctx, in_flight) = (self.ctx.clone(), self.in_flight.clone());
        let (mut conn, stream, group) = (self.conn.clone(), self.stream(), self.group());
        let span =
            tracing::info_span!("push", user = %item.user, room = %item.room, item = %item.id);
        self.tasks.spawn(
            async move {
                let id = item.id.clone();
                // Leaves the in-flight set however the task ends (a panic included).
                let _guard = InFlight(in_flight, id.clone());
                let outcome = work::process(ctx, item).await;
                if outcome == Outcome::Done {
                    // Acknowledged only once every device is settled.
                    let r: redis::RedisResult<i64> =
                        redis::cmd("XACK").arg(&stream).arg(&group).arg(&id).query_async(&mut conn).await;
                    if let Err(e) = r {
                        warn!(error = %e, "ack failed; the item will be redelivered (sends are idempotent)");
                    }
                }
                }
            .instrument(span),
        );
        Ok(())
    }
}
