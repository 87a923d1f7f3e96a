//! Reading the shard streams in Redis Cluster. One `XREADGROUP` cannot name
//! streams of different slots there, and a blocked read holds its connection,
//! so each shard gets a task with its own blocking connection; their batches
//! meet in one channel that the worker drains.

use super::{Batch, GroupError};
use crate::group;
use crate::redis_conn::{self, Conn};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::warn;

/// The batches of every shard reader.
pub struct ShardFeed {
    rx: mpsc::Receiver<Result<Batch, GroupError>>,
    stop: CancellationToken,
    _guard: DropGuard,
}

/// What a reader needs to read its shard.
#[derive(Clone)]
pub struct ReadSpec {
    pub url: String,
    pub group: String,
    pub consumer: String,
    pub count: usize,
    pub block: Duration,
    /// See `ConsumerSpec::acks`.
    pub acks: crate::replicas::AckReplicas,
}

impl ShardFeed {
    pub fn spawn(spec: ReadSpec, streams: &[String]) -> Self {
        let stop = CancellationToken::new();
        // One batch per shard waiting at most: readers wait for the worker,
        // so little sits read-but-unhandled (it could be claimed meanwhile).
        let (tx, rx) = mpsc::channel(streams.len());
        for stream in streams {
            tokio::spawn(read_shard(
                spec.clone(),
                stream.clone(),
                tx.clone(),
                stop.clone(),
            ));
        }
        Self {
            rx,
            _guard: stop.clone().drop_guard(),
            stop,
        }
    }

    /// Waits up to `wait` for a batch, then takes whatever else is ready.
    pub async fn next(&mut self, wait: Duration) -> Result<Batch, GroupError> {
        let first = match tokio::time::timeout(wait, self.rx.recv()).await {
            Ok(Some(b)) => b?,
            Ok(None) | Err(_) => return Ok(Vec::new()),
        };
        let mut batches = first;
        while let Ok(more) = self.rx.try_recv() {
            match more {
                Ok(b) => batches.extend(b),
                // What was read stays pending and is taken over later.
                Err(e) => warn!(error = %e, "shard read failed"),
            }
        }
        Ok(batches)
    }

    /// Stops the readers after their current read; returns what they still
    /// delivered, so the worker can finish it before exiting.
    pub async fn close(&mut self) -> Vec<Batch> {
        self.stop.cancel();
        let mut rest = Vec::new();
        while let Some(r) = self.rx.recv().await {
            if let Ok(b) = r {
                rest.push(b);
            }
        }
        rest
    }
}

async fn read_shard(
    spec: ReadSpec,
    stream: String,
    tx: mpsc::Sender<Result<Batch, GroupError>>,
    stop: CancellationToken,
) {
    let mut conn: Option<Conn> = None;
    let mut backoff = crate::backoff::Backoff::redis();
    while !stop.is_cancelled() {
        let result = match &mut conn {
            Some(c) => read_once(c, &spec, &stream).await,
            None => match redis_conn::blocking(&spec.url, spec.block).await {
                Ok(c) => {
                    conn = Some(c);
                    continue;
                }
                Err(e) => Err(e.into()),
            },
        };
        match result {
            Ok(b) if b.iter().all(|(_, es)| es.is_empty()) => {}
            Ok(b) => {
                backoff.reset();
                if tx.send(Ok(b)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                if tx.send(Err(e)).await.is_err() {
                    return;
                }
                if !backoff.sleep(&stop).await {
                    return;
                }
            }
        }
    }
}

async fn read_once(conn: &mut Conn, spec: &ReadSpec, stream: &str) -> Result<Batch, GroupError> {
    let reply: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&spec.group)
        .arg(&spec.consumer)
        .arg("COUNT")
        .arg(spec.count)
        .arg("BLOCK")
        .arg(crate::clock::millis(spec.block))
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(&mut *conn)
        .await?;
    let batch = group::read_reply(&reply)?;
    if batch.iter().any(|(_, es)| !es.is_empty()) {
        // See `ShardConsumer::read`.
        spec.acks.wait(conn, stream).await?;
    }
    Ok(batch)
}
