//! Time as the hub uses it, and what it must not trust it for.
//!
//! Wall-clock time stamps messages (`timestamp`, `ts`), but it can jump either way (a wrong
//! clock at boot fixed by NTP, a manual change, a VM restored from a snapshot). So nothing
//! the hub orders relies on it — mail, cursors and read state go by `seq` — and the two
//! places where it measures an age are guarded (see `docs/STORAGE.md`, "Retention"):
//!
//! - the pruner's "now" ([`ExpiryClock`]) never runs ahead of a clock that cannot jump
//!   (one that counts suspend, so a laptop's sleep still ages mail), so a forward jump of
//!   the wall clock cannot make recent mail look old;
//! - expiry walks the oldest messages in `seq` order and stops at the first one that is not
//!   old enough, so a message stamped during a backward jump is never expired ahead of
//!   older-stamped mail stored before it.

use std::time::Duration;

/// Where the hub reads time from; tests inject their own.
pub trait Clock: Send + Sync {
    /// Wall-clock time in Unix milliseconds (may jump).
    fn wall_ms(&self) -> i64;
    /// Time since an arbitrary fixed point that never jumps and keeps counting while the
    /// machine sleeps.
    fn steady(&self) -> Duration;
}

/// The operating system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall_ms(&self) -> i64 {
        sessions::time::now_ms()
    }

    fn steady(&self) -> Duration {
        // Linux's CLOCK_MONOTONIC (what `std::time::Instant` uses) stops during suspend;
        // CLOCK_BOOTTIME does not. macOS's CLOCK_MONOTONIC counts sleep already.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let id = libc::CLOCK_BOOTTIME;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let id = libc::CLOCK_MONOTONIC;
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; clock_gettime writes only into it.
        let rc = unsafe { libc::clock_gettime(id, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime: {}", std::io::Error::last_os_error());
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

/// The "now" the pruner measures message ages against: the wall clock, but never further
/// ahead of its last reading than the steady clock has advanced since. A wall clock that
/// jumps forward while the hub runs therefore expires nothing early; one that jumps back is
/// followed (expiry runs late, which loses nothing).
#[derive(Debug)]
pub struct ExpiryClock<C> {
    clock: C,
    /// The last "now" given and the steady time it was given at.
    last: Option<(i64, Duration)>,
    /// Whether the wall clock is ahead of the time given (logged once per episode).
    ahead: bool,
}

impl<C: Clock> ExpiryClock<C> {
    /// Starts trusting the wall clock as it reads at the first [`now`](Self::now).
    pub fn new(clock: C) -> Self {
        Self {
            clock,
            last: None,
            ahead: false,
        }
    }

    /// The current time for expiry, in Unix milliseconds.
    pub fn now(&mut self) -> i64 {
        let wall = self.clock.wall_ms();
        let steady = self.clock.steady();
        let now = match self.last {
            None => wall,
            Some((prev, at)) => {
                let elapsed = steady.saturating_sub(at).as_millis() as i64;
                wall.min(prev.saturating_add(elapsed))
            }
        };
        if wall > now && !self.ahead {
            tracing::warn!(
                ahead_ms = wall - now,
                "the wall clock jumped forward: retention measures message ages by the time \
                 that really passed (until the hub restarts)"
            );
        }
        self.ahead = wall > now;
        self.last = Some((now, steady));
        now
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    };

    use super::*;

    /// A clock the test moves by hand. Cheap to clone; clones share the time.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct ManualClock {
        wall: Arc<AtomicI64>,
        steady_ms: Arc<AtomicU64>,
    }

    impl ManualClock {
        pub(crate) fn at(wall_ms: i64) -> Self {
            let c = Self::default();
            c.wall.store(wall_ms, Ordering::SeqCst);
            c
        }
        /// Time passes: both clocks advance.
        pub(crate) fn pass(&self, ms: i64) {
            self.wall.fetch_add(ms, Ordering::SeqCst);
            self.steady_ms.fetch_add(ms as u64, Ordering::SeqCst);
        }
        /// Only the wall clock moves (either way).
        pub(crate) fn jump(&self, ms: i64) {
            self.wall.fetch_add(ms, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn wall_ms(&self) -> i64 {
            self.wall.load(Ordering::SeqCst)
        }
        fn steady(&self) -> Duration {
            Duration::from_millis(self.steady_ms.load(Ordering::SeqCst))
        }
    }

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_forward_jump_does_not_move_expiry_time_ahead_of_real_time() {
        let clock = ManualClock::at(100 * DAY);
        let mut expiry = ExpiryClock::new(clock.clone());
        assert_eq!(expiry.now(), 100 * DAY);
        clock.pass(60_000);
        clock.jump(60 * DAY);
        assert_eq!(
            expiry.now(),
            100 * DAY + 60_000,
            "only the minute that passed"
        );
        clock.pass(10 * DAY);
        assert_eq!(expiry.now(), 110 * DAY + 60_000);
    }

    #[test]
    fn a_backward_jump_is_followed_and_real_time_counts_from_there() {
        let clock = ManualClock::at(100 * DAY);
        let mut expiry = ExpiryClock::new(clock.clone());
        expiry.now();
        clock.jump(-30 * DAY);
        assert_eq!(expiry.now(), 70 * DAY);
        clock.pass(DAY);
        assert_eq!(expiry.now(), 71 * DAY);
        // Set right again: expiry catches up only as fast as real time passes.
        clock.jump(30 * DAY);
        assert_eq!(expiry.now(), 71 * DAY);
    }

    #[test]
    fn the_system_steady_clock_moves_forward() {
        let a = SystemClock.steady();
        let b = SystemClock.steady();
        assert!(b >= a && a > Duration::ZERO);
    }
}
