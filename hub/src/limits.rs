//! Rate limits and connection caps: they stop floods, not work.
//!
//! Defaults admit a benchmark or a lead agent bursting thousands of messages a second on
//! one connection; they exist so that one misbehaving client cannot starve the others.
//! Each limit is answered with a clear error (`rate_limited`, with how long to wait) or, for
//! connections over the cap, a refused handshake — never by silently dropping work. The one
//! that waits instead: a registration over its address's rate is held for its turn when
//! that comes within [`REGISTER_HOLD`], and refused past it.

use std::{
    net::IpAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;
// tokio's clock, so tests can pause and advance it (a refill is then instant, not waited).
use tokio::time::Instant;

/// Longest a registration over its address's rate waits for its turn before it is
/// refused instead (`rate_limited`, with how long to wait). Bounded: a connection holds at
/// most one registration at a time, so this holds at most one sleeping request per open
/// connection, and an address's bucket owes at most `REGISTER_HOLD × register_rate`
/// tokens.
pub(crate) const REGISTER_HOLD: Duration = Duration::from_secs(1);

/// Console logins an address may try at once (`POST /login`): a person typing or pasting
/// the token needs a few tries.
pub(crate) const LOGIN_BURST: f64 = 10.0;
/// Console logins per second per address after the burst: guessing a token gets one try a
/// second. Their own bucket, not the registrations' (whose burst admits a whole roster at
/// once: docs/SECURITY.md).
pub(crate) const LOGIN_RATE: f64 = 1.0;

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token. `Err(wait)` says how long until one is available.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.reserve(now, Duration::ZERO).map(drop)
    }

    /// Takes one token now, or the next one to come if it comes within `hold`:
    /// `Ok(wait)` says how long the caller waits before using it (zero for one taken now;
    /// the bucket goes below zero by the reserved tokens, at most `hold × rate` of them).
    /// `Err(wait)` says how long until one would be free, when that is longer than `hold`.
    pub(crate) fn reserve(&mut self, now: Instant, hold: Duration) -> Result<Duration, Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(Duration::ZERO);
        }
        let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
        if wait <= hold {
            self.tokens -= 1.0;
            Ok(wait)
        } else {
            Err(wait)
        }
    }
}

/// Per-address state: open connections, the registration bucket and the login bucket.
struct AddrState {
    conns: usize,
    registrations: TokenBucket,
    logins: TokenBucket,
    touched: Instant,
}

/// Limits kept per remote address. Entries of addresses with no open connection are
/// dropped after a minute, so the table is bounded by the connection cap plus recent
/// visitors (and hard-capped at [`MAX_TRACKED`]).
pub(crate) struct AddrLimits {
    table: DashMap<IpAddr, AddrState>,
    max_conns_per_addr: usize,
    register_rate: f64,
    register_burst: f64,
    last_sweep: Mutex<Instant>,
}

/// Most addresses tracked at once; beyond it idle entries are swept first.
pub(crate) const MAX_TRACKED: usize = 65_536;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManyConnections {
    /// The per-address cap.
    pub limit: usize,
}

