//! The offline outbox: messages `relay_send` could not hand to the hub (it was unreachable,
//! or the ack never came), kept on this machine until the hub acknowledges them.
//!
//! Where: `~/.claude-relay/outbox/NAME/` (`CLAUDE_RELAY_HOME` aware), the directories mode
//! 0700 and every file 0600 — queued text is as private as the session's mail.
//!
//! Contract (see `docs/BRIDGE.md`, "Offline outbox"):
//! - [`Outbox::append`] returns only after the entry's file and its directory entry are
//!   fsync'd, so "queued" is never said of a message a crash could lose.
//! - Bounded: [`Limits`] (default [`DEFAULT_MAX_COUNT`] messages, [`DEFAULT_MAX_BYTES`]
//!   bytes on disk). An append over a bound is refused with [`OutboxError::Full`] — never a
//!   silent drop, never an eviction of older mail.
//! - Entries leave only through [`Drain::ack`] (the hub acknowledged that entry's key) or
//!   [`Drain::reject`] (the hub refused it for good; kept as `.rejected` until
//!   [`Outbox::take_rejected`] hands it to whoever tells the model).
//! - One drainer per session on this machine: [`Outbox::try_drain`] takes an exclusive
//!   `flock` on `drain.lock` for as long as the [`Drain`] lives; a second bridge of the same
//!   session gets `None`. The kernel drops the lock when its holder dies (even by SIGKILL).
//! - Every change (append, ack, failure, reject, cleanup) runs under a short exclusive lock
//!   on `lock`, so two processes never pick the same sequence number or miscount the bounds.
//!
//! Format: one file per message, written to a temporary name and renamed (see `entry.rs`).
//! Chosen over one append-only log because the rename makes each record all-or-nothing with
//! no checksum or recovery scan, an ack is an unlink (no tombstones, no compaction), and an
//! update (attempts, last error) is one more atomic rewrite. The price — two fsyncs per
//! queued message — is nothing at agent rates, and the outbox is only used when the hub is
//! not. Sequence numbers order the queue; after the queue empties they may start again at 1,
//! which is harmless because an ack checks the key of the file it removes.
//!
//! Every method does blocking file I/O (and fsync): call it from `spawn_blocking` (the
//! handle is a cheap `Clone`).

mod entry;

use std::{
    fs,
    io::{self, ErrorKind},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub use entry::Entry;
use entry::{CORRUPT, QUEUED, REJECTED};
use relay_proto::SessionId;

use relay_local::files::{self, Mode, private_dir, sync_dir};

/// Default bound on stored entries (queued + rejected + unreadable files).
pub const DEFAULT_MAX_COUNT: usize = 1000;
/// Default bound on the bytes those files take on disk: 8 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 8 << 20;
/// Largest message text queued: the hub's default `max_content_bytes` (512 KiB); a larger
/// one would be refused by the hub anyway.
pub const MAX_CONTENT_BYTES: usize = 512 << 10;
/// Longest idempotency key the hub accepts (`docs/PROTOCOL.md`, `message.key`).
pub const MAX_KEY_BYTES: usize = 128;
/// Longest error text kept with an entry.
const MAX_ERROR_CHARS: usize = 500;
/// How long a change waits for another process's change to finish before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// Largest file read as an entry (content escaped as JSON can grow up to six times).
const MAX_ENTRY_FILE: u64 = 6 * MAX_CONTENT_BYTES as u64 + 4096;

/// How much the outbox may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Files kept: queued, rejected and unreadable entries together.
    pub max_count: usize,
    /// Bytes those files take (the JSON as stored, so escaping counts).
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_count: DEFAULT_MAX_COUNT,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Why the outbox could not do what was asked. The messages are written to be shown to the
/// model as they are.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Over a bound: the message was not queued.
    #[error(
        "the outbox on this machine is full ({count} messages, {bytes} bytes; limits \
         {max_count} messages, {max_bytes} bytes) — this message was NOT queued"
    )]
    Full {
        /// Entries stored now.
        count: usize,
        /// Bytes stored now.
        bytes: u64,
        /// [`Limits::max_count`].
        max_count: usize,
        /// [`Limits::max_bytes`].
        max_bytes: u64,
    },
    /// The message (key, recipient or text) cannot be sent at all.
    #[error("this message cannot be queued: {0} — it was NOT queued")]
    Invalid(String),
    /// Another process held the outbox's lock for longer than 5 s.
    #[error("the outbox {} is busy (locked by another process)", path.display())]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// A file or directory could not be read or written.
    #[error("outbox {}: {source}", path.display())]
    Io {
        /// The file or directory at fault.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `relay_status` shows about the queue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    /// Messages waiting to be sent.
    pub queued: usize,
    /// Bytes all stored files take (what [`Limits::max_bytes`] bounds).
    pub bytes: u64,
    /// When the oldest waiting message was queued, Unix ms.
    pub oldest_queued_at_ms: Option<i64>,
    /// How long ago that was.
    pub oldest_age: Option<Duration>,
    /// Failed attempts of the oldest waiting message (the head of the queue).
    pub head_attempts: u32,
    /// Why the head's last attempt failed.
    pub last_error: Option<String>,
    /// Messages the hub refused for good, not yet reported ([`Outbox::take_rejected`]).
    pub rejected: usize,
    /// Files that are not readable entries (kept as `*.corrupt` for a human).
    pub corrupt: usize,
    /// The bounds in force.
    pub limits: Limits,
}

