//! WAL checkpoints off the hot path. SQLite's automatic checkpoint runs on the connection
//! that commits, so every thousandth page or so a commit would also copy the WAL into the
//! database and fsync it — a multi-millisecond stall for every message waiting behind it.
//! The store's connection has automatic checkpoints turned off; this thread, with a
//! connection of its own, runs a PASSIVE checkpoint (which never blocks the writer) every
//! [`EVERY`] while there is traffic, backing off to [`IDLE_EVERY`] when there is none. After
//! a complete checkpoint the writer starts the WAL over from the beginning, and
//! `journal_size_limit` keeps the file itself from staying large.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use rusqlite::Connection;

/// How often the WAL is checkpointed while there is traffic. Measured on the direct
/// benchmark: 500 ms let the WAL grow to tens of MiB (slower commits, 36 ms stalls); 50 ms
/// keeps it small (p99 4.5 ms, max ~10 ms).
pub const EVERY: Duration = Duration::from_millis(50);
/// The interval doubles up to this while the WAL is empty, so an idle hub wakes rarely.
pub const IDLE_EVERY: Duration = Duration::from_secs(2);

/// The checkpoint thread of one store file. Dropping it stops the thread (and closes its
/// connection) before returning.
pub struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path`.
    pub fn start(path: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("relay-checkpoint".into())
            .spawn(move || run(path, flag))
            .ok();
        Self { stop, thread }
    }
}

fn run(path: PathBuf, stop: Arc<AtomicBool>) {
    let mut conn: Option<Connection> = None;
    let mut every = EVERY;
    while !stop.load(Ordering::Acquire) {
        std::thread::park_timeout(every);
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
        match c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) if frames > 0 => every = EVERY,
            Ok(_) => every = (every * 2).min(IDLE_EVERY),
            Err(e) => {
                tracing::debug!("checkpoint: {e}");
                conn = None;
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