impl AddrLimits {
    /// Limits with the given per-address caps. Loopback addresses are exempt from the
    /// connection cap (every SSH-tunnelled machine arrives from 127.0.0.1); the total cap
    /// still bounds them.
    pub(crate) fn new(max_conns_per_addr: usize, register_rate: f64, register_burst: f64) -> Self {
        Self {
            table: DashMap::new(),
            max_conns_per_addr,
            register_rate,
            register_burst,
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Counts a new connection from `ip`, or refuses it.
    pub(crate) fn open(&self, ip: IpAddr) -> Result<(), TooManyConnections> {
        let now = Instant::now();
        self.sweep(now);
        let mut e = self.table.entry(ip).or_insert_with(|| AddrState {
            conns: 0,
            registrations: TokenBucket::new(self.register_rate, self.register_burst, now),
            logins: TokenBucket::new(LOGIN_RATE, LOGIN_BURST, now),
            touched: now,
        });
        if !ip.is_loopback() && e.conns >= self.max_conns_per_addr {
            return Err(TooManyConnections {
                limit: self.max_conns_per_addr,
            });
        }
        e.conns += 1;
        e.touched = now;
        Ok(())
    }

    /// A connection from `ip` closed.
    pub(crate) fn close(&self, ip: IpAddr) {
        if let Some(mut e) = self.table.get_mut(&ip) {
            e.conns = e.conns.saturating_sub(1);
            e.touched = Instant::now();
        }
    }

    /// Takes a registration token for `ip`. Over the rate, the registration is held for its
    /// turn if that comes within [`REGISTER_HOLD`] (`Ok(wait)`), so a fleet registering one
    /// after another is paced rather than refused and retried; `Err(wait)` past that.
    pub(crate) fn register(&self, ip: IpAddr) -> Result<Duration, Duration> {
        self.reserve(ip, |e| &mut e.registrations, REGISTER_HOLD)
    }

    /// Takes a console login attempt for `ip` ([`LOGIN_BURST`], then [`LOGIN_RATE`]); never
    /// held: `Err(wait)` when none is left now.
    pub(crate) fn login(&self, ip: IpAddr) -> Result<(), Duration> {
        self.reserve(ip, |e| &mut e.logins, Duration::ZERO)
            .map(drop)
    }

    /// Reserves a token of `ip`'s `bucket` ([`TokenBucket::reserve`] with `hold`); an
    /// address with no entry (no connection open) is not limited.
    fn reserve(
        &self,
        ip: IpAddr,
        bucket: impl FnOnce(&mut AddrState) -> &mut TokenBucket,
        hold: Duration,
    ) -> Result<Duration, Duration> {
        let now = Instant::now();
        match self.table.get_mut(&ip) {
            Some(mut e) => {
                e.touched = now;
                bucket(&mut e).reserve(now, hold)
            }
            None => Ok(Duration::ZERO),
        }
    }

    fn sweep(&self, now: Instant) {
        let due = {
            let mut last = self
                .last_sweep
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if now.duration_since(*last) < Duration::from_secs(60) && self.table.len() < MAX_TRACKED
            {
                false
            } else {
                *last = now;
                true
            }
        };
        if due {
            self.table.retain(|_, e| {
                e.conns > 0 || now.duration_since(e.touched) < Duration::from_secs(60)
            });
        }
    }
}

/// The connection caps of the whole hub: connections that may use it, and — on a hub with a
/// token — connections that upgraded without showing it, counted apart.
///
/// Every accepted connection takes a place under `max_connections` (it may be a token
/// holder about to send its Bearer header). On a hub with a token, one that completes the
/// WebSocket upgrade without a valid Bearer header moves to the places of the
/// *unauthenticated* (at most `max_unauthenticated`; over it the upgrade is refused with
/// 503), and moves back only when it presents the token on `register`. So clients without
/// the token hold at most `max_unauthenticated` places, never the `max_connections` places
/// of token holders; and every connection on a token hub must show the token within the
/// auth timeout of its accept. A [`Slot`] is held until the connection's task ends — after
/// its socket is closed — so a connection counts for as long as it holds a socket.
#[derive(Debug)]
pub(crate) struct ConnCaps {
    main: AtomicUsize,
    anonymous: AtomicUsize,
    max_main: usize,
    max_anonymous: usize,
    /// Whether connections must show a token.
    token: bool,
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CapFull {
    /// `max_connections`: the hub is full of connections that may use it.
    Connections(usize),
    /// `max_unauthenticated`: too many connections have not shown the token.
    Unauthenticated(usize),
}

impl std::fmt::Display for CapFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapFull::Connections(n) => {
                write!(f, "hub is at its connection limit ({n}); try again later")
            }
            CapFull::Unauthenticated(n) => write!(
                f,
                "too many connections without the hub token ({n}); present the token as an \
                 Authorization: Bearer header"
            ),
        }
    }
}

impl ConnCaps {
    /// Caps for a hub with (`token`) or without a token.
    pub(crate) fn new(
        max_connections: usize,
        max_unauthenticated: usize,
        token: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            main: AtomicUsize::new(0),
            anonymous: AtomicUsize::new(0),
            max_main: max_connections,
            max_anonymous: max_unauthenticated,
            token,
        })
    }

    /// Counts a connection just accepted, or refuses it.
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Slot, CapFull> {
        take(
            &self.main,
            self.max_main,
            CapFull::Connections(self.max_main),
        )?;
        Ok(Slot {
            caps: self.clone(),
            anonymous: false,
            authenticated: !self.token,
        })
    }

    /// Connections counted now: (under `max_connections`, unauthenticated).
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        (
            self.main.load(Ordering::Acquire),
            self.anonymous.load(Ordering::Acquire),
        )
    }
}

fn take(count: &AtomicUsize, max: usize, full: CapFull) -> Result<(), CapFull> {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .map(drop)
        .map_err(|_| full)
}

/// One connection's place under the [`ConnCaps`]; given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    caps: Arc<ConnCaps>,
    /// Counted among the unauthenticated (else under `max_connections`).
    anonymous: bool,
    /// Has shown the token (always, on a hub without one).
    authenticated: bool,
}

impl Slot {
    /// Whether the connection has shown the token (or needs none).
    pub(crate) fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The connection upgraded without a valid Bearer header: it moves to the
    /// unauthenticated places, or is refused when they are full.
    pub(crate) fn upgraded_anonymous(&mut self) -> Result<(), CapFull> {
        if self.authenticated || self.anonymous {
            return Ok(());
        }
        let caps = &self.caps;
        take(
            &caps.anonymous,
            caps.max_anonymous,
            CapFull::Unauthenticated(caps.max_anonymous),
        )?;
        caps.main.fetch_sub(1, Ordering::AcqRel);
        self.anonymous = true;
        Ok(())
    }

