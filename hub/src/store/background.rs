//! The store's background threads (the WAL checkpointer, the search indexer) run at a lower
//! CPU priority than the threads an ack waits for (the store's writer, the network runtime).
//!
//! On a small machine they share the cores with those: a 30 ms indexing pass that takes a
//! core from the writer shows up as 30 ms more latency on every message queued behind the
//! writer's next commit. Their work is never urgent (a search catches the index up itself;
//! the writer finishes a checkpoint itself when the WAL grows past its bound), so they only
//! yield: the total work is the same (docs/ARCHITECTURE.md, "A frame's way", threads).

/// The nice value a background thread runs at (the `nice` scale: 0 normal, 19 the least
/// CPU). 10 lets the writer and the runtime win every contended slice while the
/// background still gets the idle ones.
const NICE: i32 = 10;

/// Lowers the calling thread's priority to [`NICE`] (never raises it: a hub started under
/// `nice` keeps its own). On Linux a nice value is per thread (`who` 0 is the calling
/// thread); failing is harmless (the thread keeps the hub's priority).
pub(crate) fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpriority takes two integers and touches no memory of ours (-1 is also
        // its error value; then the thread is lowered as if it were at 0).
        let now = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        if now >= NICE {
            return;
        }
        // SAFETY: setpriority takes three integers and touches no memory of ours.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
        if rc != 0 {
            tracing::debug!(
                "could not lower a background thread's priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::{NICE, lower_priority};

    /// The calling thread's nice value (field 19 of its `stat`).
    fn nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn only_the_calling_thread_is_lowered() {
        let before = nice();
        let inside = std::thread::spawn(|| {
            lower_priority();
            nice()
        })
        .join()
        .unwrap();
        assert_eq!(inside, before.max(NICE));
        assert_eq!(
            nice(),
            before,
            "the thread that spawned it keeps its priority"
        );
    }
}
