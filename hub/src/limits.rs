//! Rate limits and connection caps: they stop floods, not work.
//!
//! Defaults admit a benchmark or a lead agent bursting thousands of messages a second on
//! one connection; they exist so that one misbehaving client cannot starve the others.
//! Each limit is answered with a clear error (`rate_limited`, with how long to wait) or, for
//! connections over the cap, a refused handshake — never by silently dropping work.

use std::{
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use dashmap::DashMap;

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token. `Err(wait)` says how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Per-address state: open connections and the registration bucket.
struct AddrState {
    conns: usize,
    registrations: TokenBucket,
    touched: Instant,
}

/// Limits kept per remote address. Entries of addresses with no open connection are
/// dropped after a minute, so the table is bounded by the connection cap plus recent
/// visitors (and hard-capped at [`MAX_TRACKED`]).
pub struct AddrLimits {
    table: DashMap<IpAddr, AddrState>,
    max_conns_per_addr: usize,
    register_rate: f64,
    register_burst: f64,
    last_sweep: Mutex<Instant>,
}

/// Most addresses tracked at once; beyond it idle entries are swept first.
pub const MAX_TRACKED: usize = 65_536;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyConnections {
    /// The per-address cap.
    pub limit: usize,
}

impl AddrLimits {
    /// Limits with the given per-address caps. Loopback addresses are exempt from the
    /// connection cap (every SSH-tunnelled machine arrives from 127.0.0.1); the total cap
    /// still bounds them.
    pub fn new(max_conns_per_addr: usize, register_rate: f64, register_burst: f64) -> Self {
        Self {
            table: DashMap::new(),
            max_conns_per_addr,
            register_rate,
            register_burst,
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Counts a new connection from `ip`, or refuses it.
    pub fn open(&self, ip: IpAddr) -> Result<(), TooManyConnections> {
        let now = Instant::now();
        self.sweep(now);
        let mut e = self.table.entry(ip).or_insert_with(|| AddrState {
            conns: 0,
            registrations: TokenBucket::new(self.register_rate, self.register_burst, now),
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
    pub fn close(&self, ip: IpAddr) {
        if let Some(mut e) = self.table.get_mut(&ip) {
            e.conns = e.conns.saturating_sub(1);
            e.touched = Instant::now();
        }
    }

    /// Takes a registration token for `ip`; `Err(wait)` when over the rate.
    pub fn register(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        match self.table.get_mut(&ip) {
            Some(mut e) => {
                e.touched = now;
                e.registrations.take(now)
            }
            None => Ok(()),
        }
    }

    fn sweep(&self, now: Instant) {
        let due = {
            let mut last = self.last_sweep.lock().expect("sweep lock");
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(l.register(ip).is_ok() && l.register(ip).is_ok());
        assert!(l.register(ip).is_err());
        let other: IpAddr = "192.0.2.10".parse().unwrap();
        l.open(other).unwrap();
        assert!(l.register(other).is_ok());
    }
}