/// The session's outbox directory. Cheap to clone; holds no open files.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
    limits: Limits,
}

/// What a directory listing found.
#[derive(Default)]
struct Scan {
    /// Queued entries' sequence numbers, ascending.
    queued: Vec<u64>,
    rejected: Vec<u64>,
    corrupt: usize,
    temps: Vec<PathBuf>,
    /// Bytes of entry files (queued, rejected, corrupt).
    bytes: u64,
    max_seq: u64,
}

impl Scan {
    fn count(&self) -> usize {
        self.queued.len() + self.rejected.len() + self.corrupt
    }
}

impl Outbox {
    /// The outbox of `session` on this machine: `outbox/NAME/` under the relay home, with
    /// the default [`Limits`]. Creates the directories (0700) and clears torn writes.
    pub fn for_session(session: &SessionId) -> Result<Self, OutboxError> {
        Self::open(
            relay_local::paths::outbox_dir().join(session.as_str()),
            Limits::default(),
        )
    }

    /// The outbox in `dir` (created 0700 with its parent, tightened if looser). Temporary
    /// files that crashed writes left behind are removed: they were never reported queued.
    pub fn open(dir: impl Into<PathBuf>, limits: Limits) -> Result<Self, OutboxError> {
        let dir = dir.into();
        private_dir(&dir).map_err(io_err(&dir))?;
        let outbox = Self { dir, limits };
        outbox.locked(|| {
            for tmp in outbox.scan()?.temps {
                tracing::info!("outbox: removing an unfinished write {}", tmp.display());
                let _ = fs::remove_file(&tmp);
            }
            Ok(())
        })?;
        Ok(outbox)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bounds in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Queues a message to `to` (a session id or `all`) under idempotency `key`. Returns
    /// once it is durable (file and directory fsync'd) — only then may the tool say
    /// "queued". Refused (nothing stored) over a bound, for an invalid recipient or key, or
    /// for text over [`MAX_CONTENT_BYTES`].
    pub fn append(&self, key: &str, to: &str, content: &str) -> Result<Entry, OutboxError> {
        self.append_reply(key, to, content, None)
    }

    /// [`append`](Self::append) for a reply: the entry keeps `reply_to` (the id of the
    /// message it answers), so the drained resend is still a reply.
    pub fn append_reply(
        &self,
        key: &str,
        to: &str,
        content: &str,
        reply_to: Option<&str>,
    ) -> Result<Entry, OutboxError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(OutboxError::Invalid(format!(
                "the idempotency key must be 1 to {MAX_KEY_BYTES} bytes (got {})",
                key.len()
            )));
        }
        if !to.eq_ignore_ascii_case(relay_proto::BROADCAST)
            && let Err(e) = SessionId::parse(to)
        {
            return Err(OutboxError::Invalid(format!("recipient {to:?}: {e}")));
        }
        if content.len() > MAX_CONTENT_BYTES {
            return Err(OutboxError::Invalid(format!(
                "the text is {} bytes; the hub takes at most {MAX_CONTENT_BYTES} (send a path \
                 or commit instead)",
                content.len()
            )));
        }
        let mut entry = Entry::new(key, to, content, relay_proto::time::now_ms());
        entry.reply_to = reply_to.map(str::to_string);
        let bytes = entry.to_bytes();
        self.locked(|| {
            let scan = self.scan()?;
            let (count, stored) = (scan.count(), scan.bytes);
            if count + 1 > self.limits.max_count
                || stored + bytes.len() as u64 > self.limits.max_bytes
            {
                return Err(OutboxError::Full {
                    count,
                    bytes: stored,
                    max_count: self.limits.max_count,
                    max_bytes: self.limits.max_bytes,
                });
            }
            entry.seq = scan.max_seq + 1;
            let path = self.path(entry.seq, QUEUED);
            files::write_atomic(&path, &bytes, Mode::Private).map_err(io_err(&path))?;
            Ok(())
        })?;
        Ok(entry)
    }

    /// The queue's size, age and last error (no lock: a snapshot).
    pub fn stats(&self) -> Result<Stats, OutboxError> {
        let scan = self.scan()?;
        let mut stats = Stats {
            queued: scan.queued.len(),
            bytes: scan.bytes,
            rejected: scan.rejected.len(),
            corrupt: scan.corrupt,
            limits: self.limits,
            ..Stats::default()
        };
        // The head may be acked between the listing and the read: try the next one.
        for &seq in &scan.queued {
            if let Ok(Some(head)) = entry::read(&self.path(seq, QUEUED), seq, MAX_ENTRY_FILE) {
                let now = relay_proto::time::now_ms();
                stats.oldest_queued_at_ms = Some(head.queued_at_ms);
                stats.oldest_age = Some(Duration::from_millis(
                    now.saturating_sub(head.queued_at_ms).max(0) as u64,
                ));
                stats.head_attempts = head.attempts;
                stats.last_error = head.last_error;
                break;
            }
        }
        Ok(stats)
    }

    /// Becomes this session's one drainer on this machine, or `None` when another process
    /// (or another [`Drain`] in this one) already is. The lock lasts as long as the
    /// returned [`Drain`].
    pub fn try_drain(&self) -> Result<Option<Drain>, OutboxError> {
        let path = self.dir.join("drain.lock");
        let file = lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Drain {
                outbox: self.clone(),
                _lock: file,
            })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(io_err(&path)(e)),
        }
    }

    /// The entries the hub refused for good, oldest first, removed from disk as they are
    /// returned — for the bridge to tell the model, once. `last_error` holds the reason.
    pub fn take_rejected(&self) -> Result<Vec<Entry>, OutboxError> {
        self.locked(|| {
            let mut out = Vec::new();
            for seq in self.scan()?.rejected {
                let path = self.path(seq, REJECTED);
                match entry::read(&path, seq, MAX_ENTRY_FILE) {
                    Ok(Some(e)) => out.push(e),
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!("outbox: unreadable rejected entry {}: {e}", path.display());
                        continue;
                    }
                }
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
            if !out.is_empty() {
                sync_dir(&self.dir).map_err(io_err(&self.dir))?;
            }
            Ok(out)
        })
    }

    fn path(&self, seq: u64, suffix: &str) -> PathBuf {
        self.dir.join(entry::file_name(seq, suffix))
    }

    fn scan(&self) -> Result<Scan, OutboxError> {
        let mut scan = Scan::default();
        let listing = fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
        for item in listing {
            let item = item.map_err(io_err(&self.dir))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if files::is_temp(name) {
                scan.temps.push(item.path());
                continue;
            }
            let Some((seq, suffix)) = entry::parse_name(name) else {
                continue;
            };
            // A file removed since the listing simply does not count.
            let Ok(meta) = item.metadata() else { continue };
            scan.bytes += meta.len();
            scan.max_seq = scan.max_seq.max(seq);
            match suffix {
                QUEUED => scan.queued.push(seq),
                REJECTED => scan.rejected.push(seq),
                _ => scan.corrupt += 1,
            }
        }
        scan.queued.sort_unstable();
        scan.rejected.sort_unstable();
        Ok(scan)
    }

    /// Runs `f` holding the change lock (waiting at most [`LOCK_WAIT`] for it).
    fn locked<T>(&self, f: impl FnOnce() -> Result<T, OutboxError>) -> Result<T, OutboxError> {
        let path = self.dir.join("lock");
        let file = lock_file(&path)?;
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(fs::TryLockError::WouldBlock) => return Err(OutboxError::Busy { path }),
                Err(fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
            }
        }
        // Closing `file` on return releases the lock.
        f()
    }

    /// Reads entry `seq` if it is still queued under `key`. A file that is not an entry is
    /// set aside as `.corrupt` (and `None` returned).
    fn read_queued(&self, seq: u64, key: Option<&str>) -> Result<Option<Entry>, OutboxError> {
        let path = self.path(seq, QUEUED);
        match entry::read(&path, seq, MAX_ENTRY_FILE) {
            Ok(Some(e)) if key.is_none_or(|k| k == e.key) => Ok(Some(e)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                let aside = self.path(seq, CORRUPT);
                tracing::warn!(
                    "outbox: {} is not a queued message ({e}); kept as {}",
                    path.display(),
                    aside.display()
                );
                fs::rename(&path, &aside).map_err(io_err(&path))?;
                Ok(None)
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }
}

/// Opens (creating, 0600) a lock file.
fn lock_file(path: &Path) -> Result<fs::File, OutboxError> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))
}

