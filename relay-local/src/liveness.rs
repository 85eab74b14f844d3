//! Is a process still the one we recorded? A pid alone cannot say: pids are reused, so a
//! registry that remembered "CC-1 is pid 4711" would call CC-1 alive as soon as any other
//! program got 4711. A [`ProcessStamp`] pairs the pid with the process's start time, and a
//! stamp is alive only while a process with that pid *and* that start time exists and is not
//! a zombie (a zombie has exited; `kill(pid, 0)` would still call it alive).
//!
//! Every query refreshes exactly one pid through sysinfo (on Linux one read of
//! `/proc/<pid>/stat`), never the whole process table, so checking a registry of a few dozen
//! entries stays cheap.

use serde::{Deserialize, Serialize};
use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System};

/// How far two readings of one process's start time may differ and still be the same
/// process. Linux derives start times from the boot time in `/proc/stat`, which the kernel
/// recomputes from the wall clock and can shift by a second after clock adjustments; a
/// one-second slack keeps a long-running session from being declared dead by that, while a
/// pid reused within the same second remains practically impossible.
pub const START_SLACK_SECS: u64 = 1;

/// A process identified by pid and start time, so a reused pid is not mistaken for the
/// process that was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessStamp {
    /// The process id.
    pub pid: u32,
    /// When the process started, in seconds since the Unix epoch. `0` means unknown (the
    /// platform could not say); such a stamp is judged by its pid alone.
    pub started: u64,
}

/// What sysinfo knows about one pid right now.
struct Probe {
    started: u64,
    zombie: bool,
    #[cfg_attr(unix, allow(dead_code))]
    parent: Option<u32>,
}

#[cfg(not(unix))]
fn parent_of(pid: u32) -> Option<u32> {
    probe(pid)?.parent
}

/// Refreshes exactly `pid` (never the whole table) and reads its start time and state.
fn probe(pid: u32) -> Option<Probe> {
    let mut sys = System::new().ok()?;
    let spid = Pid::from_u32(pid);
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[spid]),
        true,
        ProcessRefreshKind::nothing(),
    );
    let p = sys.process(spid)?;
    Some(Probe {
        started: p.start_time(),
        zombie: matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead),
        parent: p.parent().map(Pid::as_u32),
    })
}

/// The stamp of the process `pid` as it is now, or `None` when no such process exists.
///
/// A zombie (exited, not yet reaped) still has a stamp, so a caller can record a child it
/// just spawned without racing its exit; [`is_alive`] calls that stamp dead.
pub fn stamp(pid: u32) -> Option<ProcessStamp> {
    probe(pid).map(|p| ProcessStamp {
        pid,
        started: p.started,
    })
}

/// True when the recorded process still runs: the pid exists, it is not a zombie, and its
/// start time matches the stamp (within [`START_SLACK_SECS`]).
pub fn is_alive(s: &ProcessStamp) -> bool {
    match probe(s.pid) {
        None => false,
        Some(p) if p.zombie => false,
        Some(p) => s.started == 0 || p.started.abs_diff(s.started) <= START_SLACK_SECS,
    }
}

/// This process's stamp. Falls back to start time `0` (unknown) if the platform cannot say.
pub fn current() -> ProcessStamp {
    let pid = std::process::id();
    stamp(pid).unwrap_or(ProcessStamp { pid, started: 0 })
}

/// The parent process's stamp (for the bridge: the agent that spawned it), or `None` when
/// the parent is unknown or already gone.
pub fn parent() -> Option<ProcessStamp> {
    #[cfg(unix)]
    let ppid = std::os::unix::process::parent_id();
    #[cfg(not(unix))]
    let ppid = parent_of(std::process::id())?;
    stamp(ppid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_with_a_real_start_time() {
        let me = current();
        assert_eq!(me.pid, std::process::id());
        assert!(me.started > 1_600_000_000, "start time {}", me.started);
        assert!(is_alive(&me));
        assert_eq!(stamp(me.pid), Some(me));
    }

    #[test]
    fn a_wrong_start_time_is_a_different_process() {
        let me = current();
        let older = ProcessStamp {
            started: me.started - 100,
            ..me
        };
        assert!(!is_alive(&older));
        let newer = ProcessStamp {
            started: me.started + 100,
            ..me
        };
        assert!(!is_alive(&newer));
    }

    #[test]
    fn a_reaped_process_is_dead_and_a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let s = stamp(child.id()).expect("child exists until it is reaped");
        // Until we wait, the exited child is a zombie: it must not count as alive. Poll (with
        // a bound) because it may still be running for a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while is_alive(&s) {
            assert!(std::time::Instant::now() < deadline, "`true` never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        #[cfg(target_os = "linux")]
        assert!(stamp(child.id()).is_some(), "zombie still has an entry");
        child.wait().unwrap();
        assert!(!is_alive(&s));
    }

    #[test]
    fn parent_is_alive() {
        let p = parent().expect("the test runner is our parent");
        assert!(is_alive(&p));
        assert_ne!(p.pid, std::process::id());
    }

    #[test]
    fn stamps_serialize_as_plain_objects() {
        let s = ProcessStamp {
            pid: 42,
            started: 1_700_000_000,
        };
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, r#"{"pid":42,"started":1700000000}"#);
        assert_eq!(serde_json::from_str::<ProcessStamp>(&j).unwrap(), s);
    }
}
