//! WAL checkpoints off the hot path. SQLite's automatic checkpoint runs on the connection
//! that commits, so every thousandth page or so a commit would also copy the WAL into the
//! database and fsync it — a multi-millisecond stall for every message waiting behind it.
//! The store's connection has automatic checkpoints turned off; this thread, with a
//! connection of its own, runs a PASSIVE checkpoint (which never blocks the writer) every
//! [`EVERY`] while there is traffic, backing off to [`IDLE_EVERY`] when there is none. After
//! a complete checkpoint the writer starts the WAL over from the beginning, reusing the
//! file (`journal_size_limit` trims only a file past what a rewind under load leaves:
//! `sqlite::WAL_KEEP_BYTES`).
//!
//! Under sustained writes a background checkpoint never catches up: by the time it has
//! copied its snapshot the writer has appended more, so the WAL is never complete, never
//! restarts, and grows without bound (1.5 GB in ten seconds of the direct benchmark, every
//! append an extending write that the kernel zero-fills: a third of the hub's CPU). So once
//! the WAL holds more than [`RESET_FRAMES`], this thread raises a flag, and the writer —
//! between two batches — checkpoints the short remainder itself (see
//! [`Checkpointer::reset_wanted`]); its next transaction starts the WAL over. This thread
//! still does the bulk of the copying, the writer only the last few milliseconds' worth.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use rusqlite::Connection;

/// How often the WAL is checkpointed while there is traffic. Measured on the direct
/// benchmark: 500 ms let the WAL grow to tens of MiB (slower commits, 36 ms stalls); 50 ms
/// keeps it small (p99 4.5 ms, max ~10 ms).
pub(crate) const EVERY: Duration = Duration::from_millis(50);
/// WAL frames (pages of 4 KiB) above which the writer is asked to finish a checkpoint
/// itself, so the WAL starts over. The writer is asked at once past twice this, so the
/// WAL file stays under about 128 MiB plus what is written during one checkpoint pass.
pub(crate) const RESET_FRAMES: i64 = 16384;
/// A pass that copied at most this many frames leaves only about as many for the writer
/// to finish (1 MiB: about a millisecond of copying and syncing on its thread).
pub(crate) const CATCH_UP_FRAMES: i64 = 256;
/// The interval doubles up to this while the WAL is empty, so an idle hub wakes rarely.
pub(crate) const IDLE_EVERY: Duration = Duration::from_secs(2);

/// The checkpoint thread of one store file. Dropping it stops the thread (and closes its
/// connection) before returning.
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the checkpoint thread shares with its [`Checkpointer`].
struct Shared {
    stop: AtomicBool,
    /// Set by the thread when the writer should finish a checkpoint (see
    /// [`Checkpointer::reset_wanted`]).
    reset: AtomicBool,
    /// [`RESET_FRAMES`] unless changed with [`Checkpointer::set_reset_frames`].
    limit: AtomicI64,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path`.
    pub(crate) fn start(path: PathBuf) -> Self {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            reset: AtomicBool::new(false),
            limit: AtomicI64::new(RESET_FRAMES),
        });
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("relay-checkpoint".into())
            .spawn(move || run(path, &theirs))
            .ok();
        Self { shared, thread }
    }

    /// Changes the WAL size (in frames) past which the writer finishes a checkpoint
    /// (tests use a small one to see the WAL start over without writing 64 MiB).
    #[cfg(test)]
    pub(crate) fn set_reset_frames(&self, frames: i64) {
        self.shared.limit.store(frames.max(1), Ordering::Release);
    }

    /// True (once) when the WAL has grown past [`RESET_FRAMES`]: the writer should run a
    /// PASSIVE checkpoint on its own connection between two transactions. With no writer
    /// racing it, that checkpoint completes, and the writer's next transaction restarts
    /// the WAL from its beginning.
    pub(crate) fn reset_wanted(&self) -> bool {
        self.shared.reset.swap(false, Ordering::AcqRel)
    }
}

fn run(path: PathBuf, shared: &Shared) {
    let Shared { stop, reset, limit } = shared;
    let mut conn: Option<Connection> = None;
    let mut every = EVERY;
    // Frames already checkpointed in the current WAL, as of the previous pass.
    let mut before = 0;
    while !stop.load(Ordering::Acquire) {
        if !every.is_zero() {
            std::thread::park_timeout(every);
        }
        if stop.load(Ordering::Acquire) {
            break;
        }
        if conn.is_none() {
            conn = Connection::open(&path)
                .and_then(|c| {
                    c.pragma_update(None, "busy_timeout", 100)?;
                    Ok(c)
                })
                .map_err(|e| tracing::debug!("checkpoint connection: {e}"))
                .ok();
        }
        let Some(c) = &conn else { continue };
        // (busy, frames in the WAL, frames checkpointed)
        match c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        }) {
            Ok((frames, done)) if frames > 0 => {
                // What this pass copied (the WAL may have started over since the last).
                let copied = if done >= before { done - before } else { done };
                before = done;
                let limit = limit.load(Ordering::Acquire);
                every = if frames <= limit {
                    EVERY
                } else if copied <= CATCH_UP_FRAMES || frames > 2 * limit {
                    // Caught up to within a few milliseconds of writes, or the writer is
                    // outrunning this thread: the writer finishes (a longer pause then, but
                    // the WAL stays bounded).
                    reset.store(true, Ordering::Release);
                    EVERY
                } else {
                    // Too far behind for the writer to finish cheaply: go again at once
                    // (each pass copies what was written during the last, so they shrink).
                    Duration::ZERO
                };
            }
            Ok(_) => {
                before = 0;
                every = (every * 2).clamp(EVERY, IDLE_EVERY);
            }
            Err(e) => {
                tracing::debug!("checkpoint: {e}");
                conn = None;
                every = EVERY;
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