    /// The connection showed the token. An unauthenticated one moves back under
    /// `max_connections`, or is refused when that is full (keeping its place until closed).
    pub(crate) fn authenticate(&mut self) -> Result<(), CapFull> {
        if self.anonymous {
            let caps = &self.caps;
            take(
                &caps.main,
                caps.max_main,
                CapFull::Connections(caps.max_main),
            )?;
            caps.anonymous.fetch_sub(1, Ordering::AcqRel);
            self.anonymous = false;
        }
        self.authenticated = true;
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let count = if self.anonymous {
            &self.caps.anonymous
        } else {
            &self.caps.main
        };
        count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_without_the_token_have_their_own_cap_and_never_take_token_holders_slots() {
        let caps = ConnCaps::new(2, 3, true);
        let mut anon = Vec::new();
        for _ in 0..3 {
            let mut s = caps.admit().unwrap();
            assert!(!s.is_authenticated());
            s.upgraded_anonymous().unwrap();
            anon.push(s);
        }
        let mut fourth = caps.admit().unwrap();
        assert_eq!(
            fourth.upgraded_anonymous().unwrap_err(),
            CapFull::Unauthenticated(3)
        );
        drop(fourth);
        assert_eq!(caps.counts(), (0, 3));
        // Token holders get every place under max_connections.
        let mut a = caps.admit().unwrap();
        a.authenticate().unwrap();
        let b = caps.admit().unwrap();
        assert_eq!(caps.admit().unwrap_err(), CapFull::Connections(2));
        // An anonymous one that shows the token later needs a place there too.
        assert_eq!(anon[0].authenticate().unwrap_err(), CapFull::Connections(2));
        drop(b);
        anon[0].authenticate().unwrap();
        assert!(anon[0].is_authenticated());
        assert_eq!(caps.counts(), (2, 2));
        drop((a, anon));
        assert_eq!(caps.counts(), (0, 0));
    }

    #[test]
    fn on_an_open_hub_every_connection_counts_against_max_connections() {
        let caps = ConnCaps::new(2, 0, false);
        let mut a = caps.admit().unwrap();
        let _b = caps.admit().unwrap();
        assert!(a.is_authenticated());
        a.upgraded_anonymous().unwrap();
        assert_eq!(caps.counts(), (2, 0));
        assert_eq!(caps.admit().unwrap_err(), CapFull::Connections(2));
        drop(a);
        caps.admit().unwrap();
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0, t0);
        assert!(b.take(t0).is_ok() && b.take(t0).is_ok() && b.take(t0).is_ok());
        let wait = b.take(t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(b.take(t0 + Duration::from_millis(100)).is_ok());
        assert!(b.take(t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn a_reservation_waits_its_turn_within_the_hold_and_is_refused_past_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = TokenBucket::new(10.0, 2.0, t0);
        assert_eq!(b.reserve(t0, ms(250)), Ok(Duration::ZERO));
        assert_eq!(b.reserve(t0, ms(250)), Ok(Duration::ZERO));
        // Over the burst: each in turn, 100 ms apart, as long as the turn is within 250 ms.
        let turns: Vec<_> = (0..2).map(|_| b.reserve(t0, ms(250)).unwrap()).collect();
        assert!(turns[0] <= ms(100) && turns[1] > turns[0], "{turns:?}");
        assert!(turns[1] <= ms(200), "{turns:?}");
        let refused = b.reserve(t0, ms(250)).unwrap_err();
        assert!(refused > ms(250), "refused, with the wait: {refused:?}");
        // A refusal reserves nothing: the next turn is still the third.
        assert!(b.reserve(t0, ms(300)).unwrap() <= ms(300));
        // Once the owed tokens have come in, the bucket is back to taking at once.
        assert_eq!(b.reserve(t0 + ms(500), ms(250)), Ok(Duration::ZERO));
    }

    #[test]
    fn per_address_connection_cap_spares_loopback() {
        let l = AddrLimits::new(2, 100.0, 100.0);
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(l.open(remote).is_ok() && l.open(remote).is_ok());
        assert_eq!(l.open(remote), Err(TooManyConnections { limit: 2 }));
        l.close(remote);
        assert!(l.open(remote).is_ok());
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..10 {
            assert!(l.open(local).is_ok());
        }
    }

    #[test]
    fn registrations_are_rate_limited_per_address() {
        let l = AddrLimits::new(10, 1.0, 2.0);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        l.open(ip).unwrap();
        assert_eq!(l.register(ip), Ok(Duration::ZERO));
        assert_eq!(l.register(ip), Ok(Duration::ZERO));
        let held = l.register(ip).unwrap();
        assert!(
            held > Duration::from_millis(900) && held <= REGISTER_HOLD,
            "{held:?}"
        );
        assert!(l.register(ip).unwrap_err() > REGISTER_HOLD);
        let other: IpAddr = "192.0.2.10".parse().unwrap();
        l.open(other).unwrap();
        assert_eq!(l.register(other), Ok(Duration::ZERO));
    }
}
