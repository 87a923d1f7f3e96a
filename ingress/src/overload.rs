//! Load shedding. Past the rate the stack can deliver, accepting a message
//! only queues it behind others (and lets outbound queues overflow into
//! 4008 closes). So while this node's deliveries run more than
//! `CHAT_MAX_DELIVERY_LAG` behind their append, new messages are refused
//! with `unavailable` (retry) instead of accepted and delivered late.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A lag is only believed for this long after it was seen: with no
/// deliveries there is nothing to be behind on (and refusing on an old
/// reading would refuse forever, since refused messages deliver nothing).
const FRESH_MS: u64 = 1000;

pub struct Backpressure {
    max_lag_ms: u64,
    lag_ms: AtomicU64,
    seen_at_ms: AtomicU64,
}

impl Backpressure {
    /// `max_lag` zero turns shedding off.
    pub fn new(max_lag: Duration) -> Self {
        Self {
            max_lag_ms: chat_core::clock::millis(max_lag),
            lag_ms: AtomicU64::new(0),
            seen_at_ms: AtomicU64::new(0),
        }
    }

    /// A hub delivered a message appended `lag_ms` ago (once per message,
    /// not per recipient).
    pub fn observe(&self, lag_ms: u64, now_ms: u64) {
        self.lag_ms.store(lag_ms, Ordering::Relaxed);
        self.seen_at_ms.store(now_ms, Ordering::Relaxed);
    }

    /// How far behind deliveries are, when that is over the limit.
    pub fn behind(&self, now_ms: u64) -> Option<u64> {
        if self.max_lag_ms == 0 {
            return None;
        }
        if now_ms.saturating_sub(self.seen_at_ms.load(Ordering::Relaxed)) > FRESH_MS {
            return None;
        }
        let lag = self.lag_ms.load(Ordering::Relaxed);
        (lag > self.max_lag_ms).then_some(lag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_only_while_fresh_deliveries_run_behind() {
        let b = Backpressure::new(Duration::from_millis(500));
        assert_eq!(b.behind(10_000), None, "nothing seen yet");
        b.observe(200, 10_000);
        assert_eq!(b.behind(10_100), None, "within the limit");
        b.observe(900, 10_200);
        assert_eq!(b.behind(10_300), Some(900));
        assert_eq!(b.behind(11_300), None, "a stale reading is not believed");
        let off = Backpressure::new(Duration::ZERO);
        off.observe(60_000, 10_000);
        assert_eq!(off.behind(10_000), None);
    }
}
