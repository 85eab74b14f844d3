//! What the operator sees when a client is refused: a bad token, a TLS handshake that
//! failed, a name owned elsewhere or in use, a cap reached, a client closed for not reading
//! or not authenticating. Each refusal is one line at the default level (`info`, or `warn`
//! for what points at an attack or a misconfiguration), with the peer address, and never a
//! secret: the lines say what was refused and why, not what was presented.
//!
//! A flood of refusals must not become a flood of log lines (a full disk is its own
//! denial of service), so at most [`LINES_PER_SECOND`] are written each second; the next
//! line written says how many were left out.
//!
//! Every refusal is also counted in `/metrics` (docs/CONSOLE.md), and the count is never
//! throttled: a connection refused or cut off ([`Refusals::connection`]) in
//! `relay_connections_refused_total` by [`ConnRefusal`], a frame in
//! `relay_frames_refused_total` by its error code — where the hub answers with an `error` or
//! `register_rejected` frame, that frame is counted as it is written (`Metrics::frame_out`),
//! so [`Refusals::info`] and [`Refusals::warn`] only log; a frame refused without an answer
//! goes through [`Refusals::frame`].

use std::{net::SocketAddr, sync::Arc, time::Instant};

use crate::{log_budget::LineBudget, metrics::Metrics};

/// Most refusal lines written per second.
pub(crate) const LINES_PER_SECOND: u32 = 20;

/// Why a connection was refused, or cut off by one of the hub's bounds (the `reason` label
/// of `relay_connections_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnRefusal {
    /// The hub is at `max_connections`.
    MaxConnections,
    /// The remote address is at `max_conns_per_addr`.
    PerAddress,
    /// A wrong hub token on the WebSocket upgrade or an HTTP request.
    Unauthorized,
    /// A hub with a token is at `max_unauthenticated` connections that have not shown it.
    Unauthenticated,
    /// No valid hub token within the auth timeout of connecting (a hub with a token).
    AuthTimeout,
    /// The hub is at `max_http_connections`.
    HttpBusy,
    /// The TLS handshake failed.
    Tls,
    /// No complete request head (or TLS / WebSocket handshake) within the handshake time.
    HandshakeTimeout,
    /// The client stopped reading: nothing could be written to it for a heartbeat interval.
    NotReading,
}

impl ConnRefusal {
    /// Every reason, in label order (each is registered at 0).
    pub(crate) const ALL: [ConnRefusal; 9] = [
        Self::MaxConnections,
        Self::PerAddress,
        Self::Unauthorized,
        Self::Unauthenticated,
        Self::AuthTimeout,
        Self::HttpBusy,
        Self::Tls,
        Self::HandshakeTimeout,
        Self::NotReading,
    ];

    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::PerAddress => "per_address",
            Self::Unauthorized => "unauthorized",
            Self::Unauthenticated => "unauthenticated",
            Self::AuthTimeout => "auth_timeout",
            Self::HttpBusy => "http_busy",
            Self::Tls => "tls",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::NotReading => "not_reading",
        }
    }

    /// Whether it points at an attack or a misconfiguration (logged as a warning).
    fn warns(self) -> bool {
        !matches!(self, Self::Tls | Self::HandshakeTimeout | Self::AuthTimeout)
    }
}

/// The refusal log of one hub, and its refusal counters.
#[derive(Debug)]
pub(crate) struct Refusals {
    /// At most [`LINES_PER_SECOND`] lines.
    lines: LineBudget,
    metrics: Arc<Metrics>,
}

impl Refusals {
    /// The refusal log of a hub whose refusals are counted in `metrics`.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            lines: LineBudget::new(LINES_PER_SECOND),
            metrics,
        }
    }

    /// A connection refused (or cut off) for `reason`: counted, and logged with `why`.
    pub(crate) fn connection(&self, addr: SocketAddr, reason: ConnRefusal, why: &str) {
        self.metrics.connection_refused(reason);
        if reason.warns() {
            self.warn(addr, why);
        } else {
            self.info(addr, why);
        }
    }

    /// A frame refused without an `error` answer (the connection is closed instead): counted
    /// under `code`, and logged as a warning.
    pub(crate) fn frame(&self, addr: SocketAddr, code: &str, why: &str) {
        self.metrics.frame_refused(code);
        self.warn(addr, why);
    }

    /// Logs a routine refusal (a name in use or owned elsewhere, a rate limit). Its count is
    /// the `error` frame's (see the module header).
    pub(crate) fn info(&self, addr: SocketAddr, why: &str) {
        if let Some(skipped) = self.lines.allow(Instant::now()) {
            tracing::info!(%addr, skipped, "refused: {why}");
        }
    }

    /// Logs a refusal that points at an attack or a misconfiguration (a bad token, a cap
    /// reached, a client that does not read).
    pub(crate) fn warn(&self, addr: SocketAddr, why: &str) {
        if let Some(skipped) = self.lines.allow(Instant::now()) {
            tracing::warn!(%addr, skipped, "refused: {why}");
        }
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
    fn client_strings_cannot_forge_log_lines() {
        assert_eq!(loggable("CC-1\n2026 INFO fake"), "CC-1\\n2026 INFO fake");
        assert_eq!(loggable("\u{1b}[2J"), "\\u{1b}[2J");
        assert_eq!(loggable(&"x".repeat(100)).chars().count(), 65);
    }
}
