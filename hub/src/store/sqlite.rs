//! The embedded default store: SQLite (bundled) in WAL mode, in the hub's data directory.
//!
//! Schema (see `docs/STORAGE.md`): `messages` holds every message with its hub-wide `seq`
//! and, for direct mail, when it was first delivered and read; `reads` holds per-session read
//! marks for broadcasts; `sessions` remembers every session that ever registered (for
//! `get_sessions` and for which broadcasts count as its mail); `meta` holds the epoch, the
//! sequence high-water mark and the byte total used by retention. A message that answers
//! another carries `reply_to` and `thread` (the root's seq); `postings` says which messages
//! each session sent and was sent (see [`postings`]); the search index, in a file of its
//! own, indexes every body for `search` (see [`search`]).

use std::{
    path::{Path, PathBuf},
    rc::Rc,
};

use relay_proto::{BROADCAST, time::iso, wire::SendState};
use rusqlite::{Connection, OptionalExtension, ToSql, params, types::Value};

use self::postings::{Postings, Role};
use self::savepoint::Savepoint;
use super::{
    After, Appended, Backend, HistoryPage, HistoryQuery, InboxPage, Integrity, NewMessage,
    PruneReport, SessionRecord, StoreError, StoredMessage, checkpoint::Checkpointer, datadir,
    datadir::DataDirLock, message_id, wire_len,
};
use crate::config::{Retention, SyncMode};

mod approvals;
mod operator;
mod postings;
mod savepoint;
mod search;

pub(crate) use search::{INDEX_FILE, SearchIndex};
mod tasks;

/// File name of the database inside the data directory.
pub(crate) const DB_FILE: &str = "relay.db";
/// What the WAL file is trimmed back to when the writer starts it over
/// (`journal_size_limit`). Above the most it holds at a rewind under load
/// (`checkpoint::RESET_FRAMES`, the writer asked at once past twice that: 128 MiB, plus one
/// pass of writes), so a rewind under load normally does not truncate it: a truncation cost
/// the writer ~13 ms on every rewind (`ftruncate` freeing the blocks), every message queued
/// behind it waiting, and the writes after it extended the file again (docs/STORAGE.md, "WAL
/// checkpoints"). The price is disk, not memory: an idle hub keeps the file at the size it
/// reached (at most this, once rewound) until it closes, which removes it.
const WAL_KEEP_BYTES: i64 = 160 << 20;
/// 2: `messages.reply_to` and `messages.thread`; 3: `postings` in place of the indexes
/// `messages_by_recipient` and `messages_by_sender` (docs/STORAGE.md, "Upgrades"). An older
/// store is upgraded in place at open.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    seq          INTEGER PRIMARY KEY,
    ts           INTEGER NOT NULL,
    sender       TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    content      TEXT NOT NULL,
    delivered_at INTEGER,
    read_at      INTEGER,
    ckey         TEXT,
    reply_to     INTEGER,
    thread       INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_key ON messages(sender, ckey) WHERE ckey IS NOT NULL;
CREATE TABLE IF NOT EXISTS reads (
    identity TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    PRIMARY KEY (identity, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reads_by_seq ON reads(seq);
CREATE TABLE IF NOT EXISTS owners (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    created     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    id           TEXT PRIMARY KEY,
    first_seq    INTEGER NOT NULL,
    meta         TEXT NOT NULL DEFAULT '{}',
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    connected_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_by_seen ON sessions(last_seen, id);
";

/// Rows a size-eviction slice looks at, in multiples of its delete budget: bounds the
/// work of one slice when most of the store is unread.
const EVICT_SCAN_SLICES: usize = 4;

/// The SQLite backend.
pub(crate) struct SqliteBackend {
    conn: Connection,
    path: PathBuf,
    sync: SyncMode,
    /// Identity of the file we opened, to notice it being deleted or replaced.
    file_id: Option<(u64, u64)>,
    epoch: String,
    /// Next sequence number to give out (never reused, even after pruning).
    next_seq: u64,
    /// Sum of content bytes currently stored (kept in `meta.total_bytes`).
    total_bytes: u64,
    /// Checkpoints the WAL on its own thread (see [`super::checkpoint`]).
    checkpointer: Option<Checkpointer>,
    /// Where the next size-eviction slice starts looking (see `prune`).
    evict_from: u64,
    /// The data directory's lock, when this store is a hub's (see [`Self::open_exclusive`]).
    lock: Option<DataDirLock>,
    /// What `PRAGMA quick_check` said at open; a damaged store refuses writes.
    integrity: Integrity,
    /// Rows in `sessions`, counted once at open and kept up to date, so bounding the table
    /// (`trim_sessions`, at every disconnect) costs no table scan.
    session_rows: u64,
    /// Who sent and was sent what: the newest in memory, the rest in `postings`.
    postings: Postings,
    /// A deferred transaction was opened (`defer_commits`) and not yet settled: if the
    /// connection is back in autocommit before `settle`, SQLite rolled it back (an error
    /// such as a full disk mid-way), and what it held is lost.
    deferred: bool,
}

/// Most lines of a failed integrity check kept in its report.
const CHECK_LINES: usize = 5;

/// Runs `PRAGMA quick_check` (the b-tree structure of every page, without the index
/// cross-checks of a full `integrity_check`: see `docs/STORAGE.md` for what it costs).
fn quick_check(conn: &Connection) -> Integrity {
    let lines: rusqlite::Result<Vec<String>> = conn
        .prepare(&format!("PRAGMA quick_check({CHECK_LINES})"))
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect());
    match lines {
        Ok(lines) if lines.len() == 1 && lines[0] == "ok" => Integrity::Ok,
        Ok(lines) => Integrity::Damaged(lines.join("; ")),
        Err(e) => Integrity::Damaged(e.to_string()),
    }
}

impl SqliteBackend {
    /// Opens (creating if needed) the store in `data_dir`, sharing it: what operator tools
    /// use next to a running hub (`claude-relay sessions release --local`).
    pub(crate) fn open(data_dir: &Path, sync: SyncMode) -> Result<Self, StoreError> {
        let path = data_dir.join(DB_FILE);
        datadir::prepare(data_dir, &path)?;
        let conn = Connection::open(&path)?;
        Self::init(conn, path, sync, false)
    }

    /// Opens the store for a hub: takes the data directory's lock first and holds it as long
    /// as the store is open, so a second hub on the same directory fails with
    /// [`StoreError::Locked`] instead of writing into the same file. (The search index is
    /// another file, kept by its own thread: [`SearchIndex`].)
    pub(crate) fn open_exclusive(data_dir: &Path, sync: SyncMode) -> Result<Self, StoreError> {
        let path = data_dir.join(DB_FILE);
        datadir::prepare(data_dir, &path)?;
        let lock = DataDirLock::acquire(data_dir)?;
        let mut store = Self::init(Connection::open(&path)?, path, sync, true)?;
        // Only a hub drops it: an operator tool (`open`) next to an older running hub must
        // not take that hub's index away.
        search::drop_legacy(&store.conn, store.integrity != Integrity::Ok)?;
        store.lock = Some(lock);
        Ok(store)
    }

    /// Sum of stored content bytes.
    #[cfg(test)]
    pub(crate) fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Changes how large the WAL may grow (in 4 KiB frames) before the writer finishes a
    /// checkpoint so it starts over (default [`super::checkpoint::RESET_FRAMES`]).
    #[cfg(test)]
    pub(crate) fn set_wal_reset_frames(&self, frames: i64) {
        if let Some(c) = &self.checkpointer {
            c.set_reset_frames(frames);
        }
    }

    pub(super) fn file_id(path: &Path) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }

    /// `hub`: opened by the hub that owns the store ([`Self::open_exclusive`]), which alone
    /// upgrades it to version 3 (an operator tool next to an older running hub must not drop
    /// that hub's indexes from under it).
    fn init(
        conn: Connection,
        path: PathBuf,
        sync: SyncMode,
        hub: bool,
    ) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.display().to_string(),
            reason,
        };
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| corrupt(e.to_string()))?;
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            return Err(corrupt(format!(
                "could not enable WAL (journal_mode={mode})"
            )));
        }
        conn.pragma_update(
            None,
            "synchronous",
            match sync {
                SyncMode::Normal => "NORMAL",
                SyncMode::Full => "FULL",
            },
        )?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Checkpoints happen on their own thread, not inside a commit (see `checkpoint`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)?;
        conn.set_prepared_statement_cache_capacity(64);
        // Plans are made once per statement, never from the values bound to it. Without
        // this, SQLite (built with STAT4) compiles a cached statement with a range and an
        // ORDER BY again at each use, as the cache clears its bindings: the postings
        // cursor's were ~6 % of the hub's CPU in a registration storm (docs/BENCHMARKS.md).
        // No query here has a plan that depends on a value (no ANALYZE statistics, no
        // LIKE with a bound pattern).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| corrupt(e.to_string()))?;
        conn.execute_batch(postings::SCHEMA)
            .map_err(|e| corrupt(e.to_string()))?;
        // `seq IN rarray(?)`: how a query reads the rows its postings name.
        rusqlite::vtab::array::load_module(&conn)?;
        conn.execute_batch(tasks::SCHEMA)
            .map_err(|e| corrupt(e.to_string()))?;
        conn.execute_batch(approvals::SCHEMA)
            .map_err(|e| corrupt(e.to_string()))?;
        approvals::upgrade(&conn).map_err(|e| corrupt(e.to_string()))?;
        let started = std::time::Instant::now();
        let integrity = quick_check(&conn);
        match &integrity {
            Integrity::Ok => tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "store integrity check passed"
            ),
            Integrity::Damaged(report) => {
                // Nothing more may be acknowledged into a damaged file; SQLite refuses every
                // write from here on, whichever path it comes by.
                conn.pragma_update(None, "query_only", true)?;
                tracing::error!(
                    path = %path.display(),
                    report = %report,
                    "STORE DAMAGED: the integrity check failed. The hub serves what can still \
                     be read and refuses every send. Stop the hub, copy the data directory \
                     aside, and recover (docs/STORAGE.md, \"A damaged store\")"
                );
            }
        }
        let damaged = integrity != Integrity::Ok;

        let version: Option<String> = get_meta(&conn, "schema_version")?;
        let mut older = false;
        match version.as_deref().map(str::parse::<i64>) {
            None if damaged => return Err(corrupt("damaged and without a schema version".into())),
            None => {
                conn.execute_batch(THREAD_INDEX)?;
                set_meta(&conn, "schema_version", &SCHEMA_VERSION.to_string())?;
            }
            Some(Ok(SCHEMA_VERSION)) => {}
            Some(Ok(v @ (1 | 2))) if damaged => {
                return Err(corrupt(format!(
                    "damaged and at schema version {v}, which needs an upgrade to be read"
                )));
            }
            Some(Ok(v @ (1 | 2))) => {
                if v == 1 {
                    upgrade_1_to_2(&conn).map_err(|e| corrupt(e.to_string()))?;
                }
                if hub {
                    upgrade_2_to_3(&conn).map_err(|e| corrupt(e.to_string()))?;
                } else {
                    older = true;
                }
            }
            Some(other) => {
                return Err(corrupt(format!(
                    "schema version {other:?}; this hub understands {SCHEMA_VERSION}"
                )));
            }
        }
        let epoch = match get_meta(&conn, "epoch")? {
            // The epoch goes into every message id unescaped: it must be what we made.
            Some(e)
                if !e.is_empty() && e.len() <= 32 && e.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                e
            }
            Some(e) => return Err(corrupt(format!("epoch {e:?} is not a hex id"))),
            None if damaged => return Err(corrupt("damaged and without an epoch".into())),
            None => {
                let e = format!("{:08x}", rand::random::<u32>());
                set_meta(&conn, "epoch", &e)?;
                e
            }
        };
        // A damaged store never writes, so these only need to be right for a sound one; on
        // a damaged one the pages they read may be the broken ones.
        let tolerate = |r: Result<u64, StoreError>| match r {
            Err(_) if damaged => Ok(0),
            r => r,
        };
        let max_seq = tolerate(
            conn.query_row("SELECT coalesce(max(seq), 0) FROM messages", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v as u64)
            .map_err(StoreError::from),
        )?;
        let high = tolerate(
            get_meta(&conn, "high_seq").map(|v| v.and_then(|v| v.parse().ok()).unwrap_or(0)),
        )?;
        let next_seq = high.max(max_seq) + 1;
        let total_bytes = tolerate(
            match get_meta(&conn, "total_bytes")?.and_then(|v| v.parse().ok()) {
                Some(b) => Ok(b),
                None => conn
                    .query_row(
                        "SELECT coalesce(sum(length(CAST(content AS BLOB))), 0) FROM messages",
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                    .map(|v| v as u64)
                    .map_err(StoreError::from),
            },
        )?;
        let session_rows =
            conn.query_row("SELECT count(*) FROM sessions", [], |r| r.get::<_, i64>(0))? as u64;
        let postings = if older {
            Postings::absent(
                "schema version 2, which the hub upgrades at its next start; until then \
                 this tool can only forget or release names in it",
            )
        } else {
            Postings::load(&conn, damaged)?
        };
        Ok(Self {
            session_rows,
            deferred: false,
            postings,
            conn,
            file_id: Self::file_id(&path),
            checkpointer: Some(Checkpointer::start(path.clone())),
            evict_from: 0,
            lock: None,
            integrity,
            path,
            sync,
            epoch,
            next_seq,
            total_bytes,
        })
    }

    /// Refuses a write to a store the integrity check found damaged (see [`Integrity`]).
    fn writable(&self) -> Result<(), StoreError> {
        match &self.integrity {
            Integrity::Ok => Ok(()),
            Integrity::Damaged(report) => Err(StoreError::Damaged {
                path: self.path.display().to_string(),
                report: report.clone(),
            }),
        }
    }

    /// True when the hub has a session record for `id`.
    fn session_exists(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM sessions WHERE id = ?1")?
            .exists([id])?)
    }

    fn first_seq(&self, viewer: &str) -> Result<u64, StoreError> {
        // A session that never registered has no broadcast mail (only direct).
        let v: Option<i64> = self
            .conn
            .prepare_cached("SELECT first_seq FROM sessions WHERE id = ?1")?
            .query_row([viewer], |r| r.get(0))
            .optional()?;
        Ok(v.map(|v| v as u64).unwrap_or(u64::MAX >> 1))
    }

    fn count_unread(&self, viewer: &str, from: Option<&str>) -> Result<u64, StoreError> {
        let first = self.first_seq(viewer)?;
        let direct =
            self.count_by_postings(&[(viewer, Role::To)], 1, DIRECT_UNREAD, &[&viewer, &from])?;
        let broadcast = self.count_by_postings(
            &[(BROADCAST, Role::To)],
            first.saturating_add(1),
            BROADCAST_UNREAD,
            &[&viewer, &from, &(first as i64)],
        )?;
        Ok(direct + broadcast)
    }

    /// Whether SQLite rolled the deferred transaction back on its own (an error inside it:
    /// a full disk, an I/O error while writing pages out); if so, says so and forgets it.
    fn rolled_back(&mut self) -> bool {
        if !(self.deferred && self.conn.is_autocommit()) {
            return false;
        }
        self.deferred = false;
        self.deferred_lost(&"the transaction was rolled back after an error inside it");
        true
    }

    /// The deferred writes are lost: the sessions were served, what is lost is their rows'
    /// newest state (the same words as a registration whose own write failed,
    /// dispatch/register.rs). The count of rows kept in memory is taken again.
    fn deferred_lost(&mut self, why: &dyn std::fmt::Display) {
        tracing::error!(
            "session record not written for the registrations and departures of the last \
             {} ms ({why}): they were served without it",
            super::actor::DEFER_FOR.as_millis()
        );
        if let Ok(n) = self
            .conn
            .query_row("SELECT count(*) FROM sessions", [], |r| r.get::<_, i64>(0))
        {
            self.session_rows = n as u64;
        }
    }

    /// Writes the postings tail out once it is due, in its own transaction (one more
    /// commit per [`postings::FLUSH_MESSAGES`] messages). A failure keeps the tail, to be
    /// tried again a flush's worth of messages later: nothing is lost, `messages` holds
    /// every row.
    fn flush_postings(&mut self) {
        if !self.postings.due() {
            return;
        }
        let high = self.next_seq - 1;
        let written = (|| -> Result<(), StoreError> {
            let tx = self.conn.unchecked_transaction()?;
            self.postings.write(&tx, high)?;
            tx.commit()?;
            Ok(())
        })();
        match written {
            Ok(()) => self.postings.written(),
            Err(e) => {
                self.postings.write_failed();
                tracing::warn!("postings not written yet (kept in memory): {e}");
            }
        }
    }

    /// Runs `{select} FROM messages m WHERE <seq is a candidate> AND ({cond}) {order}` over
    /// the candidates of `sources`' postings from `lo` on (ascending, or descending with
    /// `desc`), a batch at a time, handing each row to `each` until it answers false.
    /// `cond` must state who each row is for, as strictly as `sources` do (a dense batch is
    /// read as a range of rows, [`Shape::Range`]); it may not use `?1` (the candidates, in
    /// one shape or the other), and `args` are `?2`, `?3`, ….
    #[allow(clippy::too_many_arguments)]
    fn read_postings(
        &self,
        sources: &[(&str, Role)],
        lo: u64,
        desc: bool,
        select: &str,
        cond: &str,
        order: &str,
        args: &[&dyn ToSql],
        mut each: impl FnMut(&rusqlite::Row<'_>) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let sql = |shape: Shape| {
            format!(
                "{select} FROM messages m WHERE {} AND ({cond}) {order}",
                shape.filter()
            )
        };
        let mut listed = self.conn.prepare_cached(&sql(Shape::Listed))?;
        let mut range = self.conn.prepare_cached(&sql(Shape::Range))?;
        // A range reads every page of its span: on a damaged store, one holding only other
        // sessions' mail would fail a query that lookups answer.
        let ranges = self.integrity == Integrity::Ok;
        self.postings
            .batches(&self.conn, sources, lo, desc, |batch| {
                let (shape, batch) = Shape::of(batch, ranges);
                let stmt = match shape {
                    Shape::Listed => &mut listed,
                    Shape::Range => &mut range,
                };
                let mut rows = stmt.query(&*with_batch(&batch, args))?;
                while let Some(r) = rows.next()? {
                    if !each(r)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            })
    }

    /// The messages among `sources`' postings from `lo` on that match `cond`, in seq order
    /// (newest first with `desc`), handed to `take` until it answers false (`cond` and
    /// parameters as in [`Self::read_postings`]).
    fn select_by_postings(
        &self,
        sources: &[(&str, Role)],
        lo: u64,
        desc: bool,
        cond: &str,
        args: &[&dyn ToSql],
        mut take: impl FnMut(StoredMessage) -> bool,
    ) -> Result<(), StoreError> {
        let order = if desc {
            "ORDER BY seq DESC"
        } else {
            "ORDER BY seq ASC"
        };
        self.read_postings(
            sources,
            lo,
            desc,
            &format!("SELECT {MESSAGE_COLUMNS}"),
            cond,
            order,
            args,
            |r| Ok(take(row_message(r)?)),
        )
    }

    /// Counts the messages among `sources`' postings from `lo` on that match `cond`
    /// (`cond` and parameters as in [`Self::read_postings`]).
    fn count_by_postings(
        &self,
        sources: &[(&str, Role)],
        lo: u64,
        cond: &str,
        args: &[&dyn ToSql],
    ) -> Result<u64, StoreError> {
        let mut n = 0u64;
        self.read_postings(sources, lo, false, "SELECT count(*)", cond, "", args, |r| {
            n += r.get::<_, i64>(0)? as u64;
            Ok(true)
        })?;
        Ok(n)
    }
}

