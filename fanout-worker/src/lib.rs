//! fanout-worker: consumer group `fanout` over the shard streams. Each entry
//! is published on its room's pub/sub channel, then acknowledged; crashed
//! consumers' entries are taken over with `XAUTOCLAIM`; an entry delivered
//! too often goes to the dead-letter stream.

mod cluster_push;
pub use chat_core::settings::fanout as settings;

use chat_core::consumer::{BatchHandler, ConsumerSpec, Messages, Received, ShardConsumer};
use chat_core::keys::Keys;
use chat_core::redis_conn;
use chat_core::redis_conn::Conn;
use settings::FanoutSettings;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The fanout worker's errors are the consumer group's.
pub type FanoutError = chat_core::consumer::GroupError;

pub struct Fanout {
    consumer: ShardConsumer,
    handler: Publisher,
}

/// Publishes what the consumer reads.
struct Publisher {
    settings: FanoutSettings,
    keys: Keys,
    /// Publishes and acks (multiplexed).
    conn: Conn,
    scripts: chat_core::scripts::Scripts,
    /// Set when `summarize.every_messages` is on: rooms due for a summary go to
    /// a task of their own, so the job queue never holds up delivery.
    summaries: Option<tokio::sync::mpsc::Sender<String>>,
}

/// Preview bytes kept in push work (the notifier trims further by characters).
const PREVIEW_BYTES: u64 = 512;

impl Fanout {
    pub async fn build(settings: FanoutSettings) -> Result<Self, FanoutError> {
        chat_core::metrics::register(chat_core::metrics::Service::Fanout);
        let keys = settings.common.keys();
        let url = settings.common.redis_url.clone();
        let mut conn = redis_conn::manager(&url).await?;
        let policy = &settings.common.streams.fanout;
        let spec = ConsumerSpec {
            url: url.clone(),
            group: policy.group.clone(),
            consumer: settings.consumer.clone(),
            batch: policy.batch,
            block: settings.block,
            claim_idle: policy.claim_idle,
            linger: policy.linger,
            acks: settings.common.ack_replicas,
            max_deliveries: policy.max_deliveries,
            dead_letter: keys.dead_letter(&policy.group),
            dead_letter_maxlen: policy.dead_letter_maxlen,
        };
        let consumer = ShardConsumer::connect(spec, conn.clone(), keys.all_shard_streams()).await?;
        let summaries = if settings.common.streams.summarize.every_messages > 0 {
            let jobs =
                chat_jobs::Jobs::connect(keys.clone(), conn.clone(), &settings.jobs_redis_url)
                    .await
                    .map_err(|e| match e {
                        chat_jobs::JobsError::Redis(r) => FanoutError::Redis(r),
                        other => FanoutError::Sink(Box::new(other)),
                    })?;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1024);
            tokio::spawn(async move {
                while let Some(room) = rx.recv().await {
                    match jobs.submit(&room, None, None, "auto").await {
                        Ok(s) => {
                            debug!(room, job = %s.job_id, existing = s.existing, "automatic summary queued")
                        }
                        Err(e) => warn!(room, error = %e, "automatic summary not queued"),
                    }
                }
            });
            Some(tx)
        } else {
            None
        };
        let scripts = chat_core::scripts::Scripts::default();
        scripts
            .notify
            .prepare_invoke()
            .load_async(&mut conn)
            .await?;
        info!(consumer = %settings.consumer, shards = consumer.streams().len(), "fanout worker ready");
        Ok(Self {
            consumer,
            handler: Publisher {
                settings,
                keys,
                conn,
                scripts,
                summaries,
            },
        })
    }

    /// Runs until `shutdown`; the batch in hand is finished and acknowledged first.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), FanoutError> {
        self.consumer.run(&mut self.handler, shutdown).await
    }

    /// Removes consumers left by stopped workers; see [`ShardConsumer`].
    pub async fn remove_dead_consumers(&mut self, idle: Duration) -> Result<usize, FanoutError> {
        self.consumer.remove_dead_consumers(idle).await
    }
}

impl BatchHandler for Publisher {
    type Item = chat_core::protocol::Message;

    async fn handle(&mut self, messages: Messages) -> Result<usize, FanoutError> {
        self.publish(messages).await
    }
}

