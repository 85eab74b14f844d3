//! Presence and heartbeats: telling sessions who joined and left, and finding connections
//! that stopped answering.
//!
//! Old clients read the whole peer list on every `peer_joined`/`peer_left` (the Node relay's
//! format); those frames are held for the next batch (or the next message routed, or 64 KiB
//! of them), so a storm reaches each old client in a few large writes, every frame still
//! there and in order (`Router::announce`). Clients that register with `presence: "delta"`
//! get batched `presence {joined, left}` frames at most every quarter second — one
//! serialization shared by all of them — so a storm of N registrations costs O(N) frames
//! per client instead of O(N) bytes per client per join. A batch of more than a page of
//! changes names none (`resync`), and a delta client whose list is incomplete is sent
//! nothing until it reads the list again (`Peer::stale`), so a storm costs it at most one
//! small frame. `presence: "none"` clients get nothing. The hub pings every connection
//! every `heartbeat_interval`; one that sends nothing at all (not even the pong) before
//! the next ping is dropped, and its peers are told `peer_left`.

use std::time::Duration;

use std::sync::Arc;

use tokio::time::Instant;

use crate::router::Router;

/// How long a probed holder has to answer when someone else asks for its name.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often batched presence changes go out, at most: the `presence` frames to
/// `presence: "delta"` sessions and the held `peer_joined`/`peer_left` frames to the others
/// (`Router::announce`).
pub(crate) const BATCH_EVERY: Duration = Duration::from_millis(250);

/// Most presence frames the hub sends per second in all (the bound on what presence costs
/// the hub during a storm of joins): with more than `PRESENCE_FRAMES_PER_SEC / 4` sessions
/// to tell (delta and old ones alike: each is one flush a batch), batches go out less often
/// than [`BATCH_EVERY`] — every second with 5,000 of them. Each frame is one write to one
/// socket (and on loopback the receiver's TCP work is charged to the sender too), so this is
/// what the 5,000-session registration benchmark spends most of its CPU on
/// (docs/BENCHMARKS.md, "Against the floor").
pub(crate) const PRESENCE_FRAMES_PER_SEC: u32 = 5_000;

/// The wait before the next batch, after one went to `recipients` sessions.
fn next_batch_after(recipients: usize) -> Duration {
    let spread = Duration::from_secs(1) * recipients as u32 / PRESENCE_FRAMES_PER_SEC;
    spread.max(BATCH_EVERY)
}

/// Sends batched presence every [`BATCH_EVERY`], or less often with many sessions to tell
/// (see [`PRESENCE_FRAMES_PER_SEC`]); a batch of more than `page` changes says `resync`
/// instead of naming them (`Router::flush_presence`). Runs until aborted.
pub(crate) async fn run_batches(router: Arc<Router>, page: usize) {
    let mut next = Instant::now() + BATCH_EVERY;
    loop {
        tokio::time::sleep_until(next).await;
        let recipients = router.flush_presence(page);
        next = Instant::now() + next_batch_after(recipients);
    }
}

/// What the heartbeat wants done now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Nothing yet.
    Idle,
    /// Send a WebSocket ping.
    Ping,
    /// No answer in time: drop the connection.
    Dead,
}

/// Heartbeat state of one connection (driven by its writer task).
///
/// A ping's answer is due by the next ping, so an idle connection costs one timer wake-up
/// per interval: at each wake the last ping is checked and the next one sent.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    interval: Duration,
    next_ping: Instant,
    /// When the outstanding ping was sent and when its answer is due.
    awaiting: Option<(Instant, Instant)>,
}

impl Heartbeat {
    /// Starts the schedule: first ping one interval after `now`.
    pub(crate) fn new(now: Instant, interval: Duration) -> Self {
        Self {
            interval,
            next_ping: now + interval,
            awaiting: None,
        }
    }

    /// When [`on_wake`](Self::on_wake) must next be called.
    pub(crate) fn next_wake(&self) -> Instant {
        match self.awaiting {
            Some((_, due)) => due.min(self.next_ping),
            None => self.next_ping,
        }
    }

    /// Advances the schedule. `last_rx` is when the client last sent anything.
    pub(crate) fn on_wake(&mut self, now: Instant, last_rx: Instant) -> Beat {
        if let Some((sent, due)) = self.awaiting {
            if last_rx > sent {
                self.awaiting = None;
            } else if now >= due {
                return Beat::Dead;
            }
        }
        if now >= self.next_ping {
            self.next_ping = now + self.interval;
            if self.awaiting.is_none() {
                self.awaiting = Some((now, self.next_ping));
            }
            return Beat::Ping;
        }
        Beat::Idle
    }

    /// Someone asked for this connection's name: ping now and expect an answer within
    /// [`PROBE_TIMEOUT`] (or the interval, if shorter).
    pub(crate) fn probe(&mut self, now: Instant) -> Beat {
        let due = now + PROBE_TIMEOUT.min(self.interval);
        match self.awaiting {
            Some((_, d)) if d <= due => Beat::Idle,
            _ => {
                self.awaiting = Some((now, due));
                Beat::Ping
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_slow_down_only_past_the_hub_wide_frame_budget() {
        let ms = Duration::from_millis;
        assert_eq!(next_batch_after(0), BATCH_EVERY);
        assert_eq!(next_batch_after(1_250), BATCH_EVERY);
        assert_eq!(next_batch_after(2_500), ms(500));
        assert_eq!(next_batch_after(5_000), ms(1_000));
    }

    #[test]
    fn silent_connection_is_dead_at_the_next_ping() {
        let start = Instant::now();
        let s = Duration::from_secs(1);
        let mut hb = Heartbeat::new(start, 10 * s);
        assert_eq!(hb.on_wake(start + 9 * s, start), Beat::Idle);
        assert_eq!(hb.on_wake(start + 10 * s, start), Beat::Ping);
        assert_eq!(hb.next_wake(), start + 20 * s, "one wake-up per interval");
        assert_eq!(hb.on_wake(start + 20 * s, start), Beat::Dead);
    }

    #[test]
    fn any_frame_after_the_ping_keeps_it_alive() {
        let start = Instant::now();
        let s = Duration::from_secs(1);
        let mut hb = Heartbeat::new(start, 10 * s);
        assert_eq!(hb.on_wake(start + 10 * s, start), Beat::Ping);
        assert_eq!(hb.on_wake(start + 20 * s, start + 11 * s), Beat::Ping);
        assert_eq!(hb.on_wake(start + 30 * s, start + 11 * s), Beat::Dead);
    }

    #[test]
    fn probe_pings_at_once_with_a_short_deadline() {
        let start = Instant::now();
        let mut hb = Heartbeat::new(start, Duration::from_secs(25));
        assert_eq!(hb.probe(start), Beat::Ping);
        assert_eq!(hb.next_wake(), start + PROBE_TIMEOUT);
        assert_eq!(hb.probe(start), Beat::Idle, "one probe at a time");
        assert_eq!(hb.on_wake(start + PROBE_TIMEOUT, start), Beat::Dead);
    }
}
