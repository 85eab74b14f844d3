//! Reconnect delays: exponential backoff with full jitter.
//!
//! Many bridges lose the same hub at the same moment (a hub restart), so their retries must
//! spread out instead of arriving in waves: each delay is uniform in `[0, min(cap, start·2ⁿ)]`
//! ("full jitter"). A successful registration resets the sequence.

use std::time::Duration;

/// The state of one reconnect sequence.
#[derive(Debug, Clone)]
pub struct Backoff {
    start: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A sequence whose ceiling starts at `start` and doubles up to `cap`.
    pub fn new(start: Duration, cap: Duration) -> Self {
        Self {
            start,
            cap: cap.max(start),
            attempt: 0,
        }
    }

    /// The ceiling for the next delay (before jitter).
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.start.saturating_mul(factor).min(self.cap)
    }

    /// The next delay: uniform in `[0, ceiling]`, then the ceiling doubles.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(0..=ms))
    }

    /// Delays handed out since the last reset.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first step (after a connection worked).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_to_the_cap_and_delays_stay_under_it() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(15));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let c = b.ceiling();
            let d = b.next_delay();
            assert!(d <= c, "{d:?} > {c:?}");
            ceilings.push(c.as_millis());
        }
        assert_eq!(
            ceilings,
            [250, 500, 1000, 2000, 4000, 8000, 15000, 15000, 15000, 15000]
        );
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(250));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(15));
        for _ in 0..1000 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(15));
    }
}
