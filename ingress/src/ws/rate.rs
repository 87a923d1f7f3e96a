//! Per-connection frame rate: a token bucket. Frames over the rate get
//! `rate_limited`; a client that keeps pushing past a burst's worth of
//! refusals is closed 4008.

use std::time::Instant;

pub struct RateLimiter {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
    refused: u32,
}

pub enum Verdict {
    Allow,
    Refuse,
    Abuse,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            tokens: burst,
            last: Instant::now(),
            rate,
            burst,
            refused: 0,
        }
    }

    pub fn check(&mut self) -> Verdict {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused = 0;
            Verdict::Allow
        } else {
            self.refused += 1;
            if f64::from(self.refused) > self.burst {
                Verdict::Abuse
            } else {
                Verdict::Refuse
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_then_flags_abuse() {
        let mut r = RateLimiter::new(0.001, 3.0);
        for _ in 0..3 {
            assert!(matches!(r.check(), Verdict::Allow));
        }
        for _ in 0..3 {
            assert!(matches!(r.check(), Verdict::Refuse));
        }
        assert!(matches!(r.check(), Verdict::Abuse));
    }
}