/// The right to drain one session's outbox on this machine (see [`Outbox::try_drain`]).
/// Only a drainer removes queued entries.
#[derive(Debug)]
pub struct Drain {
    outbox: Outbox,
    /// Holds the `flock`; closing it (on drop) releases it.
    _lock: fs::File,
}

impl Drain {
    /// Up to `max` queued entries, oldest first — send them in this order, each with its
    /// own key ([`Entry::frame`]). Entries queued after this call appear in the next one.
    pub fn pending(&self, max: usize) -> Result<Vec<Entry>, OutboxError> {
        let o = &self.outbox;
        o.locked(|| {
            let mut out = Vec::new();
            for seq in o.scan()?.queued {
                if out.len() >= max {
                    break;
                }
                if let Some(e) = o.read_queued(seq, None)? {
                    out.push(e);
                }
            }
            Ok(out)
        })
    }

    /// The hub acknowledged `entry` (a `sent` frame, `duplicate` or not): removes it.
    /// Removes only the file that still holds `entry.key`; returns whether one did.
    pub fn ack(&self, entry: &Entry) -> Result<bool, OutboxError> {
        let o = &self.outbox;
        o.locked(|| {
            if o.read_queued(entry.seq, Some(&entry.key))?.is_none() {
                return Ok(false);
            }
            let path = o.path(entry.seq, QUEUED);
            fs::remove_file(&path).map_err(io_err(&path))?;
            sync_dir(&o.dir).map_err(io_err(&o.dir))?;
            Ok(true)
        })
    }

