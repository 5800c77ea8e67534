//! Capped, jittered exponential backoff for reconnecting to the coordinator.
//!
//! Jitter matters here: when a coordinator restarts, thousands of probes lose
//! their stream at the same instant; without jitter they would all come back
//! in lockstep and hammer it again.

use std::time::Duration;

/// Delays grow as `base * 2^attempt` up to `cap`; each delay is drawn uniformly
/// from the upper half of that value ("equal jitter"), so it never drops below
/// half the nominal delay and never exceeds `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base` and never exceeding `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // Saturate the shift so a probe that has been down for days keeps a
        // sane delay instead of overflowing.
        let factor = 1u32 << self.attempt.min(20);
        let nominal = self.base.saturating_mul(factor).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = nominal / 2;
        let extra_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(fastrand::u64(0..=extra_ms))
    }

    /// Forget earlier failures, after a session was established.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    /// 500 ms doubling up to 30 s: quick to recover from a blip, gentle on a
    /// coordinator that is down for longer.
    fn default() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_bounds_and_grow() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(3);
        let mut b = Backoff::new(base, cap);
        let mut nominal = base;
        for _ in 0..40 {
            let d = b.next_delay();
            assert!(d <= cap, "{d:?} exceeds cap");
            assert!(d >= nominal / 2, "{d:?} below half of {nominal:?}");
            assert!(d <= nominal, "{d:?} above {nominal:?}");
            nominal = (nominal * 2).min(cap);
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(30));
            seen.insert(b.next_delay());
        }
        assert!(seen.len() > 1, "all delays equal: no jitter");
    }
}
