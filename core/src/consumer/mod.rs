//! A consumer in a group, shared by every worker that reads a stream in a
//! consumer group (fanout and archive over the shard streams, the notifier
//! over the notify stream): reading new entries (one
//! `XREADGROUP` over every shard on a standalone Redis, a reader per shard in
//! Redis Cluster), taking over a crashed consumer's entries with
//! `XAUTOCLAIM`, removing consumers that stopped, dead-lettering what is
//! malformed or delivered too often, and the loop that hands the rest, parsed
//! as the handler's [`Item`], to a [`BatchHandler`] until shutdown.

mod shard_reader;

use crate::entry::{Entry, ReplyError, shard_message};
use crate::group;
use crate::redis_conn::{self, Conn};
use shard_reader::{ReadSpec, ShardFeed};
use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Entries by stream, as one read returned them.
pub type Batch = Vec<(String, Vec<Entry>)>;

/// What a group's entries carry, parsed once by the consumer: an entry that
/// does not parse is dead-lettered `malformed` and never reaches a handler.
pub trait Item: Sized + Send {
    fn parse(entry: &Entry) -> Result<Self, ReplyError>;
}

/// A fanout shard entry carries a stored message.
impl Item for crate::protocol::Message {
    fn parse(entry: &Entry) -> Result<Self, ReplyError> {
        shard_message(entry)
    }
}

/// An entry and what it carries.
#[derive(Debug)]
pub struct Received<T = crate::protocol::Message> {
    pub entry: Entry,
    pub item: T,
}

/// What a handler is given: by stream, the entries that parsed and were not
/// delivered too often (the consumer dead-lettered the others).
pub type Messages<T = crate::protocol::Message> = Vec<(String, Vec<Received<T>>)>;