    /// An attempt to send `entry` failed (no connection, no ack, a transient refusal such
    /// as `rate_limited`): counts it and keeps `error` for `relay_status`. The entry stays
    /// queued. Returns the updated entry, or `None` when it is no longer queued.
    pub fn record_failure(&self, entry: &Entry, error: &str) -> Result<Option<Entry>, OutboxError> {
        self.rewrite(entry, error, QUEUED)
    }

    /// The hub refused `entry` for good (it will never be stored): moves it out of the
    /// queue as `.rejected`, with `reason`, so the queue behind it can drain and the model
    /// can be told ([`Outbox::take_rejected`]). Returns the rejected entry, or `None` when
    /// it is no longer queued.
    pub fn reject(&self, entry: &Entry, reason: &str) -> Result<Option<Entry>, OutboxError> {
        self.rewrite(entry, reason, REJECTED)
    }

    /// Records `error` on `entry` and stores it as `suffix` (replacing the queued file).
    fn rewrite(
        &self,
        entry: &Entry,
        error: &str,
        suffix: &str,
    ) -> Result<Option<Entry>, OutboxError> {
        let o = &self.outbox;
        o.locked(|| {
            let Some(mut current) = o.read_queued(entry.seq, Some(&entry.key))? else {
                return Ok(None);
            };
            current.attempts = current.attempts.saturating_add(1);
            current.last_error = Some(error.chars().take(MAX_ERROR_CHARS).collect());
            let path = o.path(current.seq, suffix);
            files::write_atomic(&path, &current.to_bytes(), Mode::Private)
                .map_err(io_err(&path))?;
            if suffix != QUEUED {
                let queued = o.path(current.seq, QUEUED);
                fs::remove_file(&queued).map_err(io_err(&queued))?;
                sync_dir(&o.dir).map_err(io_err(&o.dir))?;
            }
            Ok(Some(current))
        })
    }
}

#[cfg(test)]
mod tests;
