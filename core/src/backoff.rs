//! Exponential backoff, one type for every retry loop: the consumer loops
//! (standalone and per shard), the notifier, the summarizer's worker, and the
//! per-attempt retries of FCM and Gemini calls.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Waits that double from `base` up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            next: base,
        }
    }

    /// What a loop that retries Redis waits: 100 ms doubling up to 5 s.
    pub const fn redis() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// The wait before retry `attempt` (0 is the first), for retries counted
    /// by the caller: `base · 2^attempt`, at most `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max)
    }

    /// `delay(attempt)` scaled by a random factor in `[1 - spread, 1]`
    /// (`spread` in 0..=1), so many workers retrying do not move in step.
    pub fn jittered(&self, attempt: u32, spread: f64) -> Duration {
        let spread = spread.clamp(0.0, 1.0);
        self.delay(attempt)
            .mul_f64(1.0 - spread * rand::random::<f64>())
    }

    /// The next wait of a loop that keeps its own state; it doubles.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }

    /// After a success: the next failure waits `base` again.
    pub fn reset(&mut self) {
        self.next = self.base;
    }

    /// Sleeps the next wait; false when `shutdown` came first.
    pub async fn sleep(&mut self, shutdown: &CancellationToken) -> bool {
        let d = self.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn waits_double_up_to_the_cap_and_a_reset_starts_again() {
        let mut b = Backoff::new(100 * MS, 500 * MS);
        let waits: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(waits, [100 * MS, 200 * MS, 400 * MS, 500 * MS, 500 * MS]);
        b.reset();
        assert_eq!(b.next_delay(), 100 * MS);
        assert_eq!(b.delay(0), 100 * MS);
        assert_eq!(b.delay(2), 400 * MS);
        assert_eq!(b.delay(40), 500 * MS);
    }

    #[test]
    fn jitter_stays_within_its_spread() {
        let b = Backoff::new(1000 * MS, Duration::from_secs(60));
        for _ in 0..100 {
            let d = b.jittered(1, 0.5);
            assert!(d >= 1000 * MS && d <= 2000 * MS, "{d:?}");
        }
        assert_eq!(b.jittered(1, 0.0), 2000 * MS);
    }

    #[tokio::test]
    async fn a_shutdown_ends_the_sleep() {
        let stop = CancellationToken::new();
        stop.cancel();
        let mut b = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
        assert!(!b.sleep(&stop).await);
    }
}