/// How a query reads a batch of candidate seqs.
#[derive(Clone, Copy)]
enum Shape {
    /// Each seq by itself (`seq IN rarray(?1)`): for candidates spread thin.
    Listed,
    /// Every row from the batch's first to its last seq (`?1` is that pair): for
    /// candidates that are most of the rows in their span, where a scan along the table
    /// costs less than a lookup per seq. The same rows match: a batch holds every
    /// candidate of its span, and `cond` states who each row is for.
    Range,
}

impl Shape {
    /// The filter on `seq` in this shape's SQL.
    fn filter(self) -> &'static str {
        match self {
            Shape::Listed => "seq IN rarray(?1)",
            Shape::Range => {
                "seq >= (SELECT min(value) FROM rarray(?1))
                 AND seq <= (SELECT max(value) FROM rarray(?1))"
            }
        }
    }

    /// The shape for `batch` (in ascending or descending order; a range only if `ranges`),
    /// and what `?1` is.
    fn of(batch: &Rc<Vec<Value>>, ranges: bool) -> (Shape, Rc<Vec<Value>>) {
        let seq = |v: Option<&Value>| match v {
            Some(Value::Integer(s)) => *s,
            _ => 0,
        };
        let (a, b) = (seq(batch.first()), seq(batch.last()));
        let span = a.abs_diff(b) + 1;
        // A lookup costs a few rows of a scan (measured: docs/BENCHMARKS.md, "Postings").
        if ranges && span <= RANGE_DENSITY * batch.len() as u64 {
            (
                Shape::Range,
                Rc::new(vec![Value::Integer(a), Value::Integer(b)]),
            )
        } else {
            (Shape::Listed, batch.clone())
        }
    }
}

/// A batch is read as a range when its span holds at most this many rows per candidate.
const RANGE_DENSITY: u64 = 4;

/// Direct mail `?2` has not read (from `?3` only, unless NULL): the rows of `?2`'s
/// [`Role::To`] postings that count.
const DIRECT_UNREAD: &str =
    "recipient = ?2 AND read_at IS NULL AND sender <> ?2 AND (?3 IS NULL OR sender = ?3)";
/// Broadcasts `?2` has not read (from `?3` only, unless NULL) stored after `?4`, the
/// session's first seq, among `all`'s postings.
const BROADCAST_UNREAD: &str = "recipient = 'all' AND seq > ?4 AND sender <> ?2
     AND (?3 IS NULL OR sender = ?3)
     AND NOT EXISTS (SELECT 1 FROM reads r WHERE r.identity = ?2 AND r.seq = m.seq)";

/// A query's parameters: the batch of candidate seqs first, then `args`.
fn with_batch<'a>(batch: &'a Rc<Vec<Value>>, args: &[&'a dyn ToSql]) -> Vec<&'a dyn ToSql> {
    let mut params: Vec<&dyn ToSql> = Vec::with_capacity(args.len() + 1);
    params.push(batch);
    params.extend_from_slice(args);
    params
}

/// Version 2 → 3: the postings of every stored message (written a flush at a time, as a
/// running hub would have), then the two per-message indexes they replace are dropped, in
/// one transaction.
fn upgrade_2_to_3(conn: &Connection) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    let mut postings = Postings::new();
    let mut last = 0u64;
    let mut n = 0u64;
    {
        let mut stmt = tx.prepare("SELECT seq, sender, recipient FROM messages ORDER BY seq")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            last = postings.add_row(r)?;
            n += 1;
            if postings.due() {
                postings.write(&tx, last)?;
                postings.written();
            }
        }
    }
    postings.write(&tx, last)?;
    tx.execute_batch(
        "DROP INDEX IF EXISTS messages_by_recipient;
         DROP INDEX IF EXISTS messages_by_sender;",
    )?;
    set_meta(&tx, "schema_version", "3")?;
    tx.commit()?;
    tracing::info!(
        messages = n,
        "store upgraded from schema version 2 to 3 (postings instead of two indexes)"
    );
    Ok(())
}

