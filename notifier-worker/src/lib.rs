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

mod due;

use chat_core::consumer::{BatchHandler, ConsumerSpec, GroupError, Item, Messages, ShardConsumer};
use chat_core::entry::{Entry, ReplyError};
use chat_core::redis_conn;
use chat_core::redis_conn::Conn;
use settings::NotifierSettings;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};
use work::{Ctx, Outcome, Sender, WorkItem};

#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("fcm: {0}")]
    Fcm(#[from] oauth::TokenError),
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Group(#[from] GroupError),
}

/// A work item, as the consumer hands it on: parsed, or dead-lettered
/// `malformed`.
impl Item for WorkItem {
    fn parse(entry: &Entry) -> Result<Self, ReplyError> {
        WorkItem::parse(entry).ok_or_else(|| ReplyError("not a push work item".into()))
    }
}

/// Entry ids being worked on here.
type InFlightSet = Arc<Mutex<HashSet<String>>>;

/// Leaves the in-flight set however its task ends (a panic included).
struct InFlight(InFlightSet, String);

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.0).remove(&self.1);
    }
}

fn lock(set: &InFlightSet) -> std::sync::MutexGuard<'_, HashSet<String>> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Notifier {
    settings: NotifierSettings,
    consumer: ShardConsumer,
    pusher: Pusher,
    due: due::Due,
}

/// The consumer's handler: starts each item as its own task (sends retry
/// with backoff, so items must not wait for each other) and acknowledges it
/// there once every device is settled.
struct Pusher {
    ctx: Arc<Ctx>,
    conn: Conn,
    stream: String,
    group: String,
    tasks: JoinSet<()>,
    /// Their pending idle time is reset (`XCLAIM ... JUSTID`) so no one
    /// takes them over while they retry.
    in_flight: InFlightSet,
    max_in_flight: usize,
}

impl Notifier {
    pub async fn build(settings: NotifierSettings) -> Result<Self, NotifierError> {
        chat_core::metrics::register(chat_core::metrics::Service::Notifier);
        let keys = settings.common.keys();
        let url = settings.common.redis_url.clone();
        let conn = redis_conn::manager(&url).await?;
        let policy = &settings.common.streams.notify;
        let spec = ConsumerSpec {
            url: url.clone(),
            group: policy.group.clone(),
            consumer: settings.consumer.clone(),
            batch: settings.max_in_flight.clamp(1, 256),
            block: settings.block,
            claim_idle: policy.claim_idle,
            linger: Duration::ZERO,
            acks: settings.common.ack_replicas,
            max_deliveries: policy.max_deliveries,
            dead_letter: keys.dead_letter(&policy.group),
            dead_letter_maxlen: settings.common.streams.fanout.dead_letter_maxlen,
        };
        let consumer =
            ShardConsumer::connect(spec, conn.clone(), vec![keys.notify_stream()]).await?;
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
            scripts: chat_core::scripts::Scripts::default(),
        });
        info!(consumer = %settings.consumer, "notifier ready");
        let pusher = Pusher {
            ctx,
            conn: conn.clone(),
            stream: keys.notify_stream(),
            group: policy.group.clone(),
            tasks: JoinSet::new(),
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            max_in_flight: settings.max_in_flight.max(1),
        };
        let due = due::Due::new(keys, conn, policy.clone());
        Ok(Self {
            settings,
            consumer,
            pusher,
            due,
        })
    }

    /// Runs until `shutdown`; items in hand get `grace` to finish, the rest
    /// stay pending for another worker. Beside the consumer run the due pass
    /// (collapsed pushes whose window ended) and the touch of the items in
    /// hand.
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Result<(), NotifierError> {
        let claim_idle = self.settings.common.streams.notify.claim_idle;
        let due = tokio::spawn(self.due.run(shutdown.clone()));
        let touch = tokio::spawn(touch_in_flight(
            self.pusher.conn.clone(),
            self.consumer.spec().clone(),
            self.pusher.stream.clone(),
            self.pusher.in_flight.clone(),
            claim_idle / 3,
            shutdown.clone(),
        ));
        let result = self.consumer.run(&mut self.pusher, shutdown).await;
        let _ = tokio::time::timeout(grace, async {
            while self.pusher.tasks.join_next().await.is_some() {}
        })
        .await;
        self.pusher.tasks.abort_all();
        let _ = due.await;
        let _ = touch.await;
        info!(consumer = %self.settings.consumer, "notifier stopped");
        Ok(result?)
    }
}

/// Resets the idle time of the work in hand every `every`, without counting
/// a delivery, so the group's takeover (after `claim_idle`) never sees it.
async fn touch_in_flight(
    mut conn: Conn,
    spec: ConsumerSpec,
    stream: String,
    in_flight: InFlightSet,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        let ids: Vec<String> = lock(&in_flight).iter().cloned().collect();
        if ids.is_empty() {
            continue;
        }
        let r: redis::RedisResult<redis::Value> = redis::cmd("XCLAIM")
            .arg(&stream)
            .arg(&spec.group)
            .arg(&spec.consumer)
            .arg(0)
            .arg(&ids)
            .arg("JUSTID")
            .query_async(&mut conn)
            .await;
        if let Err(e) = r {
            warn!(error = %e, "touching the work in hand failed; retried next round");
        }
    }
}

impl BatchHandler for Pusher {
    type Item = WorkItem;

    /// Waits for a free slot: no more than `max_in_flight` items in hand.
    async fn ready(&mut self) -> Result<(), GroupError> {
        while self.tasks.try_join_next().is_some() {}
        while lock(&self.in_flight).len() >= self.max_in_flight {
            if self.tasks.join_next().await.is_none() {
                break;
            }
        }
        Ok(())
    }

    async fn handle(&mut self, messages: Messages<WorkItem>) -> Result<usize, GroupError> {
        let mut n = 0;
        for (_, received) in messages {
            for r in received {
                // Taken over from ourselves: it is still being worked on.
                if !lock(&self.in_flight).insert(r.entry.id.clone()) {
                    continue;
                }
                self.start(r.item);
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Pusher {
    fn start(&mut self, item: WorkItem) {
        let (ctx, in_flight) = (self.ctx.clone(), self.in_flight.clone());
        let (mut conn, stream, group) =
            (self.conn.clone(), self.stream.clone(), self.group.clone());
        let span =
            tracing::info_span!("push", user = %item.user, room = %item.room, item = %item.id);
        self.tasks.spawn(
            async move {
                let id = item.id.clone();
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
    }
}
