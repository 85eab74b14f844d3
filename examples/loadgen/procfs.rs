//! What the operating system says about the hub and about the generator itself: CPU time and
//! resident memory from `/proc` (Linux), the generator's own CPU from `getrusage`, and the
//! open-files limit.
//!
//! The hub's CPU comes from `/proc/PID/stat` (`utime + stime`, every thread, including threads
//! that already exited). The kernel reports it in clock ticks (`sysconf(_SC_CLK_TCK)`, 100 Hz
//! here), so one reading is ±10 ms: windows must be long enough that this is noise — the
//! report says how many ticks a figure rests on.

use std::{fs, io};

/// CPU time of a process, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticks {
    /// User time.
    pub user: u64,
    /// System (kernel) time.
    pub system: u64,
}

impl Ticks {
    /// User + system.
    pub(crate) fn total(self) -> u64 {
        self.user + self.system
    }
}

/// Ticks per second (`sysconf(_SC_CLK_TCK)`).
pub(crate) fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Other processes' CPU over a window, in % of one core: the machine's busy ticks minus the
/// hub's and this process's (µs), over `secs`. Clamped at 0 (the three clocks differ a little).
pub(crate) fn other_cpu_pct(machine_ticks: u64, hub_ticks: u64, own_us: u64, secs: f64) -> f64 {
    let other_ms = ticks_ms(machine_ticks) - ticks_ms(hub_ticks) - own_us as f64 / 1000.0;
    (other_ms / 10.0 / secs).max(0.0)
}

/// Converts ticks to milliseconds.
pub(crate) fn ticks_ms(ticks: u64) -> f64 {
    ticks as f64 * 1000.0 / ticks_per_sec() as f64
}

/// Parses `utime` and `stime` (fields 14 and 15) out of a `/proc/PID/stat` line. The command
/// name (field 2) is in parentheses and may itself contain spaces and parentheses, so fields
/// are counted from the last `)`.
pub(crate) fn parse_stat(line: &str) -> Option<Ticks> {
    let rest = &line[line.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state is field 3, so utime (14) is the 12th field of `rest`.
    let user = fields.nth(11)?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some(Ticks { user, system })
}

/// CPU time of process `pid` so far.
pub(crate) fn cpu(pid: u32) -> io::Result<Ticks> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&s).ok_or_else(|| io::Error::other(format!("unreadable /proc/{pid}/stat")))
}

/// CPU time of each live thread of `pid`, summed by thread name (`relay-store`, `relay-hub`
/// for the hub's store actor and tokio workers). Shows which thread a bottleneck is in;
/// threads that exited in between are missing (the process total still has them).
pub(crate) fn threads_cpu(pid: u32) -> io::Result<std::collections::BTreeMap<String, u64>> {
    let mut by_name = std::collections::BTreeMap::new();
    for entry in fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = entry?.path();
        let (Ok(stat), Ok(comm)) = (
            fs::read_to_string(dir.join("stat")),
            fs::read_to_string(dir.join("comm")),
        ) else {
            continue; // The thread ended while we looked.
        };
        if let Some(t) = parse_stat(&stat) {
            *by_name.entry(comm.trim().to_string()).or_insert(0) += t.total();
        }
    }
    Ok(by_name)
}

/// Reads `key:  N kB` out of a `/proc/PID/status` text, in KiB.
pub(crate) fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_ascii_whitespace().next()?.parse().ok())
}

/// Resident memory of `pid` now and at its peak, in KiB (`VmRSS`, `VmHWM`).
pub(crate) fn rss_kib(pid: u32) -> io::Result<(u64, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let now = parse_status_kib(&s, "VmRSS");
    let peak = parse_status_kib(&s, "VmHWM");
    match (now, peak) {
        (Some(n), Some(p)) => Ok((n, p)),
        _ => Err(io::Error::other(format!("no VmRSS in /proc/{pid}/status"))),
    }
}

/// Busy time of the whole machine so far, in clock ticks summed over CPUs: `user + nice +
/// system + irq + softirq + steal` from the first line of `/proc/stat`. Compared with the
/// hub's and the generator's own CPU over the same window it shows what *other* processes
/// (a colleague's compiler) took: a run where that is large is not a clean measurement.
pub(crate) fn machine_busy() -> io::Result<u64> {
    let s = fs::read_to_string("/proc/stat")?;
    parse_machine_busy(&s).ok_or_else(|| io::Error::other("unreadable /proc/stat"))
}

/// The busy ticks of the aggregate `cpu` line of a `/proc/stat` text.
pub(crate) fn parse_machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal …
    Some(f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7).unwrap_or(&0))
}

/// CPU time this process used so far (user + system), in microseconds. `getrusage` counts
/// microseconds, so the generator's own cost is exact even for short windows.
pub(crate) fn self_cpu_us() -> u64 {
    // SAFETY: getrusage writes into the struct we pass and nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// Raises the soft open-files limit to the hard limit (a spawned hub inherits it). Returns
/// the soft limit now in force.
pub(crate) fn raise_nofile() -> io::Result<u64> {
    // SAFETY: getrlimit/setrlimit read and write only the struct we pass.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
    }
    Ok(lim.rlim_cur as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let line = "4242 (claude (relay) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    1234 567 0 0 20 0 5 0 100 1000 200 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Ticks {
                user: 1234,
                system: 567
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn status_values_in_kib() {
        let s = "Name:\tclaude-relay\nVmHWM:\t   9000 kB\nVmRSS:\t    8123 kB\nThreads:\t4\n";
        assert_eq!(parse_status_kib(s, "VmRSS"), Some(8123));
        assert_eq!(parse_status_kib(s, "VmHWM"), Some(9000));
        assert_eq!(parse_status_kib(s, "VmSwap"), None);
    }

    #[test]
    fn machine_busy_leaves_out_idle_and_iowait() {
        let s = "cpu  100 5 50 9000 70 3 2 1 0 0\ncpu0 50 2 25 4500 35 1 1 0 0 0\n";
        assert_eq!(parse_machine_busy(s), Some(100 + 5 + 50 + 3 + 2 + 1));
        assert_eq!(parse_machine_busy("intr 1 2 3"), None);
        assert!(machine_busy().unwrap() > 0);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        cpu(pid).unwrap();
        assert!(!threads_cpu(pid).unwrap().is_empty());
        let (rss, peak) = rss_kib(pid).unwrap();
        assert!(rss > 0 && peak >= rss);
        assert!(self_cpu_us() > 0);
        assert!(ticks_per_sec() > 0);
    }
}
