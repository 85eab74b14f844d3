//! When the bridge must stop even though nobody closed its stdin.
//!
//! An agent that crashes, or is killed, may leave its MCP servers running: they are
//! re-parented (to init or a subreaper) and their stdin may stay open if someone else holds
//! the pipe. Orphaned bridges would keep holding their session's name on the hub. So the
//! bridge watches its parent: every [`PARENT_POLL`] it compares `getppid()` with the parent
//! it started under and stops when it changed — within about a quarter second of the parent's
//! death. (`kill(ppid, 0)` would not do: a dead parent that nobody reaped yet is a zombie and
//! still "exists".) SIGTERM, SIGINT and SIGHUP stop it too.
//!
//! Every stop found here must end in `std::process::exit`: tokio's stdin reader may sit in a
//! blocking read that no cancellation can interrupt, and would keep the process alive.

use std::{fmt, time::Duration};

use tokio::signal::unix::{Signal, SignalKind, signal};

/// How often the parent pid is checked.
pub(crate) const PARENT_POLL: Duration = Duration::from_millis(250);

/// Why the bridge is stopping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExitCause {
    /// stdin reached EOF (the client closed it): the natural end.
    StdinClosed,
    /// `getppid()` changed: the agent died and we were re-parented.
    ParentGone {
        /// The parent we started under.
        was: u32,
        /// The parent now.
        now: u32,
    },
    /// A termination signal arrived.
    Signal(&'static str),
}

impl fmt::Display for ExitCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StdinClosed => f.write_str("stdin closed"),
            Self::ParentGone { was, now } => {
                write!(f, "parent process {was} is gone (re-parented to {now})")
            }
            Self::Signal(name) => write!(f, "received {name}"),
        }
    }
}

/// Installed signal handlers and the parent we started under.
pub(crate) struct Watchdog {
    parent: u32,
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Watchdog {
    /// Installs the signal handlers (do this first thing, so an early SIGTERM is not lost to
    /// the default action) and records the current parent.
    pub(crate) fn install() -> std::io::Result<Self> {
        Ok(Self {
            parent: std::os::unix::process::parent_id(),
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves when the parent changes or a termination signal arrives.
    pub(crate) async fn wait(&mut self) -> ExitCause {
        let was = self.parent;
        let parent_changed = async {
            let mut tick = tokio::time::interval(PARENT_POLL);
            loop {
                tick.tick().await;
                let now = std::os::unix::process::parent_id();
                if now != was {
                    return ExitCause::ParentGone { was, now };
                }
            }
        };
        tokio::select! {
            cause = parent_changed => cause,
            _ = self.term.recv() => ExitCause::Signal("SIGTERM"),
            _ = self.int.recv() => ExitCause::Signal("SIGINT"),
            _ = self.hup.recv() => ExitCause::Signal("SIGHUP"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_living_parent_keeps_the_watchdog_quiet() {
        let mut w = Watchdog::install().unwrap();
        assert_eq!(w.parent, std::os::unix::process::parent_id());
        let r = tokio::time::timeout(PARENT_POLL * 3, w.wait()).await;
        assert!(r.is_err(), "no exit cause while the parent lives: {r:?}");
    }
}
