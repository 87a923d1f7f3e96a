//! Unix time as the processes exchange it (timestamps in Redis, payloads
//! and tokens), and durations as whole units: one place for the casts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Since the Unix epoch (zero for a clock set before it).
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

pub fn now_secs() -> u64 {
    since_epoch().as_secs()
}

pub fn now_ms() -> u64 {
    millis(since_epoch())
}

pub fn now_us() -> u64 {
    u64::try_from(since_epoch().as_micros()).unwrap_or(u64::MAX)
}

/// Whole milliseconds, saturating (a `Duration` holds up to 2^64 s).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `millis` for the APIs that take signed milliseconds (BSON, `XINFO` idle).
pub fn millis_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_agree_and_saturate() {
        let (s, ms, us) = (now_secs(), now_ms(), now_us());
        assert!(ms / 1000 >= s && ms / 1000 <= s + 1, "{s} {ms}");
        assert!(us / 1000 >= ms && us / 1000 <= ms + 1000, "{ms} {us}");
        assert_eq!(millis(Duration::from_micros(2_999)), 2);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(millis_i64(Duration::MAX), i64::MAX);
        assert_eq!(millis_i64(Duration::from_secs(2)), 2_000);
    }
}