/// Acknowledges every entry of `messages` (one `XACK` per stream).
pub fn ack<T>(pipe: &mut redis::Pipeline, messages: &Messages<T>, group: &str) {
    for (stream, received) in messages {
        let ids: Vec<&str> = received.iter().map(|r| r.entry.id.as_str()).collect();
        group::ack(pipe, stream, group, &ids);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Reply(#[from] ReplyError),
    /// The handler's own destination failed (e.g. MongoDB): nothing of the
    /// batch was acknowledged, so it is retried after a backoff.
    #[error("destination: {0}")]
    Sink(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Read, but not yet on the replicas `CHAT_REDIS_ACK_REPLICAS` asks for:
    /// not handed on (the entries stay pending and are taken over later).
    #[error(transparent)]
    Replicas(#[from] crate::replicas::WaitError),
}

impl From<crate::scripts::ScriptError> for GroupError {
    fn from(e: crate::scripts::ScriptError) -> Self {
        match e {
            crate::scripts::ScriptError::Redis(r) => Self::Redis(r),
            crate::scripts::ScriptError::Reply(r) => Self::Reply(r),
            crate::scripts::ScriptError::Replicas(r) => Self::Replicas(r),
            crate::scripts::ScriptError::Refused(r) => {
                Self::Reply(crate::entry::ReplyError(r.to_string()))
            }
        }
    }
}

/// What a consumer is and how it reads.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    pub url: String,
    pub group: String,
    /// Unique per process.
    pub consumer: String,
    /// Entries per read.
    pub batch: usize,
    /// How long one read blocks; also bounds how fast a shutdown is noticed.
    pub block: Duration,
    /// Pending entries idle this long are taken over.
    pub claim_idle: Duration,
    /// How long to wait after a small batch before reading again (zero:
    /// read again at once); see `FanoutPolicy::linger`.
    pub linger: Duration,
    /// Entries are handed on only once this many replicas hold them
    /// (`CHAT_REDIS_ACK_REPLICAS`), so nothing delivered can vanish in a
    /// failover.
    pub acks: crate::replicas::AckReplicas,
    /// An entry taken over more often than this is dead-lettered.
    pub max_deliveries: u64,
    /// The dead-letter stream (`Keys::dead_letter`) and its cap.
    pub dead_letter: String,
    pub dead_letter_maxlen: u64,
}

/// Handles what the consumer reads, parsed. The handler acknowledges what it
/// finished; it returns how many entries it handled.
pub trait BatchHandler {
    type Item: Item;

    /// Whether the handler can work now. While it says no (its destination
    /// is down), the consumer neither reads nor takes over entries: their
    /// delivery counts must not climb towards the dead-letter limit for an
    /// outage that is not theirs.
    fn ready(&mut self) -> impl Future<Output = Result<(), GroupError>> + Send {
        async { Ok(()) }
    }

    fn handle(
        &mut self,
        messages: Messages<Self::Item>,
    ) -> impl Future<Output = Result<usize, GroupError>> + Send;
}

enum Reader {
    /// One `XREADGROUP` over every shard stream (standalone Redis).
    Streams(Conn),
    /// A reader per shard (Redis Cluster).
    Shards(ShardFeed),
}

pub struct ShardConsumer {
    spec: ConsumerSpec,
    streams: Vec<String>,
    /// Claims and group administration (multiplexed).
    conn: Conn,
    /// Blocking reads, on their own socket(s).
    reader: Reader,
}

/// Consumers idle this long with nothing pending are removed from the group.
const DEAD_CONSUMER_IDLE: Duration = Duration::from_secs(3600);

/// Most `XAUTOCLAIM` pages per stream in one claim pass.
const CLAIM_PAGES: usize = 100;

impl ShardConsumer {
    /// Creates the group on every stream (if missing) and starts reading.
    pub async fn connect(
        spec: ConsumerSpec,
        mut conn: Conn,
        streams: Vec<String>,
    ) -> Result<Self, GroupError> {
        group::ensure_groups(&mut conn, &streams, &spec.group).await?;
        crate::metrics::register_group(&spec.group, &streams);
        // Readers start once their groups exist.
        let reader = if conn.is_cluster() {
            Reader::Shards(ShardFeed::spawn(
                ReadSpec {
                    url: spec.url.clone(),
                    group: spec.group.clone(),
                    consumer: spec.consumer.clone(),
                    count: spec.batch,
                    block: spec.block,
                    acks: spec.acks,
                },
                &streams,
            ))
        } else {
            Reader::Streams(redis_conn::blocking(&spec.url, spec.block).await?)
        };
        Ok(Self {
            spec,
            streams,
            conn,
            reader,
        })
    }

    pub fn spec(&self) -> &ConsumerSpec {
        &self.spec
    }

    pub fn streams(&self) -> &[String] {
        &self.streams
    }

    /// New entries, blocking up to `block`.
    pub async fn read(&mut self) -> Result<Batch, GroupError> {
        let reader = match &mut self.reader {
            Reader::Streams(c) => c,
            Reader::Shards(feed) => return feed.next(self.spec.block).await,
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.spec.group)
            .arg(&self.spec.consumer)
            .arg("COUNT")
            .arg(self.spec.batch)
            .arg("BLOCK")
            .arg(crate::clock::millis(self.spec.block))
            .arg("STREAMS")
            .arg(&self.streams);
        for _ in &self.streams {
            cmd.arg(">");
        }
        let reply: redis::Value = cmd.query_async(reader).await?;
        let batch = group::read_reply(&reply)?;
        // The read moved the group (a write after the entries it read), so a
        // WAIT on its connection covers them; on a shortfall they stay
        // pending and are taken over once the replicas have them.
        if let Some((stream, _)) = batch.iter().find(|(_, es)| !es.is_empty()) {
            self.spec.acks.wait(reader, stream).await?;
        }
        Ok(batch)
    }

    /// Takes over entries idle longer than `claim_idle` from any consumer and
    /// hands them to `handler` page by page, with their delivery counts.
    pub async fn claim<H: BatchHandler>(&mut self, handler: &mut H) -> Result<usize, GroupError> {
        group::report_gauges(&mut self.conn, &self.streams, &self.spec.group).await;
        let mut total = 0;
        for stream in self.streams.clone() {
            let mut cursor = "0-0".to_owned();
            for _ in 0..CLAIM_PAGES {
                let reply: redis::Value = redis::cmd("XAUTOCLAIM")
                    .arg(&stream)
                    .arg(&self.spec.group)
                    .arg(&self.spec.consumer)
                    .arg(crate::clock::millis(self.spec.claim_idle))
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(self.spec.batch)
                    .query_async(&mut self.conn)
                    .await?;
                let (next, entries, deleted) = group::autoclaim_reply(&reply)?;
                if !deleted.is_empty() {
                    // Trimmed while pending: nothing left to handle.
                    let _: () = redis::cmd("XACK")
                        .arg(&stream)
                        .arg(&self.spec.group)
                        .arg(&deleted)
                        .query_async(&mut self.conn)
                        .await?;
                }
                if !entries.is_empty() {
                    info!(stream = %stream, group = %self.spec.group, n = entries.len(), "took over idle entries");
                    // The claim is a write after the entries: see `read`.
                    self.spec.acks.wait(&mut self.conn, &stream).await?;
                    let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
                    let counts =
                        group::delivery_counts(&mut self.conn, &stream, &self.spec.group, &ids)
                            .await?;
                    total += self
                        .deliver(handler, vec![(stream.clone(), entries)], &counts)
                        .await?;
                }
                if next == "0-0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(total)
    }

    /// Dead-letters what is malformed or was delivered more than
    /// `max_deliveries` times (`deliveries`: the counts of entries taken
    /// over; empty for new ones), then hands the rest to `handler`. Returns
    /// how many entries were settled either way.
    async fn deliver<H: BatchHandler>(
        &mut self,
        handler: &mut H,
        batch: Batch,
        deliveries: &HashMap<String, u64>,
    ) -> Result<usize, GroupError> {
        let mut dead = redis::pipe();
        let mut dead_acks = redis::pipe();
        let mut messages: Messages<H::Item> = Vec::with_capacity(batch.len());
        let mut n_dead = 0;
        // Entries move into what the handler gets: no copy per message.
        for (stream, entries) in batch {
            let mut received = Vec::with_capacity(entries.len());
            let mut ids = Vec::new();
            for e in entries {
                let reason = if deliveries
                    .get(&e.id)
                    .is_some_and(|&n| n > self.spec.max_deliveries)
                {
                    warn!(stream = %stream, id = %e.id, "delivered too often; dead-lettered");
                    "max_deliveries"
                } else {
                    match H::Item::parse(&e) {
                        Ok(item) => {
                            received.push(Received { entry: e, item });
                            continue;
                        }
                        Err(err) => {
                            warn!(stream = %stream, id = %e.id, error = %err, "malformed entry; dead-lettered");
                            "malformed"
                        }
                    }
                };
                group::dead_letter(
                    &mut dead,
                    &self.spec.dead_letter,
                    self.spec.dead_letter_maxlen,
                    &stream,
                    &e,
                    reason,
                );
                ids.push(e.id);
            }
            n_dead += ids.len();
            group::ack(&mut dead_acks, &stream, &self.spec.group, &ids);
            if !received.is_empty() {
                messages.push((stream, received));
            }
        }
        if n_dead > 0 {
            // Dead letters are written (and checked) before their acks: a
            // cluster runs a pipeline's slots concurrently.
            let _: () = dead.query_async(&mut self.conn).await?;
            let _: () = dead_acks.query_async(&mut self.conn).await?;
            metrics::counter!("chat_dead_lettered_total", "group" => self.spec.group.clone())
                .increment(n_dead as u64);
        }
        let handled = if messages.is_empty() {
            0
        } else {
            handler.handle(messages).await?
        };
        Ok(handled + n_dead)
    }

    /// Removes consumers left by stopped workers (nothing pending, idle for
    /// `idle`), so the group does not grow with every restart. Returns how many.
    pub async fn remove_dead_consumers(&mut self, idle: Duration) -> Result<usize, GroupError> {
        let mut removed = 0;
        for stream in self.streams.clone() {
            let reply: redis::Value = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&stream)
                .arg(&self.spec.group)
                .query_async(&mut self.conn)
                .await?;
            for name in group::idle_consumers(&reply, crate::clock::millis_i64(idle))? {
                if name == self.spec.consumer {
                    continue;
                }
                let _: i64 = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&stream)
                    .arg(&self.spec.group)
                    .arg(&name)
                    .query_async(&mut self.conn)
                    .await?;
                removed += 1;
            }
        }
        if removed > 0 {
            info!(removed, group = %self.spec.group, "removed dead consumers");
        }
        Ok(removed)
    }

    /// Runs until `shutdown`: reads and handles batches, takes over idle
    /// entries every `claim_idle / 2`, and backs off while Redis (or the
    /// handler's destination) fails. The batch in hand is finished first.
    pub async fn run<H: BatchHandler>(
        &mut self,
        handler: &mut H,
        shutdown: CancellationToken,
    ) -> Result<(), GroupError> {
        let claim_every = self.spec.claim_idle / 2;
        let mut last_claim = Instant::now();
        let mut last_cleanup = Instant::now();
        let mut backoff = crate::backoff::Backoff::redis();
        while !shutdown.is_cancelled() {
            // A probe of a destination that is down may take its timeout:
            // a shutdown does not wait for it.
            let ready = tokio::select! {
                r = handler.ready() => r,
                _ = shutdown.cancelled() => break,
            };
            let result = if let Err(e) = ready {
                Err(e)
            } else if last_claim.elapsed() >= claim_every {
                last_claim = Instant::now();
                if last_cleanup.elapsed() >= Duration::from_secs(60) {
                    last_cleanup = Instant::now();
                    if let Err(e) = self.remove_dead_consumers(DEAD_CONSUMER_IDLE).await {
                        warn!(error = %e, "consumer cleanup failed");
                    }
                }
                self.claim(handler).await
            } else {
                match self.read().await {
                    Ok(batch) => self.deliver(handler, batch, &HashMap::new()).await,
                    Err(e) => Err(e),
                }
            };
            // A read that came back with a handful of entries means they
            // trickle in: wait a moment so the next read (and its round trips)
            // carries more of them. Costs at most `linger` of latency.
            if let Ok(n) = &result
                && *n > 0
                && *n < self.spec.batch / 4
                && !self.spec.linger.is_zero()
            {
                tokio::time::sleep(self.spec.linger).await;
            }
            match result {
                Ok(_) => backoff.reset(),
                Err(GroupError::Redis(e)) if e.code() == Some("NOGROUP") => {
                    // The streams vanished (Redis restarted empty, or were
                    // deleted): recreate the groups, from whatever path saw it.
                    warn!(group = %self.spec.group, "consumer group missing; recreating");
                    if let Err(e) =
                        group::ensure_groups(&mut self.conn, &self.streams, &self.spec.group).await
                    {
                        warn!(error = %e, "recreating consumer groups failed");
                    }
                }
                Err(e) => {
                    warn!(group = %self.spec.group, error = %e, "step failed; backing off");
                    if !backoff.sleep(&shutdown).await {
                        break;
                    }
                }
            }
        }
        // Entries the shard readers took before the stop are finished here.
        let taken = match &mut self.reader {
            Reader::Shards(feed) => feed.close().await,
            Reader::Streams(_) => Vec::new(),
        };
        for batch in taken {
            if let Err(e) = self.deliver(handler, batch, &HashMap::new()).await {
                warn!(error = %e, "final batch failed; another worker takes it over");
            }
        }
        info!(consumer = %self.spec.consumer, group = %self.spec.group, "consumer stopped");
        Ok(())
    }
}