impl Publisher {
    /// Queues the summaries of rooms whose message count just crossed a
    /// multiple of `summarize.every_messages` (one pending job per room).
    async fn trigger_summaries(&self, rooms: &[&str]) {
        let Some(tx) = &self.summaries else {
            return;
        };
        for room in rooms {
            if tx.try_send((*room).to_owned()).is_err() {
                warn!(
                    room,
                    "summary trigger backlog full; this automatic summary is skipped"
                );
            }
        }
    }

    /// Publishes every message, queues push work and acknowledges the whole
    /// batch: one pipeline, one round trip. Returns how many were published.
    async fn publish(&mut self, messages: Messages) -> Result<usize, FanoutError> {
        let read_us = chat_core::live::unix_us();
        let policy = &self.settings.common.streams.fanout;
        let mut published = 0;
        let mut pipe = redis::pipe();
        // Push work per room: one notify script call per room per batch,
        // in the same pipeline as the publishes.
        let mut by_room: Vec<(&str, Vec<&chat_core::protocol::Message>)> = Vec::new();
        for (_, received) in &messages {
            for Received { item: m, .. } in received {
                self.conn.publish_room(
                    &mut pipe,
                    &self.keys.room_channel(&m.room),
                    chat_core::live::fanout(m, read_us, chat_core::live::unix_us()),
                );
                published += 1;
                // Events (edits, deletes, reactions) are not news: no push,
                // and they do not count toward the summary trigger.
                if !m.kind.is_message() {
                    continue;
                }
                match by_room.iter_mut().find(|(r, _)| *r == m.room) {
                    Some((_, ms)) => ms.push(m),
                    None => by_room.push((&m.room, vec![m])),
                }
            }
        }
        let cluster = self.conn.is_cluster();
        let args = chat_core::scripts::NotifyArgs {
            policy: &self.settings.common.streams.notify,
            preview_bytes: PREVIEW_BYTES,
            summarize_every: self.settings.common.streams.summarize.every_messages,
        };
        // Cluster: one call per room (its own slot), keyed by its outbox.
        let mut room_calls = Vec::new();
        if cluster {
            for (room, messages) in &by_room {
                let call = self.scripts.notify_room(&self.keys, &args, room, messages);
                room_calls.push(cluster_push::RoomCall { room, call });
            }
        } else if !by_room.is_empty() {
            // One notify script call for every room of the batch: it queues the
            // push work and counts messages for the summary trigger.
            let inv = self.scripts.notify_batch(&self.keys, &args, &by_room);
            // Its reply (the only one not ignored) says which rooms to summarize.
            pipe.invoke_script(&inv);
        }
        // The acks come last: the pipeline is not atomic, and an entry must
        // not be acknowledged unless its push work was queued (a re-run
        // counts nothing twice). In a cluster the pipeline is split by slot
        // and its parts run concurrently, so the acks go in a later pipeline.
        let mut acks = redis::pipe();
        chat_core::consumer::ack(&mut acks, &messages, &policy.group);
        if !cluster {
            for cmd in acks.cmd_iter() {
                pipe.add_command(cmd.clone()).ignore();
            }
        }
        if published > 0 {
            let replies: Vec<redis::Value> = match pipe.query_async(&mut self.conn).await {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    // Redis restarted (scripts flushed): load and run the batch again;
                    // publishes and acks repeat harmlessly, the failed scripts ran nothing.
                    self.scripts
                        .notify
                        .prepare_invoke()
                        .load_async(&mut self.conn)
                        .await?;
                    pipe.query_async(&mut self.conn).await?
                }
                r => r?,
            };
            let crossed = if cluster {
                // After the publishes, before the acks.
                let flags = cluster_push::run(
                    &self.conn,
                    &self.scripts,
                    &self.keys,
                    args.policy.maxlen,
                    room_calls,
                )
                .await?;
                let _: () = acks.query_async(&mut self.conn).await?;
                flags
            } else {
                match replies.first() {
                    Some(v) => redis::from_redis_value(v.clone()).map_err(|e| {
                        chat_core::entry::ReplyError(format!("notify returned {v:?}: {e}"))
                    })?,
                    None => Vec::new(),
                }
            };
            debug!(published, "batch handled");
            metrics::counter!("chat_fanout_published_total").increment(published as u64);
            let due: Vec<&str> = by_room
                .iter()
                .zip(&crossed)
                .filter(|(_, c)| **c == 1)
                .map(|((room, _), _)| *room)
                .collect();
            self.trigger_summaries(&due).await;
        }
        Ok(published)
    }
}
