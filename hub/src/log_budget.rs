//! A bound on how many lines of one kind the hub logs each second.
//!
//! A flood of events — clients refused, a registration storm, a fleet leaving at once — must
//! not become a flood of log lines. Each line is a `write` to stderr and a wake-up of
//! whoever reads it (journald); in a storm of 5,000 registrations the one `registered` line
//! each was a tenth of the hub's CPU (docs/BENCHMARKS.md, "Registrations share a commit"),
//! and a full disk is its own denial of service. Past the budget, lines are left out, and
//! the next line written says how many were (`skipped=N`). What is counted elsewhere
//! (`/metrics`) is never throttled.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Most lines a second about sessions coming and going (`registered`, `disconnected`):
/// every one of them in a team's normal day, a sample and a count in a storm.
pub(crate) const SESSION_LINES_PER_SECOND: u32 = 50;

/// The budget of one kind of line.
#[derive(Debug)]
pub(crate) struct LineBudget {
    per_second: u32,
    /// Start of the current one-second window and lines written in it.
    window: Mutex<(Instant, u32)>,
    /// Lines left out since the last one written.
    skipped: AtomicU64,
}

impl LineBudget {
    /// At most `per_second` lines each second.
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window: Mutex::new((Instant::now(), 0)),
            skipped: AtomicU64::new(0),
        }
    }

    /// `Some(lines left out before this one)` if a line may be written now.
    pub(crate) fn allow(&self, now: Instant) -> Option<u64> {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if now.duration_since(w.0) >= Duration::from_secs(1) {
            *w = (now, 0);
        }
        if w.1 >= self.per_second {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        w.1 += 1;
        Some(self.skipped.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_summarized() {
        let b = LineBudget::new(20);
        let t0 = Instant::now();
        for _ in 0..20 {
            assert_eq!(b.allow(t0), Some(0));
        }
        for _ in 0..100 {
            assert_eq!(b.allow(t0), None);
        }
        assert_eq!(b.allow(t0 + Duration::from_secs(1)), Some(100));
        assert_eq!(b.allow(t0 + Duration::from_secs(1)), Some(0));
    }
}
