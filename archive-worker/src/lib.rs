//! archive-worker: consumer group `archive` over the fanout shard streams,
//! independent of the fanout group. Each batch is upserted into MongoDB in
//! one unordered write and acknowledged only after MongoDB acknowledged it
//! with the configured write concern. A redelivered batch upserts nothing
//! new; a crashed worker's entries are taken over with `XAUTOCLAIM`; an entry
//! MongoDB refuses for good, or one delivered too often, goes to the
//! dead-letter stream with the reason. While MongoDB is down the worker
//! reads nothing more: it probes until MongoDB answers, and the pending list
//! and the stream hold the messages meanwhile.

use chat_archive as store;
pub use chat_core::settings::archive as settings;
use chat_core::tombstone::RoomTombstone;

use chat_core::consumer::{BatchHandler, ConsumerSpec, GroupError, Messages, ShardConsumer};
use chat_core::group;
use chat_core::keys::Keys;
use chat_core::protocol::Kind;
use chat_core::redis_conn::{self, Conn};
use settings::ArchiveSettings;
use std::collections::HashMap;
use store::{Store, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub struct Archive {
    consumer: ShardConsumer,
    handler: Archiver,
}

struct Archiver {
    settings: ArchiveSettings,
    keys: Keys,
    /// Dead letters and acks (multiplexed).
    conn: Conn,
    store: Store,
    /// False until the indexes exist, and after a failed write until
    /// MongoDB answers again.
    healthy: bool,
}

/// How long the archive waits after a small batch before reading again.
const ARCHIVE_LINGER: std::time::Duration = std::time::Duration::from_millis(2);

impl Archive {
    pub async fn build(settings: ArchiveSettings) -> Result<Self, GroupError> {
        chat_core::metrics::register(chat_core::metrics::Service::Archive);
        let keys = settings.common.keys();
        let url = settings.common.redis_url.clone();
        let conn = redis_conn::manager(&url).await?;
        let policy = &settings.common.streams.archive;
        let store = Store::connect(&settings.mongodb, &policy.collection)
            .await
            .map_err(|e| GroupError::Sink(Box::new(e)))?;
        let spec = ConsumerSpec {
            url,
            group: policy.group.clone(),
            consumer: settings.consumer.clone(),
            batch: policy.batch,
            block: settings.block,
            claim_idle: policy.claim_idle,
            // No one waits on the archive: fuller batches, fewer writes.
            linger: ARCHIVE_LINGER,
            acks: settings.common.ack_replicas,
            max_deliveries: policy.max_deliveries,
            dead_letter: keys.dead_letter(&policy.group),
            dead_letter_maxlen: settings.common.streams.fanout.dead_letter_maxlen,
        };
        let consumer = ShardConsumer::connect(spec, conn.clone(), keys.all_shard_streams()).await?;
        info!(consumer = %settings.consumer, shards = consumer.streams().len(), "archive worker ready");
        Ok(Self {
            consumer,
            handler: Archiver {
                settings,
                keys,
                conn,
                store,
                healthy: false,
            },
        })
    }

    /// Runs until `shutdown`; the batch in hand is written and acknowledged first.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), GroupError> {
        self.consumer.run(&mut self.handler, shutdown).await
    }
}

impl BatchHandler for Archiver {
    type Item = chat_core::protocol::Message;

    async fn ready(&mut self) -> Result<(), GroupError> {
        if self.healthy {
            return Ok(());
        }
        let probe = async {
            self.store.ping().await?;
            self.store.ensure_indexes().await
        };
        match probe.await {
            Ok(()) => {
                info!("mongodb reachable; archiving");
                self.healthy = true;
                Ok(())
            }
            Err(e) => {
                metrics::counter!("chat_mongodb_errors_total", "op" => "probe").increment(1);
                Err(GroupError::Sink(Box::new(e)))
            }
        }
    }

    async fn handle(&mut self, messages: Messages) -> Result<usize, GroupError> {
        self.archive(messages).await
    }
}

impl Archiver {
    /// Drops the documents of rooms deleted after they were stored: a
    /// deletion removes the archived messages, and must not see them come
    /// back from entries still pending (one round trip per batch).
    async fn skip_deleted(
        &mut self,
        docs: &mut Vec<mongodb::bson::Document>,
        origin: &mut Vec<(usize, usize)>,
    ) -> Result<(), GroupError> {
        let mut rooms: Vec<&str> = docs.iter().filter_map(|d| d.get_str("room").ok()).collect();
        rooms.sort_unstable();
        rooms.dedup();
        if rooms.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for room in &rooms {
            pipe.get(self.keys.room_deleted(room));
        }
        let deleted: Vec<Option<String>> = pipe.query_async(&mut self.conn).await?;
        let cutoff: HashMap<String, (u64, String)> = rooms
            .iter()
            .zip(deleted)
            .filter_map(|(r, d)| {
                let t = RoomTombstone::decode(d.as_deref()?)?;
                Some(((*r).to_owned(), (t.at_ms, t.epoch.to_owned())))
            })
            .collect();
        if cutoff.is_empty() {
            return Ok(());
        }
        let mut keep = Vec::with_capacity(docs.len());
        let mut keep_origin = Vec::with_capacity(docs.len());
        for (d, o) in docs.drain(..).zip(origin.drain(..)) {
            let gone = d
                .get_str("room")
                .ok()
                .and_then(|r| cutoff.get(r))
                // Stored before the deletion, or in the deleted epoch
                // (appended between the notice and the removal of the keys).
                .is_some_and(|(at, epoch)| {
                    d.get_str("epoch").is_ok_and(|e| e == epoch)
                        || store::int(d.get("ts"))
                            .is_some_and(|ts| u64::try_from(ts).is_ok_and(|ts| ts <= *at))
                });
            if !gone {
                keep.push(d);
                keep_origin.push(o);
            }
        }
        *docs = keep;
        *origin = keep_origin;
        Ok(())
    }

