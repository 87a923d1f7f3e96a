//! Per-hop delivery timing, `chat_delivery_hop_seconds{hop}`: where a
//! message's time goes between its append and the socket write, so a tail
//! can be pinned on one hop (`chatctl bench` prints the quantiles).
//!
//! - `read`: append (the message's `ts`, ms) → the fanout worker read it;
//! - `publish`: read → the worker sent the publish;
//! - `receive`: sent → this node's room hub took it;
//! - `write`: hub → the socket's flush completed (per delivery);
//! - `total`: append → the socket's flush completed (per delivery).
//!
//! The first three are per message and node, from the times the worker puts
//! in the pub/sub header (`chat_core::live`); all are wall-clock
//! differences between processes on one host.

use chat_core::metrics::HOP_METRIC;
use metrics::Histogram;
use std::sync::LazyLock;

pub struct Hops {
    pub read: Histogram,
    pub publish: Histogram,
    pub receive: Histogram,
    pub write: Histogram,
    pub total: Histogram,
}

/// Handles looked up once: the macro's registry lookup per delivery would
/// cost more than the recording.
pub static HOPS: LazyLock<Hops> = LazyLock::new(|| Hops {
    read: metrics::histogram!(HOP_METRIC, "hop" => "read"),
    publish: metrics::histogram!(HOP_METRIC, "hop" => "publish"),
    receive: metrics::histogram!(HOP_METRIC, "hop" => "receive"),
    write: metrics::histogram!(HOP_METRIC, "hop" => "write"),
    total: metrics::histogram!(HOP_METRIC, "hop" => "total"),
});

/// When a live message left its hub, carried with the frame to the writer.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    /// µs since the Unix epoch.
    pub hub_us: u64,
    /// The message's append time, ms since the Unix epoch (0: unknown).
    pub ts_ms: u64,
}

pub use chat_core::live::unix_us;

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// The hops of one message on its way into this node's hub, from the
/// worker's times (absent from an older worker: nothing is recorded).
pub fn arrived(ts_ms: u64, read_us: Option<u64>, publish_us: Option<u64>, hub_us: u64) {
    let (Some(read), Some(publish)) = (read_us, publish_us) else {
        return;
    };
    let hops = &*HOPS;
    if ts_ms > 0 {
        hops.read.record(secs(read.saturating_sub(ts_ms * 1000)));
    }
    hops.publish.record(secs(publish.saturating_sub(read)));
    hops.receive.record(secs(hub_us.saturating_sub(publish)));
}

/// Deliveries whose flush completed at `now_us`.
pub fn written(stamps: &[Stamp], now_us: u64) {
    if stamps.is_empty() {
        return;
    }
    let hops = &*HOPS;
    for s in stamps {
        hops.write.record(secs(now_us.saturating_sub(s.hub_us)));
        if s.ts_ms > 0 {
            hops.total
                .record(secs(now_us.saturating_sub(s.ts_ms * 1000)));
        }
    }
}