/// Finds a thread's messages (created with version 2, after the columns exist).
const THREAD_INDEX: &str = "CREATE INDEX IF NOT EXISTS messages_by_thread ON messages(thread, seq) WHERE thread IS NOT NULL;";

/// Version 1 → 2: the reply columns (empty for every old message: none of them answers
/// another) and their index, in one transaction; the search index (`search.db`) is built
/// by its own thread.
fn upgrade_1_to_2(conn: &Connection) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(
        "ALTER TABLE messages ADD COLUMN reply_to INTEGER;
         ALTER TABLE messages ADD COLUMN thread INTEGER;",
    )?;
    tx.execute_batch(THREAD_INDEX)?;
    set_meta(&tx, "schema_version", "2")?;
    tx.commit()?;
    tracing::info!("store upgraded from schema version 1 to 2 (replies and threads)");
    Ok(())
}

fn get_meta(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?
        .execute([key, value])?;
    Ok(())
}

/// A page (of history, of an inbox) being filled in order: at most `count` messages and
/// `max_bytes` of their wire form (but always the first one).
struct Page {
    messages: Vec<StoredMessage>,
    bytes: usize,
    count: usize,
    max_bytes: usize,
    more: bool,
}

impl Page {
    fn new(count: usize, max_bytes: usize) -> Self {
        Self {
            messages: Vec::new(),
            bytes: 0,
            count,
            max_bytes,
            more: false,
        }
    }

    /// Adds `m` if it fits; false (and `more`) once the page is full.
    fn push(&mut self, m: StoredMessage) -> bool {
        let len = wire_len(&m);
        if self.messages.len() >= self.count
            || (!self.messages.is_empty() && self.bytes + len > self.max_bytes)
        {
            self.more = true;
            return false;
        }
        self.bytes += len;
        self.messages.push(m);
        true
    }

    /// The page in seq order; read newest first (`desc`), it has no `more` after it.
    fn finish(mut self, desc: bool) -> HistoryPage {
        if desc {
            self.messages.reverse();
        }
        HistoryPage {
            messages: self.messages,
            more: self.more && !desc,
        }
    }
}

/// One row of `recent_sends`' query as what the sender sees.
fn send_state(epoch: &str, r: &rusqlite::Row<'_>) -> rusqlite::Result<SendState> {
    let seq = r.get::<_, i64>(0)? as u64;
    let ts: i64 = r.get(1)?;
    let to: String = r.get(2)?;
    let preview: String = r.get(3)?;
    let delivered_at: Option<i64> = r.get(4)?;
    let read_direct: Option<i64> = r.get(5)?;
    let read_by: Option<i64> = r.get(6)?;
    let first_read: Option<i64> = r.get(7)?;
    let read_at = read_direct.or(first_read);
    let state = if read_at.is_some() {
        "read"
    } else if delivered_at.is_some() {
        "delivered"
    } else {
        "stored"
    };
    Ok(SendState {
        id: message_id(epoch, seq),
        seq,
        to,
        state: state.into(),
        stored_at: iso(ts),
        delivered_at: delivered_at.map(iso),
        read_at: read_at.map(iso),
        read_by: read_by.map(|n| n as u32),
        preview,
    })
}

/// `(seq, Some(when))` records a first delivery; `(seq, None)` takes back a delivery that
/// was recorded at insert but did not happen (the recipient's connection refused the frame).
fn apply_delivery_fixes(tx: &Connection, fixes: &[(u64, Option<i64>)]) -> Result<(), StoreError> {
    if fixes.is_empty() {
        return Ok(());
    }
    let mut mark = tx.prepare_cached(
        "UPDATE messages SET delivered_at = ?2 WHERE seq = ?1 AND delivered_at IS NULL",
    )?;
    let mut unmark = tx.prepare_cached(
        "UPDATE messages SET delivered_at = NULL WHERE seq = ?1 AND read_at IS NULL",
    )?;
    for (seq, at) in fixes {
        match at {
            Some(at) => mark.execute(params![*seq as i64, at])?,
            None => unmark.execute([*seq as i64])?,
        };
    }
    Ok(())
}

fn row_session(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    let meta: String = r.get(1)?;
    Ok(SessionRecord {
        id: r.get(0)?,
        meta_bytes: meta.len(),
        meta: serde_json::from_str(&meta).unwrap_or_default(),
        last_seen: r.get(2)?,
        connected_at: r.get(3)?,
    })
}

/// Deletes `id`'s session row and its broadcast read marks (its ownership and the mail
/// addressed to it stay). Returns the session rows deleted (0 or 1).
fn drop_session(tx: &Connection, id: &str) -> Result<usize, StoreError> {
    tx.prepare_cached("DELETE FROM reads WHERE identity = ?1")?
        .execute([id])?;
    Ok(tx
        .prepare_cached("DELETE FROM sessions WHERE id = ?1")?
        .execute([id])?)
}

/// The columns [`row_message`] reads, in its order.
const MESSAGE_COLUMNS: &str = "seq, ts, sender, recipient, content, reply_to, thread";

fn row_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        seq: r.get::<_, i64>(0)? as u64,
        ts: r.get(1)?,
        from: r.get::<_, String>(2)?.into(),
        to: r.get::<_, String>(3)?.into(),
        content: r.get(4)?,
        reply: reply_of(r.get(5)?, r.get(6)?),
    })
}

/// A stored `(reply_to, thread)` pair as a [`Reply`](super::Reply).
fn reply_of(to: Option<i64>, thread: Option<i64>) -> Option<super::Reply> {
    let to = to? as u64;
    Some(super::Reply {
        to,
        thread: thread.map_or(to, |t| t as u64),
    })
}

impl Backend for SqliteBackend {
    fn operator(&mut self) -> Option<&mut dyn super::operator::OperatorView> {
        Some(self)
    }

    fn epoch(&self) -> &str {
        &self.epoch
    }

    fn integrity(&self) -> Integrity {
        self.integrity.clone()
    }

    fn tasks(&mut self) -> Option<&mut dyn super::tasks::TaskStore> {
        Some(self)
    }

    fn approvals(&mut self) -> Option<&mut dyn super::approvals::ApprovalStore> {
        Some(self)
    }

