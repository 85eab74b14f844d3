//! What the operator sees when a client is refused: a bad token, a TLS handshake that
//! failed, a name owned elsewhere or in use, a cap reached, a client closed for not reading
//! or not authenticating. Each refusal is one line at the default level (`info`, or `warn`
//! for what points at an attack or a misconfiguration), with the peer address, and never a
//! secret: the lines say what was refused and why, not what was presented.
//!
//! A flood of refusals must not become a flood of log lines (a full disk is its own
//! denial of service), so at most [`LINES_PER_SECOND`] are written each second; the next
//! line written says how many were left out.

use std::{
    net::SocketAddr,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Most refusal lines written per second.
pub(crate) const LINES_PER_SECOND: u32 = 20;

/// The refusal log of one hub.
#[derive(Debug)]
pub(crate) struct Refusals {
    /// Start of the current one-second window and lines written in it.
    window: Mutex<(Instant, u32)>,
    /// Lines left out since the last one written.
    skipped: AtomicU64,
}

impl Default for Refusals {
    fn default() -> Self {
        Self {
            window: Mutex::new((Instant::now(), 0)),
            skipped: AtomicU64::new(0),
        }
    }
}

impl Refusals {
    /// Logs a routine refusal (a name in use or owned elsewhere, a rate limit).
    pub(crate) fn info(&self, addr: SocketAddr, why: &str) {
        if let Some(skipped) = self.allow(Instant::now()) {
            tracing::info!(%addr, skipped, "refused: {why}");
        }
    }

    /// Logs a refusal that points at an attack or a misconfiguration (a bad token, a cap
    /// reached, a client that does not read).
    pub(crate) fn warn(&self, addr: SocketAddr, why: &str) {
        if let Some(skipped) = self.allow(Instant::now()) {
            tracing::warn!(%addr, skipped, "refused: {why}");
        }
    }

    /// `Some(lines left out before this one)` if a line may be written now.
    fn allow(&self, now: Instant) -> Option<u64> {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if now.duration_since(w.0) >= Duration::from_secs(1) {
            *w = (now, 0);
        }
        if w.1 >= LINES_PER_SECOND {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        w.1 += 1;
        Some(self.skipped.swap(0, Ordering::Relaxed))
    }
}

/// A client-chosen string made safe for one log line: control characters escaped,
/// at most 64 characters.
pub(crate) fn loggable(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_summarized() {
        let r = Refusals::default();
        let t0 = Instant::now();
        for _ in 0..LINES_PER_SECOND {
            assert_eq!(r.allow(t0), Some(0));
        }
        for _ in 0..100 {
            assert_eq!(r.allow(t0), None);
        }
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), Some(100));
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), Some(0));
    }

    #[test]
    fn client_strings_cannot_forge_log_lines() {
        assert_eq!(loggable("CC-1\n2026 INFO fake"), "CC-1\\n2026 INFO fake");
        assert_eq!(loggable("\u{1b}[2J"), "\\u{1b}[2J");
        assert_eq!(loggable(&"x".repeat(100)).chars().count(), 65);
    }
}