    async fn one_by_one(
        &mut self,
        docs: &[mongodb::bson::Document],
    ) -> Result<Vec<store::Refused>, GroupError> {
        let mut refused = Vec::new();
        for (index, d) in docs.iter().enumerate() {
            match self.store.upsert(std::slice::from_ref(d)).await {
                Ok(r) => refused.extend(r.into_iter().map(|r| store::Refused { index, ..r })),
                // Only a refusal of this document dead-letters it.
                Err(StoreError::Refused(reason)) => refused.push(store::Refused { index, reason }),
                // Anything else (a write concern not met, a failover, a
                // timeout) is retried later with the whole batch.
                Err(e) => {
                    if self.store.ping().await.is_err() {
                        self.healthy = false;
                    }
                    return Err(GroupError::Sink(Box::new(e)));
                }
            }
        }
        Ok(refused)
    }

    /// Writes the batch's messages, dead-letters those MongoDB refuses, then
    /// acknowledges every entry of the batch.
    async fn archive(&mut self, batch: Messages) -> Result<usize, GroupError> {
        // The policy is shared (an Arc): held apart from `self`.
        let streams = self.settings.common.streams.clone();
        let policy = &streams.archive;
        let dlq = self.keys.dead_letter(&policy.group);
        let maxlen = streams.fanout.dead_letter_maxlen;
        let mut pipe = redis::pipe();
        let mut docs = Vec::new();
        // (stream, entry index) of each document, to name a refused one.
        let mut origin = Vec::new();
        let mut total = 0;
        for (si, (_, received)) in batch.iter().enumerate() {
            for (ei, r) in received.iter().enumerate() {
                total += 1;
                let keep = streams.retention(&r.item.room).archive_for;
                docs.push(store::document(&r.item, keep));
                origin.push((si, ei));
            }
        }
        if total == 0 {
            return Ok(0);
        }
        self.skip_deleted(&mut docs, &mut origin).await?;
        let refused = match self.store.upsert(&docs).await {
            Ok(r) => r,
            Err(e) => {
                metrics::counter!("chat_mongodb_errors_total", "op" => "write").increment(1);
                if self.store.ping().await.is_err() {
                    // Down: nothing is acknowledged; the entries stay pending
                    // and are written again once MongoDB answers.
                    self.healthy = false;
                    return Err(GroupError::Sink(Box::new(e)));
                }
                // Up, yet the batch failed: one document may be what it
                // cannot take (the driver refuses an oversized command before
                // sending it). One by one, so only that one is dead-lettered.
                self.one_by_one(&docs).await?
            }
        };
        // Deletes take the text out of what they deleted, after the batch
        // (which may hold the message itself) is written.
        for (_, received) in batch.iter() {
            for r in received.iter().filter(|r| r.item.kind == Kind::Delete) {
                let keep = streams.retention(&r.item.room).archive_for;
                if let Err(e) = self.store.apply_delete(&r.item, keep).await {
                    metrics::counter!("chat_mongodb_errors_total", "op" => "write").increment(1);
                    return Err(GroupError::Sink(Box::new(e)));
                }
            }
        }
        for r in &refused {
            let (si, ei) = origin[r.index];
            let (stream, received) = &batch[si];
            let entry = &received[ei].entry;
            warn!(stream = %stream, id = %entry.id, reason = %r.reason, "mongodb refused a message; dead-lettered");
            // A stable prefix operators can filter on, then MongoDB's words.
            let reason = format!("refused: {}", r.reason);
            group::dead_letter(&mut pipe, &dlq, maxlen, stream, entry, &reason);
        }
        // Dead letters are written (and checked) before any ack: a cluster
        // runs a pipeline's slots concurrently, and a refused XADD must not
        // leave its entry acknowledged.
        if pipe.cmd_iter().next().is_some() {
            let _: () = pipe.query_async(&mut self.conn).await?;
        }
        let mut acks = redis::pipe();
        chat_core::consumer::ack(&mut acks, &batch, &policy.group);
        let _: () = acks.query_async(&mut self.conn).await?;
        let archived = docs.len() - refused.len();
        let dead = refused.len();
        metrics::counter!("chat_archived_total").increment(archived as u64);
        metrics::histogram!("chat_archive_batch_size").record(docs.len() as f64);
        if dead > 0 {
            metrics::counter!("chat_dead_lettered_total", "group" => policy.group.clone())
                .increment(dead as u64);
        }
        Ok(total)
    }
}