    fn append(
        &mut self,
        batch: &[&NewMessage],
        delivered: &[(u64, Option<i64>)],
    ) -> Result<Vec<Appended>, StoreError> {
        self.writable()?;
        let tx = self.conn.unchecked_transaction()?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut seq = self.next_seq;
        let mut bytes = 0u64;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO messages(seq, ts, sender, recipient, content, ckey, delivered_at,
                                      reply_to, thread)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for m in batch {
                if let Some(key) = &m.key {
                    let original: Option<(i64, Option<i64>, bool)> = tx
                        .prepare_cached(
                            "SELECT seq, delivered_at, recipient = ?3 AND content = ?4
                             FROM messages WHERE sender = ?1 AND ckey = ?2",
                        )?
                        .query_row(params![&*m.from, key, &*m.to, m.content], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })
                        .optional()?;
                    if let Some((s, d, same)) = original {
                        outcomes.push(if same {
                            Appended::Duplicate {
                                seq: s as u64,
                                delivered: d.is_some(),
                            }
                        } else {
                            Appended::KeyConflict { seq: s as u64 }
                        });
                        continue;
                    }
                }
                insert.execute(params![
                    seq as i64,
                    m.ts,
                    &*m.from,
                    &*m.to,
                    m.content,
                    m.key,
                    m.delivered_at,
                    m.reply.map(|r| r.to as i64),
                    m.reply.map(|r| r.thread as i64),
                ])?;
                outcomes.push(Appended::New(seq));
                bytes += m.content.len() as u64;
                seq += 1;
            }
            apply_delivery_fixes(&tx, delivered)?;
        }
        set_meta(&tx, "high_seq", &(seq - 1).to_string())?;
        set_meta(&tx, "total_bytes", &(self.total_bytes + bytes).to_string())?;
        tx.commit()?;
        self.next_seq = seq;
        self.total_bytes += bytes;
        for (m, outcome) in batch.iter().zip(&outcomes) {
            if let Appended::New(seq) = outcome {
                self.postings.add(*seq, &m.from, &m.to);
            }
        }
        self.flush_postings();
        Ok(outcomes)
    }

    fn verify(&mut self) -> Result<bool, StoreError> {
        if Self::file_id(&self.path) == self.file_id {
            return Ok(false);
        }
        tracing::error!(
            path = %self.path.display(),
            "store file was deleted or replaced under the running hub: starting a new store (new epoch)"
        );
        // Close the old connections (checkpointer first) before anything new exists at the
        // path: on close SQLite checkpoints into (and removes the WAL of) the file it opened.
        drop(self.checkpointer.take());
        drop(std::mem::replace(
            &mut self.conn,
            Connection::open_in_memory()?,
        ));
        if !self.path.exists() {
            for suffix in ["-wal", "-shm"] {
                let mut stale = self.path.clone().into_os_string();
                stale.push(suffix);
                let _ = std::fs::remove_file(stale);
            }
        }
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        // Our own lock must go before the new store takes it again (if the lock file was
        // not wiped with the rest, a second lock on it would conflict with ours).
        let exclusive = self.lock.take().is_some();
        *self = if exclusive {
            Self::open_exclusive(&dir, self.sync)?
        } else {
            Self::open(&dir, self.sync)?
        };
        Ok(true)
    }

    fn maintain(&mut self) {
        if self.writable().is_err() || !self.checkpointer.as_ref().is_some_and(|c| c.reset_wanted())
        {
            return;
        }
        // PASSIVE never waits; with this connection the only writer it completes. If the
        // checkpoint thread is mid-pass it does nothing, and that thread asks again after
        // its pass while the WAL is still over the limit.
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
        {
            tracing::debug!("writer checkpoint: {e}");
        }
    }

    fn mark_delivered(&mut self, delivered: &[(u64, Option<i64>)]) -> Result<(), StoreError> {
        self.writable()?;
        // A registration's backlog is marked inside the deferred transaction.
        let tx = Savepoint::begin(&self.conn)?;
        apply_delivery_fixes(&tx, delivered)?;
        tx.release()?;
        Ok(())
    }

    fn defer_commits(&mut self) {
        self.rolled_back();
        if self.writable().is_err() || !self.conn.is_autocommit() {
            return;
        }
        // IMMEDIATE: the write lock now, not at the first write. A deferred transaction
        // that only read (a refused registration) would otherwise hold an old snapshot, and
        // the first write after another process's commit (`sessions forget --local`) would
        // fail with SQLITE_BUSY_SNAPSHOT.
        match self.conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => self.deferred = true,
            Err(e) => {
                tracing::debug!("deferred transaction not opened ({e}): each write commits alone")
            }
        }
    }

    fn settle(&mut self) -> Result<(), StoreError> {
        // Rolled back already: what was written since committed alone, so the caller's own
        // write (an owner secret) is on disk; only the earlier ones are lost.
        if self.rolled_back() || !std::mem::take(&mut self.deferred) {
            return Ok(());
        }
        self.conn.execute_batch("COMMIT").map_err(|e| {
            // Never leave the transaction open for the next writer.
            let _ = self.conn.execute_batch("ROLLBACK");
            self.deferred_lost(&e);
            StoreError::from(e)
        })
    }

    fn thread_of(&mut self, viewer: &str, seq: u64) -> Result<Option<u64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT coalesce(thread, seq) FROM messages
                 WHERE seq = ?1 AND (sender = ?2 OR recipient = ?2 OR recipient = 'all')",
            )?
            .query_row(params![seq as i64, viewer], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|t| t as u64))
    }

    fn history(&mut self, viewer: &str, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        let mut page = Page::new(q.count, q.max_bytes);
        let desc = matches!(q.after, After::Latest);
        if q.thread.is_none() {
            // Everything `viewer` may see: what it sent, what it was sent, and broadcasts,
            // read through their postings from the cursor on.
            let lo = match q.after {
                After::Latest => 1,
                After::Seq(s) => s.saturating_add(1),
                // From the first message stamped after `t` on, in seq order: a clock that
                // stepped back between two messages cannot hide the later one.
                After::Time(t) => match self
                    .conn
                    .prepare_cached("SELECT seq FROM messages WHERE ts > ?1 ORDER BY seq LIMIT 1")?
                    .query_row([t], |r| r.get::<_, i64>(0))
                    .optional()?
                {
                    Some(s) => s as u64,
                    None => return Ok(page.finish(desc)),
                },
            };
            // A filter on the sender or the recipient names the only postings to read.
            let everything = [
                (viewer, Role::From),
                (viewer, Role::To),
                (BROADCAST, Role::To),
            ];
            let sources: &[(&str, Role)] = match (&q.from, &q.to) {
                (Some(from), _) => &[(from, Role::From)],
                (None, Some(to)) => &[(to, Role::To)],
                (None, None) => &everything,
            };
            self.select_by_postings(
                sources,
                lo,
                desc,
                "(sender = ?2 OR recipient = ?2 OR recipient = 'all')
                 AND (?3 IS NULL OR sender = ?3) AND (?4 IS NULL OR recipient = ?4)
                 AND (?5 = 0 OR sender <> ?2)",
                &[&viewer, &q.from, &q.to, &(q.inbound_only as i64)],
                |m| page.push(m),
            )?;
            return Ok(page.finish(desc));
        }
        // A thread is read through `messages_by_thread` (the root, then its replies), not by
        // filtering every visible message after the cursor.
        let mut sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE (sender = ?1 OR recipient = ?1 OR recipient = 'all')
               AND seq IN (SELECT ?7 UNION ALL SELECT seq FROM messages WHERE thread = ?7)
               AND (?2 IS NULL OR sender = ?2) AND (?3 IS NULL OR recipient = ?3)
               AND (?4 = 0 OR sender <> ?1)",
        );
        let cursor = match q.after {
            After::Latest => 0i64,
            After::Seq(s) => {
                sql.push_str(" AND seq > ?5");
                s as i64
            }
            After::Time(t) => {
                sql.push_str(
                    " AND seq >= coalesce((SELECT seq FROM messages WHERE ts > ?5 ORDER BY seq LIMIT 1),
                                          9223372036854775807)",
                );
                t
            }
        };
        sql.push_str(if desc {
            " ORDER BY seq DESC LIMIT ?6"
        } else {
            " ORDER BY seq ASC LIMIT ?6"
        });
        let limit = q.count as i64 + 1;
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![
            viewer,
            q.from,
            q.to,
            q.inbound_only as i64,
            cursor,
            limit,
            q.thread.map(|t| t as i64)
        ])?;
        while let Some(r) = rows.next()? {
            if !page.push(row_message(r)?) {
                break;
            }
        }
        Ok(page.finish(desc))
    }

    fn inbox(
        &mut self,
        viewer: &str,
        from: Option<&str>,
        count: usize,
        max_bytes: usize,
    ) -> Result<InboxPage, StoreError> {
        let first = self.first_seq(viewer)?;
        // The first `count` of each kind; the page is the first `count` of both.
        let mut all: Vec<StoredMessage> = Vec::with_capacity(count * 2);
        self.select_by_postings(
            &[(viewer, Role::To)],
            1,
            false,
            DIRECT_UNREAD,
            &[&viewer, &from],
            |m| {
                all.push(m);
                all.len() < count
            },
        )?;
        let direct = all.len();
        self.select_by_postings(
            &[(BROADCAST, Role::To)],
            first.saturating_add(1),
            false,
            BROADCAST_UNREAD,
            &[&viewer, &from, &(first as i64)],
            |m| {
                all.push(m);
                all.len() - direct < count
            },
        )?;
        all.sort_by_key(|m| m.seq);
        let mut page = Page::new(count, max_bytes);
        for m in all {
            if !page.push(m) {
                break;
            }
        }
        let total = self.count_unread(viewer, from)?;
        Ok(InboxPage {
            remaining: total.saturating_sub(page.messages.len() as u64),
            messages: page.messages,
        })
    }

    fn mark_read(
        &mut self,
        viewer: &str,
        seqs: &[u64],
        now: i64,
    ) -> Result<(u64, u64), StoreError> {
        self.writable()?;
        let first = self.first_seq(viewer)?;
        let tx = self.conn.unchecked_transaction()?;
        let mut marked = 0u64;
        {
            let mut get =
                tx.prepare_cached("SELECT sender, recipient FROM messages WHERE seq = ?1")?;
            let mut read_direct = tx.prepare_cached(
                "UPDATE messages SET read_at = ?2, delivered_at = coalesce(delivered_at, ?2)
                 WHERE seq = ?1 AND read_at IS NULL",
            )?;
            let mut read_bcast = tx.prepare_cached(
                "INSERT OR IGNORE INTO reads(identity, seq, at) VALUES (?1, ?2, ?3)",
            )?;
            let mut deliver = tx.prepare_cached(
                "UPDATE messages SET delivered_at = ?2 WHERE seq = ?1 AND delivered_at IS NULL",
            )?;
            for &seq in seqs {
                let row: Option<(String, String)> = get
                    .query_row([seq as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let Some((sender, recipient)) = row else {
                    continue;
                };
                if sender == viewer {
                    continue;
                }
                if recipient == viewer {
                    marked += read_direct.execute(params![seq as i64, now])? as u64;
                } else if recipient == BROADCAST && seq > first {
                    let n = read_bcast.execute(params![viewer, seq as i64, now])? as u64;
                    if n > 0 {
                        deliver.execute(params![seq as i64, now])?;
                    }
                    marked += n;
                }
            }
        }
        tx.commit()?;
        Ok((marked, self.count_unread(viewer, None)?))
    }

    fn unread_count(&mut self, viewer: &str) -> Result<u64, StoreError> {
        self.count_unread(viewer, None)
    }

    fn session_registered(&mut self, id: &str, meta: &str, now: i64) -> Result<u64, StoreError> {
        self.writable()?;
        let high = self.next_seq as i64 - 1;
        // One transaction for the reads and the write: on its own, each of the five
        // statements takes and gives back the database's locks (`fcntl` calls), which was
        // most of the locking a registration costs the store thread (docs/BENCHMARKS.md).
        // Usually that is the actor's deferred one, shared by the registrations around it
        // (`defer_commits`); a savepoint either way.
        let tx = Savepoint::begin(&self.conn)?;
        let known = self.session_exists(id)?;
        self.conn
            .prepare_cached(
                "INSERT INTO sessions(id, first_seq, meta, first_seen, last_seen, connected_at)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?4)
                 ON CONFLICT(id) DO UPDATE SET meta = excluded.meta,
                    last_seen = excluded.last_seen, connected_at = excluded.connected_at",
            )?
            .execute(params![id, high, meta, now])?;
        let unread = self.count_unread(id, None)?;
        tx.release()?;
        if !known {
            self.session_rows += 1;
        }
        Ok(unread)
    }

    fn session_left(&mut self, id: &str, now: i64) -> Result<(), StoreError> {
        self.writable()?;
        self.conn
            .prepare_cached("UPDATE sessions SET last_seen = ?2 WHERE id = ?1")?
            .execute(params![id, now])?;
        Ok(())
    }

    fn session(&mut self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT id, meta, last_seen, connected_at FROM sessions WHERE id = ?1")?
            .query_row([id], row_session)
            .optional()?)
    }

    fn sessions_by_recency(
        &mut self,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        // Both read `sessions_by_seen` backwards from the cursor: no scan, no sort.
        let rows = match after {
            None => self
                .conn
                .prepare_cached(
                    "SELECT id, meta, last_seen, connected_at FROM sessions
                     ORDER BY last_seen DESC, id DESC LIMIT ?1",
                )?
                .query_map(params![limit as i64], row_session)?
                .collect::<Result<_, _>>()?,
            Some((seen, id)) => self
                .conn
                .prepare_cached(
                    "SELECT id, meta, last_seen, connected_at FROM sessions
                     WHERE (last_seen, id) < (?1, ?2)
                     ORDER BY last_seen DESC, id DESC LIMIT ?3",
                )?
                .query_map(params![seen, id, limit as i64], row_session)?
                .collect::<Result<_, _>>()?,
        };
        Ok(rows)
    }

    fn session_count(&mut self) -> Result<u64, StoreError> {
        Ok(self.session_rows)
    }

    fn forget_session(&mut self, id: &str) -> Result<bool, StoreError> {
        self.writable()?;
        // A savepoint: a session's connection ending runs this deferred (dispatch.rs).
        let tx = Savepoint::begin(&self.conn)?;
        let owned = tx
            .prepare_cached("DELETE FROM owners WHERE id = ?1")?
            .execute([id])?;
        let rows = drop_session(&tx, id)?;
        tx.release()?;
        self.session_rows = self.session_rows.saturating_sub(rows as u64);
        Ok(rows + owned > 0)
    }

    fn forget_if_idle(&mut self, id: &str) -> Result<bool, StoreError> {
        self.writable()?;
        let mut waiting = false;
        self.select_by_postings(
            &[(id, Role::To)],
            1,
            false,
            DIRECT_UNREAD,
            &[&id, &None::<&str>],
            |_| {
                waiting = true;
                false
            },
        )?;
        if waiting {
            return Ok(false);
        }
        self.forget_session(id)
    }

    fn trim_sessions(
        &mut self,
        max: usize,
        spare: &dyn Fn(&str) -> bool,
    ) -> Result<u64, StoreError> {
        self.writable()?;
        let excess = self.session_rows.saturating_sub(max as u64);
        if excess == 0 {
            return Ok(0);
        }
        let tx = Savepoint::begin(&self.conn)?;
        let mut evicted = 0u64;
        let mut after: Option<(i64, String)> = None;
        'scan: loop {
            // From the least recently seen up, along `sessions_by_seen`.
            let (seen, last) = after.clone().unwrap_or((i64::MIN, String::new()));
            let batch: Vec<(String, i64)> = tx
                .prepare_cached(
                    "SELECT id, last_seen FROM sessions WHERE (last_seen, id) > (?1, ?2)
                     ORDER BY last_seen ASC, id ASC LIMIT 256",
                )?
                .query_map(params![seen, last], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            if batch.is_empty() {
                break;
            }
            for (id, seen) in batch {
                after = Some((seen, id.clone()));
                if spare(&id) {
                    continue;
                }
                evicted += drop_session(&tx, &id)? as u64;
                if evicted >= excess {
                    break 'scan;
                }
            }
        }
        tx.release()?;
        self.session_rows = self.session_rows.saturating_sub(evicted);
        Ok(evicted)
    }

    fn recent_sends(&mut self, sender: &str, limit: usize) -> Result<Vec<SendState>, StoreError> {
        let mut sends = Vec::new();
        if limit == 0 {
            return Ok(sends);
        }
        self.read_postings(
            &[(sender, Role::From)],
            1,
            true,
            "SELECT seq, ts, recipient, substr(content, 1, 60), delivered_at, read_at,
                    CASE WHEN recipient = 'all'
                         THEN (SELECT count(*) FROM reads r WHERE r.seq = m.seq) END,
                    CASE WHEN recipient = 'all'
                         THEN (SELECT min(at) FROM reads r WHERE r.seq = m.seq) END",
            "sender = ?2",
            "ORDER BY seq DESC",
            &[&sender],
            |r| {
                sends.push(send_state(&self.epoch, r)?);
                Ok(sends.len() < limit)
            },
        )?;
        Ok(sends)
    }

    fn owner_hash(&mut self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT secret_hash FROM owners WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?)
    }

    fn set_owner(&mut self, id: &str, secret_hash: &str, now: i64) -> Result<(), StoreError> {
        self.writable()?;
        self.conn
            .prepare_cached(
                "INSERT INTO owners(id, secret_hash, created) VALUES (?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET secret_hash = excluded.secret_hash,
                    created = excluded.created",
            )?
            .execute(params![id, secret_hash, now])?;
        Ok(())
    }

    fn release_owner(&mut self, id: &str) -> Result<bool, StoreError> {
        self.writable()?;
        Ok(self
            .conn
            .prepare_cached("DELETE FROM owners WHERE id = ?1")?
            .execute([id])?
            > 0)
    }

    fn unread_senders(&mut self, viewer: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let page = self.inbox(viewer, None, 100, usize::MAX)?;
        let mut senders: Vec<String> = Vec::new();
        for m in page.messages {
            if senders.len() >= limit {
                break;
            }
            if !senders.iter().any(|s| **s == *m.from) {
                senders.push(m.from.to_string());
            }
        }
        Ok(senders)
    }

    fn prune(
        &mut self,
        policy: &Retention,
        now: i64,
        budget: usize,
    ) -> Result<PruneReport, StoreError> {
        self.writable()?;
        let cutoff = now - policy.max_age.as_millis() as i64;
        let tx = self.conn.unchecked_transaction()?;
        let mut report = PruneReport::default();
        let mut freed = 0u64;
        {
            // Only the oldest `budget` rows are looked at, in seq order, and expiry stops at
            // the first one that is not old enough: a pass with nothing to expire costs a
            // slice, not a scan of the whole table, and a message stamped while the wall
            // clock was behind (a small `ts` after a larger one) is not expired ahead of the
            // mail stored before it (see `crate::clock`).
            let mut expire = tx.prepare_cached(
                "WITH oldest AS (SELECT seq, ts FROM messages ORDER BY seq LIMIT ?2)
                 DELETE FROM messages WHERE seq IN
                   (SELECT seq FROM oldest WHERE seq < coalesce(
                      (SELECT min(seq) FROM oldest WHERE ts >= ?1), 9223372036854775807))
                 RETURNING length(CAST(content AS BLOB))",
            )?;
            for len in expire.query_map(params![cutoff, budget as i64], |r| r.get::<_, i64>(0))? {
                freed += len? as u64;
                report.expired += 1;
            }
        }
        let left = budget.saturating_sub(report.expired as usize);
        if self.total_bytes.saturating_sub(freed) > policy.max_bytes && left > 0 {
            // Oldest read mail goes first: direct mail its recipient read, and broadcasts
            // every session they were for has read. Unread mail stays until the age limit.
            // Each slice looks at the next EVICT_SCAN_SLICES × budget rows after where the
            // last one stopped, so a store full of unread mail costs bounded slices.
            let scan = (left * EVICT_SCAN_SLICES) as i64;
            let mut evict = tx.prepare_cached(
                "SELECT m.seq, length(CAST(m.content AS BLOB)),
                        (m.recipient <> 'all' AND m.read_at IS NOT NULL)
                        OR (m.recipient = 'all' AND NOT EXISTS (
                              SELECT 1 FROM sessions s
                              WHERE s.first_seq < m.seq AND s.id <> m.sender
                                AND NOT EXISTS (SELECT 1 FROM reads r
                                                WHERE r.identity = s.id AND r.seq = m.seq)))
                 FROM messages m WHERE m.seq > ?1 ORDER BY m.seq LIMIT ?2",
            )?;
            let mut del = tx.prepare_cached("DELETE FROM messages WHERE seq = ?1")?;
            let rows: Vec<(i64, i64, bool)> = evict
                .query_map(params![self.evict_from as i64, scan], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<Result<_, _>>()?;
            let wrapped = (rows.len() as i64) < scan;
            self.evict_from = if wrapped {
                0
            } else {
                rows.last().map_or(0, |r| r.0 as u64)
            };
            for (seq, len, evictable) in rows {
                if self.total_bytes.saturating_sub(freed) <= policy.max_bytes
                    || report.evicted as usize >= left
                {
                    self.evict_from = (seq as u64).saturating_sub(1);
                    break;
                }
                if evictable {
                    del.execute([seq])?;
                    freed += len as u64;
                    report.evicted += 1;
                }
            }
            // Still over the cap and more of the store to look at: another slice.
            report.more = !wrapped && self.total_bytes.saturating_sub(freed) > policy.max_bytes;
        }
        if report.expired + report.evicted > 0 {
            // Everything below the oldest message left (or, with none left, below the next
            // seq: every seq given out) goes from the read marks and the postings.
            let min_live: i64 = tx.query_row(
                "SELECT coalesce(min(seq), ?1) FROM messages",
                [self.next_seq as i64],
                |r| r.get(0),
            )?;
            tx.execute("DELETE FROM reads WHERE seq < ?1", [min_live])?;
            self.postings.sweep(&tx, min_live as u64)?;
            // Counts every deletion, so the search index's thread sweeps only after some.
            tx.execute(
                "INSERT INTO meta(key, value) VALUES ('deletions', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + ?1",
                [(report.expired + report.evicted) as i64],
            )?;
        }
        let total = self.total_bytes.saturating_sub(freed);
        set_meta(&tx, "total_bytes", &total.to_string())?;
        tx.commit()?;
        self.total_bytes = total;
        report.more |= report.expired + report.evicted >= budget as u64;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    /// A message to store (also used by the search index's tests).
    pub(super) fn msg(from: &str, to: &str, content: &str, ts: i64) -> NewMessage {
        NewMessage {
            from: Arc::from(from),
            to: Arc::from(to),
            content: content.into(),
            ts,
            key: None,
            delivered_at: None,
            reply: None,
        }
    }

    fn seqs(v: Vec<Appended>) -> Vec<u64> {
        v.into_iter().map(Appended::seq).collect()
    }

    fn open(dir: &Path) -> SqliteBackend {
        SqliteBackend::open_exclusive(dir, SyncMode::Normal).unwrap()
    }

    #[test]
    fn a_deferred_transaction_that_only_read_still_writes_after_another_process_commits() {
        // A refused registration reads the owner and writes nothing; `sessions forget
        // --local` may then commit from another process. The next registration in the same
        // deferred transaction must still write (a read snapshot held from the BEGIN would
        // fail it with SQLITE_BUSY_SNAPSHOT; the write lock taken at BEGIN keeps the other
        // process waiting instead).
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        b.session_registered("A", "{}", 0).unwrap();
        b.defer_commits();
        b.owner_hash("A").unwrap();
        let other = Connection::open(dir.path().join(DB_FILE)).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        let outside = other.execute("DELETE FROM sessions WHERE id = 'A'", []);
        b.session_registered("B", "{}", 1).unwrap();
        b.settle().unwrap();
        assert!(
            outside.is_err(),
            "the other process waits for the deferred commit"
        );
        assert_eq!(b.session_count().unwrap(), 2);
    }

    #[test]
    fn a_deferred_transaction_sqlite_rolled_back_is_noticed_and_the_rows_counted_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        b.defer_commits();
        b.session_registered("A", "{}", 0).unwrap();
        assert_eq!(b.session_count().unwrap(), 1);
        // What SQLite does on a full disk or an I/O error while writing pages out; then a
        // write that commits alone (an owner secret after the rollback).
        b.conn.execute_batch("ROLLBACK").unwrap();
        b.set_owner("A", "hash", 0).unwrap();
        b.settle().expect("the write after the rollback is on disk");
        assert_eq!(b.session_count().unwrap(), 0, "counted again");
        assert!(b.owner_hash("A").unwrap().is_some());
        // Noticed as well when the next deferred call comes first.
        b.defer_commits();
        b.session_registered("B", "{}", 0).unwrap();
        b.conn.execute_batch("ROLLBACK").unwrap();
        b.defer_commits();
        b.session_registered("C", "{}", 0).unwrap();
        b.settle().unwrap();
        assert_eq!(
            b.session_count().unwrap(),
            1,
            "B's row is gone and not counted"
        );
    }

    #[test]
    fn the_wal_starts_over_under_sustained_writes() {
        // Without the writer finishing checkpoints, a background checkpoint never catches
        // up with a writer that never stops for long, and the WAL grows by everything
        // written (about three times the content here).
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        b.set_wal_reset_frames(64); // 256 KiB
        let wal = dir.path().join(format!("{DB_FILE}-wal"));
        let body = "x".repeat(2048);
        let (mut written, mut largest) = (0u64, 0u64);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while written < 24 << 20 && std::time::Instant::now() < deadline {
            let batch: Vec<NewMessage> = (0..20).map(|i| msg("A", "B", &body, i)).collect();
            b.append(&batch.iter().collect::<Vec<_>>(), &[]).unwrap();
            b.maintain();
            // A writer that is busy but not flat out (as a hub under load is), so the
            // bound below is about the mechanism, not about this machine's disk speed.
            std::thread::sleep(Duration::from_millis(1));
            written += 20 * 2048;
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        assert!(written >= 24 << 20, "wrote only {written} bytes in 60 s");
        eprintln!("largest WAL {largest} bytes for {written} written");
        assert!(
            largest < 16 << 20,
            "the WAL grew to {largest} bytes while {written} were written"
        );
    }

    #[test]
    fn sequence_and_epoch_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let epoch = b.epoch().to_string();
        let a = msg("A", "B", "one", 1);
        let c = msg("A", "B", "two", 2);
        assert_eq!(seqs(b.append(&[&a, &c], &[]).unwrap()), vec![1, 2]);
        drop(b);
        let mut b = open(dir.path());
        assert_eq!(b.epoch(), epoch);
        assert_eq!(seqs(b.append(&[&a], &[]).unwrap()), vec![3]);
    }

    #[test]
    fn a_repeated_key_is_not_stored_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let mut m = msg("A", "B", "once", 1);
        m.key = Some("k1".into());
        let other = msg("C", "B", "other sender, same key", 1);
        let mut other_keyed = other.clone();
        other_keyed.key = Some("k1".into());
        assert_eq!(
            b.append(&[&m, &m], &[]).unwrap(),
            vec![
                Appended::New(1),
                Appended::Duplicate {
                    seq: 1,
                    delivered: false
                }
            ]
        );
        b.mark_delivered(&[(1, Some(2))]).unwrap();
        assert_eq!(
            b.append(&[&m], &[]).unwrap(),
            vec![Appended::Duplicate {
                seq: 1,
                delivered: true
            }]
        );
        assert_eq!(
            seqs(b.append(&[&other_keyed, &other], &[]).unwrap()),
            vec![2, 3]
        );
        assert_eq!(
            b.inbox("B", None, 10, usize::MAX).unwrap().messages.len(),
            3
        );
    }

    #[test]
    fn a_key_reused_for_another_body_or_recipient_is_refused_and_nothing_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let keyed = |to: &str, content: &str| {
            let mut m = msg("A", to, content, 1);
            m.key = Some("k1".into());
            m
        };
        let first = keyed("B", "deploy v1");
        let other_body = keyed("B", "deploy v2");
        let other_recipient = keyed("C", "deploy v1");
        assert_eq!(
            b.append(&[&first, &other_body, &other_recipient, &first], &[])
                .unwrap(),
            vec![
                Appended::New(1),
                Appended::KeyConflict { seq: 1 },
                Appended::KeyConflict { seq: 1 },
                Appended::Duplicate {
                    seq: 1,
                    delivered: false
                },
            ]
        );
        let stored = b.inbox("B", None, 10, usize::MAX).unwrap().messages;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].content, "deploy v1");
        assert!(
            b.inbox("C", None, 10, usize::MAX)
                .unwrap()
                .messages
                .is_empty()
        );
        assert_eq!(
            seqs(b.append(&[&msg("A", "B", "next", 2)], &[]).unwrap()),
            vec![2]
        );
    }

    /// Overwrites the page header of the database page that holds `marker` (a table leaf).
    fn corrupt_page_holding(db: &Path, marker: &str) {
        let mut bytes = std::fs::read(db).unwrap();
        let at = bytes
            .windows(marker.len())
            .position(|w| w == marker.as_bytes())
            .expect("marker in the database file");
        let page = at / 4096;
        assert!(page > 0, "the marker is on the schema page");
        bytes[page * 4096..page * 4096 + 12].fill(0xff);
        std::fs::write(db, bytes).unwrap();
    }

    #[test]
    fn a_damaged_page_is_found_at_open_and_the_store_refuses_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        assert_eq!(b.integrity(), Integrity::Ok);
        let body = "z".repeat(200);
        let ms: Vec<NewMessage> = (0..300)
            .map(|i| msg("A", "B", &format!("MARK-{i:04}-{body}"), i))
            .collect();
        b.append(&ms.iter().collect::<Vec<_>>(), &[]).unwrap();
        b.set_owner("A", "h", 1).unwrap();
        let epoch = b.epoch().to_string();
        drop(b);
        corrupt_page_holding(&dir.path().join(DB_FILE), "MARK-0100-");

        let mut b = open(dir.path());
        let Integrity::Damaged(report) = b.integrity() else {
            panic!("the damaged page went unnoticed");
        };
        assert!(!report.is_empty());
        assert_eq!(b.epoch(), epoch, "the store is the same one, not a new one");
        let refused = |r: Result<(), StoreError>| match r {
            Err(StoreError::Damaged { report, .. }) => assert!(!report.is_empty()),
            other => panic!("a write to a damaged store: {other:?}"),
        };
        refused(b.append(&[&msg("A", "B", "more", 400)], &[]).map(drop));
        refused(b.session_registered("C", "{}", 400).map(drop));
        refused(b.set_owner("C", "h", 400));
        refused(b.mark_read("B", &[1], 400).map(drop));
        // The health probe's write too, so `/healthz` cannot call the store writable.
        refused(b.operator().expect("operator views").probe_write(400));
        // What is intact still reads.
        assert_eq!(b.owner_hash("A").unwrap().as_deref(), Some("h"));
        let e = b.append(&[&msg("A", "B", "more", 400)], &[]).unwrap_err();
        assert!(e.to_string().contains("docs/STORAGE.md"), "{e}");
    }

    #[test]
    fn a_wiped_store_is_noticed_and_reopened_with_a_new_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut b = open(&data);
        b.append(&[&msg("A", "B", "x", 1)], &[]).unwrap();
        let before = b.epoch().to_string();
        assert!(!b.verify().unwrap());
        std::fs::remove_dir_all(&data).unwrap();
        assert!(b.verify().unwrap());
        assert_ne!(b.epoch(), before);
        assert!(
            b.inbox("B", None, 10, usize::MAX)
                .unwrap()
                .messages
                .is_empty()
        );
        assert_eq!(
            seqs(b.append(&[&msg("A", "B", "y", 2)], &[]).unwrap()),
            vec![1]
        );
        assert!(!b.verify().unwrap());
    }

    #[test]
    fn a_replaced_database_next_to_its_lock_file_is_reopened_under_the_same_lock() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        b.append(&[&msg("A", "B", "x", 1)], &[]).unwrap();
        let before = b.epoch().to_string();
        for f in [DB_FILE, "relay.db-wal", "relay.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        assert!(b.verify().unwrap());
        assert_ne!(b.epoch(), before);
        assert!(matches!(
            SqliteBackend::open_exclusive(dir.path(), SyncMode::Normal),
            Err(StoreError::Locked { .. })
        ));
    }

    #[test]
    fn ownership_is_kept_as_a_hash_and_can_be_released() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        assert_eq!(b.owner_hash("CC-1").unwrap(), None);
        b.set_owner("CC-1", "h1", 1).unwrap();
        assert_eq!(b.owner_hash("CC-1").unwrap().as_deref(), Some("h1"));
        assert!(b.release_owner("CC-1").unwrap());
        assert!(!b.release_owner("CC-1").unwrap());
        assert_eq!(b.owner_hash("CC-1").unwrap(), None);
    }

    #[test]
    fn a_new_store_has_a_new_epoch() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        assert_ne!(open(d1.path()).epoch(), open(d2.path()).epoch());
    }

    #[test]
    fn inbox_is_inbound_unread_oldest_first_and_mark_read_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        b.session_registered("B", "{}", 0).unwrap();
        let ms: Vec<NewMessage> = (0..15)
            .map(|i| msg("A", "B", &format!("m{i}"), i))
            .collect();
        let refs: Vec<&NewMessage> = ms.iter().collect();
        b.append(&refs, &[]).unwrap();
        b.append(&[&msg("B", "A", "own send", 20)], &[]).unwrap();
        b.append(&[&msg("A", "C", "not for B", 21)], &[]).unwrap();

        let page = b.inbox("B", None, 10, usize::MAX).unwrap();
        assert_eq!(page.messages.len(), 10);
        assert_eq!(page.messages[0].content, "m0");
        assert_eq!(page.remaining, 5);
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        assert_eq!(b.mark_read("B", &seqs, 100).unwrap(), (10, 5));
        // Marking again changes nothing; marking someone else's mail does nothing.
        assert_eq!(b.mark_read("B", &seqs, 100).unwrap(), (0, 5));
        assert_eq!(b.mark_read("B", &[16, 17], 100).unwrap(), (0, 5));

        let page = b.inbox("B", None, 10, usize::MAX).unwrap();
        assert_eq!(page.messages.first().unwrap().content, "m10");
        assert_eq!((page.messages.len(), page.remaining), (5, 0));
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        b.mark_read("B", &seqs, 100).unwrap();
        assert!(
            b.inbox("B", None, 10, usize::MAX)
                .unwrap()
                .messages
                .is_empty()
        );
    }

    #[test]
    fn broadcasts_count_for_sessions_known_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        b.session_registered("A", "{}", 0).unwrap();
        b.session_registered("B", "{}", 0).unwrap();
        b.append(&[&msg("A", "all", "hello all", 1)], &[]).unwrap();
        b.session_registered("C", "{}", 2).unwrap();
        assert_eq!(b.unread_count("B").unwrap(), 1);
        assert_eq!(b.unread_count("A").unwrap(), 0, "own broadcast is not mail");
        assert_eq!(
            b.unread_count("C").unwrap(),
            0,
            "joined after the broadcast"
        );
        assert_eq!(b.mark_read("B", &[1], 5).unwrap(), (1, 0));
        let sends = b.recent_sends("A", 5).unwrap();
        assert_eq!(sends[0].state, "read");
        assert_eq!(sends[0].read_by, Some(1));
    }

    #[test]
    fn history_is_private_and_pages_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let ms = [
            msg("A", "B", "a->b", 1),
            msg("B", "A", "b->a", 2),
            msg("C", "D", "c->d", 3),
            msg("C", "all", "c->all", 4),
        ];
        let refs: Vec<&NewMessage> = ms.iter().collect();
        b.append(&refs, &[]).unwrap();
        let q = unfiltered;
        let texts = |p: HistoryPage| {
            p.messages
                .into_iter()
                .map(|m| m.content)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            texts(b.history("E", &q(After::Latest, 10)).unwrap()),
            ["c->all"]
        );
        assert_eq!(
            texts(b.history("A", &q(After::Latest, 10)).unwrap()),
            ["a->b", "b->a", "c->all"]
        );
        assert_eq!(
            texts(b.history("A", &q(After::Latest, 2)).unwrap()),
            ["b->a", "c->all"]
        );
        let p = b.history("A", &q(After::Seq(0), 2)).unwrap();
        assert!(p.more);
        assert_eq!(texts(p), ["a->b", "b->a"]);
        let p = b.history("A", &q(After::Seq(2), 2)).unwrap();
        assert!(!p.more);
        assert_eq!(texts(p), ["c->all"]);
        let mut inbound = q(After::Latest, 10);
        inbound.inbound_only = true;
        assert_eq!(texts(b.history("A", &inbound).unwrap()), ["b->a", "c->all"]);
        let mut filtered = q(After::Latest, 10);
        filtered.to = Some("D".into());
        assert!(
            b.history("A", &filtered).unwrap().messages.is_empty(),
            "C->D is not A's"
        );
    }

    #[test]
    fn history_after_a_time_misses_nothing_stored_after_it_when_the_clock_stepped_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        // seq order is store order; the third was stamped after the clock stepped back.
        let ms = [
            msg("A", "B", "one", 100),
            msg("A", "B", "two", 300),
            msg("A", "B", "three", 200),
            msg("A", "B", "four", 400),
        ];
        b.append(&ms.iter().collect::<Vec<_>>(), &[]).unwrap();
        let q = HistoryQuery {
            from: None,
            to: None,
            after: After::Time(250),
            inbound_only: false,
            thread: None,
            count: 10,
            max_bytes: usize::MAX,
        };
        let texts: Vec<String> = b
            .history("B", &q)
            .unwrap()
            .messages
            .into_iter()
            .map(|m| m.content)
            .collect();
        assert_eq!(texts, ["two", "three", "four"]);
    }

    #[test]
    fn pages_are_bounded_by_escaped_bytes_not_raw_content() {
        // 20 bodies of control characters: 20 × 10,000 raw bytes fit a 100 kB budget, but
        // escaped (`\u0001`) each one is 60,000 bytes of reply.
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let body = "\u{1}".repeat(10_000);
        let ms: Vec<NewMessage> = (0..20).map(|i| msg("A", "B", &body, i)).collect();
        b.append(&ms.iter().collect::<Vec<_>>(), &[]).unwrap();
        let one = super::super::json_string_len(&body);
        assert_eq!(one, 60_000);
        let inbox = b.inbox("B", None, 100, 100_000).unwrap();
        assert_eq!(
            inbox.messages.len(),
            1,
            "a second one would pass the budget"
        );
        assert_eq!(inbox.remaining, 19);
        let q = HistoryQuery {
            from: None,
            to: None,
            after: After::Seq(0),
            inbound_only: false,
            thread: None,
            count: 100,
            max_bytes: 130_000,
        };
        let page = b.history("B", &q).unwrap();
        assert_eq!(page.messages.len(), 2);
        assert!(page.more);
        // One message is always returned, however big.
        assert_eq!(b.inbox("B", None, 100, 10).unwrap().messages.len(), 1);
    }

    #[test]
    fn sessions_are_paged_by_recency_forgotten_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        for (i, id) in ["A", "B", "C", "D", "E"].iter().enumerate() {
            b.session_registered(id, "{}", 100 + i as i64).unwrap();
        }
        b.session_left("B", 500).unwrap();
        assert_eq!(b.session_count().unwrap(), 5);
        let ids = |v: Vec<SessionRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(b.sessions_by_recency(None, 10).unwrap()),
            ["B", "E", "D", "C", "A"]
        );
        assert_eq!(
            ids(b.sessions_by_recency(Some((103, "D")), 2).unwrap()),
            ["C", "A"]
        );
        // A registration again is no new row.
        b.session_registered("A", "{}", 600).unwrap();
        assert_eq!(b.session_count().unwrap(), 5);

        // Trimming to 3 forgets the least recently seen ones that are not spared: C is the
        // least recently seen but online (spared), so D and E go.
        b.set_owner("D", "hash", 1).unwrap();
        let gone = b.trim_sessions(3, &|id| id == "C").unwrap();
        assert_eq!(gone, 2);
        assert_eq!(b.session_count().unwrap(), 3);
        assert!(b.session("C").unwrap().is_some());
        assert!(b.session("D").unwrap().is_none() && b.session("E").unwrap().is_none());
        assert_eq!(
            b.owner_hash("D").unwrap().as_deref(),
            Some("hash"),
            "trimming keeps ownership"
        );
        assert_eq!(b.trim_sessions(3, &|_| false).unwrap(), 0);

        // Forgetting when idle: not while direct mail waits unread.
        b.append(&[&msg("A", "C", "for C", 700)], &[]).unwrap();
        assert!(!b.forget_if_idle("C").unwrap());
        assert!(b.forget_if_idle("B").unwrap());
        assert!(b.session("B").unwrap().is_none());
        // Forgetting takes the ownership too; an unknown name is nothing to forget.
        assert!(b.forget_session("D").unwrap(), "D still had an owner");
        assert_eq!(b.owner_hash("D").unwrap(), None);
        assert!(!b.forget_session("D").unwrap());
        assert_eq!(b.session_count().unwrap(), 2);
        drop(b);
        assert_eq!(
            open(dir.path()).session_count().unwrap(),
            2,
            "counted at open"
        );
    }

    #[test]
    fn a_delivery_recorded_at_insert_can_be_taken_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let mut m = msg("A", "B", "x", 1);
        m.delivered_at = Some(1);
        b.append(&[&m], &[]).unwrap();
        assert_eq!(b.recent_sends("A", 1).unwrap()[0].state, "delivered");
        b.mark_delivered(&[(1, None)]).unwrap();
        assert_eq!(b.recent_sends("A", 1).unwrap()[0].state, "stored");
    }

    #[test]
    fn delivery_state_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        b.append(&[&msg("A", "B", "x", 1)], &[]).unwrap();
        assert_eq!(b.recent_sends("A", 1).unwrap()[0].state, "stored");
        b.mark_delivered(&[(1, Some(5))]).unwrap();
        assert_eq!(b.recent_sends("A", 1).unwrap()[0].state, "delivered");
        b.mark_read("B", &[1], 9).unwrap();
        let s = &b.recent_sends("A", 1).unwrap()[0];
        assert_eq!(s.state, "read");
        assert_eq!(s.delivered_at.as_deref(), Some(iso(5).as_str()));
    }

    #[test]
    fn retention_drops_old_mail_and_keeps_unread_under_size_pressure() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let day = 86_400_000;
        let now = 100 * day;
        let old = msg("A", "B", "old", now - 40 * day);
        let read = msg("A", "B", &"r".repeat(100), now - day);
        let unread = msg("A", "B", &"u".repeat(100), now - day);
        b.append(&[&old, &read, &unread], &[]).unwrap();
        b.mark_read("B", &[2], now).unwrap();
        let policy = Retention {
            max_age: Duration::from_secs(30 * 86_400),
            max_bytes: 150,
            every: Duration::from_secs(60),
        };
        let r = b.prune(&policy, now, 100).unwrap();
        assert_eq!((r.expired, r.evicted), (1, 1));
        let left = b.inbox("B", None, 10, usize::MAX).unwrap();
        assert_eq!(left.messages.len(), 1);
        assert_eq!(b.total_bytes(), 100);
        // Sequence numbers are never reused after pruning.
        assert_eq!(seqs(b.append(&[&old], &[]).unwrap()), vec![4]);
    }

    #[test]
    fn retention_keeps_broadcasts_someone_has_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let day = 86_400_000;
        let now = 100 * day;
        b.session_registered("B", "{}", now - 2 * day).unwrap();
        b.session_registered("C", "{}", now - 2 * day).unwrap();
        let body = "b".repeat(100);
        let (one, two) = (
            msg("A", "all", &body, now - day),
            msg("A", "all", &body, now - day),
        );
        b.append(&[&one, &two], &[]).unwrap();
        // Both B and C read the first; only B read the second.
        b.mark_read("B", &[1, 2], now).unwrap();
        b.mark_read("C", &[1], now).unwrap();
        let policy = Retention {
            max_age: Duration::from_secs(30 * 86_400),
            max_bytes: 0,
            every: Duration::from_secs(60),
        };
        let mut evicted = 0;
        loop {
            let r = b.prune(&policy, now, 100).unwrap();
            evicted += r.evicted;
            if !r.more {
                break;
            }
        }
        assert_eq!(evicted, 1);
        let left = b.inbox("C", None, 10, usize::MAX).unwrap();
        assert_eq!(
            left.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![2]
        );
        assert_eq!(b.total_bytes(), 100);
    }

    #[test]
    fn eviction_slices_reach_read_mail_behind_a_wall_of_unread() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let now = 100 * 86_400_000;
        let unread: Vec<NewMessage> = (0..50).map(|_| msg("A", "B", "u", now)).collect();
        b.append(&unread.iter().collect::<Vec<_>>(), &[]).unwrap();
        let read = msg("A", "B", "r", now);
        b.append(&[&read], &[]).unwrap();
        b.mark_read("B", &[51], now).unwrap();
        let policy = Retention {
            max_age: Duration::from_secs(30 * 86_400),
            max_bytes: 50,
            every: Duration::from_secs(60),
        };
        // Slices of budget 2 look at 8 rows each: the read message is found a few slices in.
        let (mut evicted, mut slices) = (0, 0);
        loop {
            let r = b.prune(&policy, now, 2).unwrap();
            evicted += r.evicted;
            slices += 1;
            if !r.more {
                break;
            }
            assert!(slices < 100, "eviction never ends");
        }
        assert_eq!(evicted, 1);
        assert_eq!(b.total_bytes(), 50);
        assert_eq!(
            b.inbox("B", None, 100, usize::MAX).unwrap().messages.len(),
            50
        );
    }

    /// Appends `n` messages in group commits of 512, cycling through who writes to whom.
    fn traffic(b: &mut SqliteBackend, n: usize, start_ts: i64) {
        let pairs = [("A", "B"), ("B", "A"), ("C", "D"), ("C", "all"), ("D", "B")];
        let ms: Vec<NewMessage> = (0..n)
            .map(|i| {
                let (f, t) = pairs[i % pairs.len()];
                msg(f, t, &format!("m{i}"), start_ts + i as i64)
            })
            .collect();
        for chunk in ms.chunks(512) {
            let refs: Vec<&NewMessage> = chunk.iter().collect();
            b.append(&refs, &[]).unwrap();
        }
    }

    /// History without filters: `count` messages after `after`, no byte cap.
    fn unfiltered(after: After, count: usize) -> HistoryQuery {
        HistoryQuery {
            from: None,
            to: None,
            after,
            inbound_only: false,
            thread: None,
            count,
            max_bytes: usize::MAX,
        }
    }

    /// A store where B registered, then `n` messages of [`traffic`].
    fn busy_store(dir: &Path, n: usize, start_ts: i64) -> SqliteBackend {
        let mut b = open(dir);
        b.session_registered("B", "{}", 0).unwrap();
        traffic(&mut b, n, start_ts);
        b
    }

    /// What `viewer` may see after `after`, straight from `messages` (no postings).
    fn visible(b: &SqliteBackend, viewer: &str, after: u64) -> Vec<u64> {
        b.conn
            .prepare(
                "SELECT seq FROM messages WHERE seq > ?2
                 AND (sender = ?1 OR recipient = ?1 OR recipient = 'all') ORDER BY seq",
            )
            .unwrap()
            .query_map(params![viewer, after as i64], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(|s| s.unwrap() as u64)
            .collect()
    }

    /// Checks what the queries that read postings answer against `messages` itself.
    fn queries_agree_with_the_messages_table(b: &mut SqliteBackend) {
        let q = unfiltered;
        let page_seqs = |p: HistoryPage| p.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
        for viewer in ["A", "B", "C", "D", "E"] {
            let all = visible(b, viewer, 0);
            let latest = page_seqs(b.history(viewer, &q(After::Latest, 7)).unwrap());
            assert_eq!(
                latest,
                all[all.len().saturating_sub(7)..],
                "{viewer} latest"
            );
            // Paging forward across the flushed rows and the tail misses nothing.
            let mut cursor = 0;
            let mut paged = Vec::new();
            loop {
                let p = b.history(viewer, &q(After::Seq(cursor), 1000)).unwrap();
                let more = p.more;
                paged.extend(page_seqs(p));
                cursor = *paged.last().unwrap_or(&0);
                if !more {
                    break;
                }
            }
            assert_eq!(paged, all, "{viewer} paged");
        }
        // Filtered by sender or recipient: only what the viewer may see, newest last.
        for (viewer, from, to) in [
            ("B", Some("A"), None),
            ("A", Some("C"), None),
            ("B", None, Some("all")),
            ("A", None, Some("D")),
        ] {
            let mut filtered = q(After::Latest, 5);
            filtered.from = from.map(str::to_string);
            filtered.to = to.map(str::to_string);
            let got = page_seqs(b.history(viewer, &filtered).unwrap());
            let want: Vec<u64> = b
                .conn
                .prepare(
                    "SELECT seq FROM (SELECT seq FROM messages
                     WHERE (sender = ?1 OR recipient = ?1 OR recipient = 'all')
                       AND (?2 IS NULL OR sender = ?2) AND (?3 IS NULL OR recipient = ?3)
                     ORDER BY seq DESC LIMIT 5) ORDER BY seq",
                )
                .unwrap()
                .query_map(params![viewer, from, to], |r| r.get::<_, i64>(0))
                .unwrap()
                .map(|s| s.unwrap() as u64)
                .collect();
            assert_eq!(got, want, "{viewer} from {from:?} to {to:?}");
        }
        let direct_to_b: i64 = b
            .conn
            .query_row(
                "SELECT count(*) FROM messages WHERE recipient = 'B' AND read_at IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let broadcasts: i64 = b
            .conn
            .query_row(
                "SELECT count(*) FROM messages WHERE recipient = 'all'
                 AND seq > (SELECT first_seq FROM sessions WHERE id = 'B')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let inbox = b.inbox("B", None, 50, usize::MAX).unwrap();
        assert_eq!(
            inbox.messages.len() as u64 + inbox.remaining,
            (direct_to_b + broadcasts) as u64
        );
        assert_eq!(
            b.unread_count("B").unwrap(),
            (direct_to_b + broadcasts) as u64
        );
        let oldest: i64 = b
            .conn
            .query_row(
                "SELECT min(seq) FROM messages WHERE recipient = 'B' AND read_at IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(inbox.messages[0].seq, oldest as u64);
        let sent_by_c: Vec<u64> = b
            .recent_sends("C", 3)
            .unwrap()
            .iter()
            .map(|s| s.seq)
            .collect();
        let newest_c: Vec<u64> = b
            .conn
            .prepare("SELECT seq FROM messages WHERE sender = 'C' ORDER BY seq DESC LIMIT 3")
            .unwrap()
            .query_map([], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(|s| s.unwrap() as u64)
            .collect();
        assert_eq!(sent_by_c, newest_c);
        assert!(!b.forget_if_idle("B").unwrap(), "B has unread mail");
    }

    #[test]
    fn postings_written_out_and_the_tail_read_back_at_open_answer_like_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        b.session_registered("B", "{}", 0).unwrap();
        // Two flushes' worth and a tail.
        traffic(&mut b, 2 * postings::FLUSH_MESSAGES + 700, 1);
        let rows: i64 = b
            .conn
            .query_row("SELECT count(*) FROM postings", [], |r| r.get(0))
            .unwrap();
        assert!(rows > 0, "nothing written out");
        let upto: u64 = get_meta(&b.conn, "postings_upto")
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        assert!(upto >= 2 * postings::FLUSH_MESSAGES as u64 && upto < b.next_seq - 1);
        queries_agree_with_the_messages_table(&mut b);
        drop(b);
        // The tail was never written: a new process reads it back from `messages`.
        let mut b = open(dir.path());
        queries_agree_with_the_messages_table(&mut b);
    }

    #[test]
    fn the_postings_cursors_statements_are_not_compiled_again_at_each_use() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = busy_store(dir.path(), postings::FLUSH_MESSAGES + 10, 1);
        for viewer in ["A", "B", "C", "D"] {
            b.unread_count(viewer).unwrap();
            b.recent_sends(viewer, 3).unwrap();
        }
        for sql in [postings::ROW_FROM, postings::ROW_BEFORE] {
            let stmt = b.conn.prepare_cached(sql).unwrap();
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "{sql}"
            );
        }
    }

    #[test]
    fn retention_sweeps_postings_below_the_oldest_message() {
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400_000;
        let mut b = busy_store(dir.path(), 3 * postings::FLUSH_MESSAGES, day);
        traffic(&mut b, 600, 90 * day);
        let policy = Retention {
            max_age: Duration::from_secs(30 * 86_400),
            max_bytes: u64::MAX,
            every: Duration::from_secs(60),
        };
        while b.prune(&policy, 100 * day, 4096).unwrap().more {}
        let (min, stale): (i64, i64) = b
            .conn
            .query_row(
                "SELECT (SELECT min(seq) FROM messages),
                        (SELECT count(*) FROM postings
                         WHERE last_seq < (SELECT min(seq) FROM messages))",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(min as usize, 3 * postings::FLUSH_MESSAGES + 1);
        assert_eq!(stale, 0, "postings of pruned messages were kept");
        queries_agree_with_the_messages_table(&mut b);
    }

    #[test]
    fn a_version_2_store_is_upgraded_to_postings_and_loses_its_two_indexes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = busy_store(dir.path(), postings::FLUSH_MESSAGES + 1500, 1);
            // Back to what a hub of schema version 2 left behind.
            b.conn
                .execute_batch(
                    "DROP TABLE postings;
                     DELETE FROM meta WHERE key = 'postings_upto';
                     CREATE INDEX messages_by_recipient ON messages(recipient, seq);
                     CREATE INDEX messages_by_sender ON messages(sender, seq);
                     UPDATE meta SET value = '2' WHERE key = 'schema_version';",
                )
                .unwrap();
        }
        // An operator tool next to an older running hub leaves the store as it is.
        let mut tool = SqliteBackend::open(dir.path(), SyncMode::Normal).unwrap();
        assert!(tool.forget_session("nobody").is_ok());
        let refused = tool.inbox("B", None, 10, usize::MAX).unwrap_err();
        assert!(
            refused.to_string().contains("schema version 2"),
            "{refused}"
        );
        drop(tool);
        let still: i64 = Connection::open(dir.path().join(DB_FILE))
            .unwrap()
            .query_row(
                "SELECT count(*) FROM sqlite_master
                 WHERE name IN ('messages_by_recipient', 'messages_by_sender')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(still, 2, "a tool dropped the indexes of a running hub");
        // The hub upgrades it.
        let mut b = open(dir.path());
        let (version, indexes, rows): (String, i64, i64) = b
            .conn
            .query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'schema_version'),
                        (SELECT count(*) FROM sqlite_master
                         WHERE name IN ('messages_by_recipient', 'messages_by_sender')),
                        (SELECT count(*) FROM postings)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((version.as_str(), indexes), ("3", 0));
        assert!(rows > 0);
        queries_agree_with_the_messages_table(&mut b);
        traffic(&mut b, 100, 10_000_000);
        queries_agree_with_the_messages_table(&mut b);
    }

    #[test]
    fn a_damaged_store_still_counts_and_reads_mail_around_a_page_of_someone_elses() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut b = open(dir.path());
            b.session_registered("B", "{}", 0).unwrap();
            let body = "z".repeat(200);
            // B's mail, then a block of C's to D filling pages of their own, then B's again:
            // written out as postings (past a flush), where B's run is dense.
            let mut ms: Vec<NewMessage> = (0..2000).map(|i| msg("A", "B", "b", i)).collect();
            ms.extend((0..60).map(|i| msg("C", "D", &format!("MARK-{i:04}-{body}"), 3000)));
            ms.extend((0..2500).map(|i| msg("A", "B", "b", 4000 + i)));
            for chunk in ms.chunks(512) {
                b.append(&chunk.iter().collect::<Vec<_>>(), &[]).unwrap();
            }
        }
        corrupt_page_holding(&dir.path().join(DB_FILE), "MARK-0030-");
        let mut b = open(dir.path());
        assert!(matches!(b.integrity(), Integrity::Damaged(_)));
        assert_eq!(b.unread_count("B").unwrap(), 4500);
        let page = b.inbox("B", None, 10, usize::MAX).unwrap();
        assert_eq!((page.messages.len(), page.remaining), (10, 4490));
    }

    #[test]
    fn a_damaged_version_2_store_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut b = open(dir.path());
            let body = "z".repeat(200);
            let ms: Vec<NewMessage> = (0..300)
                .map(|i| msg("A", "B", &format!("MARK-{i:04}-{body}"), i))
                .collect();
            b.append(&ms.iter().collect::<Vec<_>>(), &[]).unwrap();
            b.conn
                .execute_batch("UPDATE meta SET value = '2' WHERE key = 'schema_version';")
                .unwrap();
        }
        corrupt_page_holding(&dir.path().join(DB_FILE), "MARK-0100-");
        let err = SqliteBackend::open(dir.path(), SyncMode::Normal)
            .err()
            .expect("a damaged store that needs an upgrade must not open");
        assert!(err.to_string().contains("schema version 2"), "{err}");
    }

    /// The queries that read postings, on a store of 500,000 messages, against schema
    /// version 2's SQL and indexes on the same store in the same run (docs/BENCHMARKS.md,
    /// "Postings"). A benchmark, not a check:
    /// `cargo test --release -p hub --lib postings_against_schema_2 -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn postings_against_schema_2() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = busy_store(dir.path(), 500_000, 1);
        b.session_registered("N", "{}", 5).unwrap();
        /// Median of 5 runs of `f`, in ms.
        fn time(mut f: impl FnMut()) -> f64 {
            let mut t: Vec<f64> = (0..5)
                .map(|_| {
                    let start = std::time::Instant::now();
                    f();
                    start.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            t.sort_by(f64::total_cmp);
            t[2]
        }
        let new = [
            time(|| {
                b.count_unread("B", None).unwrap();
            }),
            time(|| drop(b.inbox("B", None, 50, usize::MAX).unwrap())),
            time(|| drop(b.history("A", &unfiltered(After::Latest, 50)).unwrap())),
            time(|| {
                drop(
                    b.history("A", &unfiltered(After::Seq(250_000), 50))
                        .unwrap(),
                )
            }),
            time(|| drop(b.recent_sends("C", 20).unwrap())),
            time(|| {
                b.count_unread("N", None).unwrap();
            }),
        ];
        b.conn
            .execute_batch(
                "CREATE INDEX messages_by_recipient ON messages(recipient, seq);
                 CREATE INDEX messages_by_sender ON messages(sender, seq);",
            )
            .unwrap();
        let c = &b.conn;
        let count = |viewer: &str| {
            let first: i64 = c
                .query_row(
                    "SELECT first_seq FROM sessions WHERE id = ?1",
                    [viewer],
                    |r| r.get(0),
                )
                .unwrap();
            let direct: i64 = c
                .prepare(
                    "SELECT count(*) FROM messages WHERE recipient = ?1 AND read_at IS NULL
                     AND sender <> ?1 AND (?2 IS NULL OR sender = ?2)",
                )
                .unwrap()
                .query_row(params![viewer, None::<&str>], |r| r.get(0))
                .unwrap();
            let bcast: i64 = c
                .prepare(
                    "SELECT count(*) FROM messages m WHERE recipient = 'all' AND seq > ?3
                     AND sender <> ?1 AND (?2 IS NULL OR sender = ?2)
                     AND NOT EXISTS (SELECT 1 FROM reads r
                                     WHERE r.identity = ?1 AND r.seq = m.seq)",
                )
                .unwrap()
                .query_row(params![viewer, None::<&str>, first], |r| r.get(0))
                .unwrap();
            direct + bcast
        };
        let rows = |sql: &str, p: &[&dyn ToSql]| {
            let mut stmt = c.prepare(sql).unwrap();
            stmt.query_map(p, |_| Ok(())).unwrap().for_each(drop);
        };
        let history = "SELECT seq, content FROM messages
             WHERE (sender = ?1 OR recipient = ?1 OR recipient = 'all') AND seq > ?2
             ORDER BY seq DESC LIMIT 51";
        let forward = "SELECT seq, content FROM messages
             WHERE (sender = ?1 OR recipient = ?1 OR recipient = 'all') AND seq > ?2
             ORDER BY seq ASC LIMIT 51";
        let old = [
            time(|| {
                count("B");
            }),
            time(|| {
                rows(
                    "SELECT seq, content FROM messages WHERE recipient = ?1
                     AND read_at IS NULL AND sender <> ?1 ORDER BY seq LIMIT 50",
                    &[&"B"],
                );
                rows(
                    "SELECT seq, content FROM messages m WHERE recipient = 'all' AND seq > 0
                     AND sender <> ?1 AND NOT EXISTS (SELECT 1 FROM reads r
                         WHERE r.identity = ?1 AND r.seq = m.seq) ORDER BY seq LIMIT 50",
                    &[&"B"],
                );
                count("B");
            }),
            time(|| rows(history, &[&"A", &0])),
            time(|| rows(forward, &[&"A", &250_000])),
            time(|| {
                rows(
                    "SELECT seq, ts, recipient, substr(content, 1, 60), delivered_at, read_at,
                        CASE WHEN recipient = 'all'
                             THEN (SELECT count(*) FROM reads r WHERE r.seq = m.seq) END,
                        CASE WHEN recipient = 'all'
                             THEN (SELECT min(at) FROM reads r WHERE r.seq = m.seq) END
                     FROM messages m WHERE sender = ?1 ORDER BY seq DESC LIMIT 20",
                    &[&"C"],
                )
            }),
            time(|| {
                count("N");
            }),
        ];
        let names = [
            "unread count, 300,000 unread",
            "inbox page of 50 (with its count)",
            "history, newest 50",
            "history, 50 after the middle",
            "recent sends, 20",
            "unread count, a new session",
        ];
        eprintln!("| query, 500,000 messages | schema 2 ms | postings ms | ratio |");
        for ((name, o), n) in names.iter().zip(old).zip(new) {
            eprintln!("| {name} | {o:.3} | {n:.3} | {:.3}× |", n / o);
        }
    }
}
