//! Acknowledgements that wait for replicas (`CHAT_REDIS_ACK_REPLICAS`).
//!
//! Redis replicates asynchronously, so a failover can lose writes it had
//! already acknowledged. With this on, an append is acked only once that many
//! replicas hold it (`WAIT`), and the consumer groups hand on only entries
//! the replicas hold (a `WAIT` after each read), so nothing a client or a
//! member saw can vanish in a failover. `WAIT` covers the writes made so far
//! on the connection it runs on: it must run on the connection that wrote
//! (or, for a read, on the one whose `XREADGROUP` moved the group, a write
//! that follows the entries it read in the replication stream).

use crate::redis_conn::Conn;
use std::time::Duration;

/// How many replicas must hold a write before it counts; off when zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckReplicas {
    pub replicas: u32,
    /// How long one `WAIT` may block (never zero: `WAIT n 0` blocks forever).
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{got} of {want} replicas confirmed the write within {timeout:?}")]
    Short {
        got: i64,
        want: u32,
        timeout: Duration,
    },
}

impl AckReplicas {
    pub fn is_on(&self) -> bool {
        self.replicas > 0
    }

    /// Waits until `replicas` replicas hold every write made so far on
    /// `conn`; in a cluster, on the node that serves `key` (the one written).
    /// Does nothing when off.
    pub async fn wait(&self, conn: &mut Conn, key: &str) -> Result<(), WaitError> {
        if !self.is_on() {
            return Ok(());
        }
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(self.replicas)
            .arg(self.timeout.as_millis().max(1) as u64);
        let got: i64 = match conn {
            Conn::Single(c) => cmd.query_async(c).await?,
            Conn::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                // redis-rs sends a bare WAIT to every master; the write was
                // on one node, over this connection's link to it.
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key, SlotAddr::Master),
                ));
                // A node answering from the routed slot's former primary
                // (demoted mid-failover) errs in the reply, not the call.
                let v = c.route_command(cmd, route).await?.extract_error()?;
                redis::from_redis_value(v).map_err(redis::RedisError::from)?
            }
        };
        if got >= i64::from(self.replicas) {
            Ok(())
        } else {
            Err(WaitError::Short {
                got,
                want: self.replicas,
                timeout: self.timeout,
            })
        }
    }
}
