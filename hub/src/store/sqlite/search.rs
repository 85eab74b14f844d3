//! The full-text index behind `search` (docs/STORAGE.md, "Search index"): its own file, its
//! own thread.
//!
//! `search.db`, next to `relay.db`, holds a contentless FTS5 table (`content=''`: no second
//! copy of any text; `contentless_delete=1`: rows can be taken out; `detail=none`: no
//! positions, the smallest index FTS5 has — an exact phrase is ranked first with `instr` over
//! the matches instead of a phrase query) and `meta.upto`, the last seq it holds. The
//! `relay-search` thread owns the only connection that writes it; `relay.db` is attached to
//! that connection and only read. Every [`PASS_EVERY`] the thread indexes what was stored
//! since the mark, at most [`PASS_MAX`] messages in one transaction. So the store thread,
//! whose commits every ack waits for, indexes nothing: indexing in each group commit cost
//! the `direct` benchmark a third of the hub's CPU per delivery, and indexing behind the
//! commit on the store thread still held up the commits queued behind each pass
//! (docs/BENCHMARKS.md).
//!
//! A search is a job for this thread too: it first indexes everything stored before it, then
//! queries — so it sees every message acked before it was asked, and it neither waits in
//! the store thread's queue nor holds it up. The index is derived data: a `kill -9` loses at
//! most the last passes, which the next pass redoes from `relay.db`; an index made for
//! another store (another epoch: the data directory was wiped) is dropped and rebuilt, and
//! one SQLite cannot open is deleted and rebuilt. Retention deletes rows from `relay.db` only:
//! a search joins the index with `messages`, so a deleted message is never a hit, and passes
//! sweep such rows out of the index ([`SWEEP_ROWS`] at a time) after retention deleted some.
//!
//! Who may use it: only the hub's `search` handler, which has checked who is asking; every
//! query carries the asker and keeps to the rows it may see. The file is 0600 like the store.

use std::{
    path::{Path, PathBuf},
    sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{DB_FILE, SqliteBackend, reply_of};
use crate::store::{
    StoreError, datadir,
    search::{SearchHit, SearchPage, SearchQuery},
};

/// The index's file, in the data directory.
pub(crate) const INDEX_FILE: &str = "search.db";
/// How often the thread indexes what was stored since its last pass.
const PASS_EVERY: Duration = Duration::from_millis(250);
/// Most messages one pass indexes in one transaction (a search indexes all there is).
const PASS_MAX: i64 = 16_384;
/// Index rows a sweep checks against `messages` for deleted messages.
const SWEEP_ROWS: i64 = 2_000;
/// While messages keep coming, every this many passes sweeps (once a second); an idle pass
/// always does.
const SWEEP_BUSY_EVERY: u64 = 4;
/// Searches waiting for the thread (the bound on their memory): more are refused at once.
const QUEUE: usize = 64;
/// FTS5 starts merging a level's segments into one of the next level once it holds this
/// many (its default is 4; at 16, also FTS5's default `crisismerge`, a full level is merged
/// in one go). Every merge rewrites what it merges: fewer, wider merges rewrite each indexed
/// byte fewer times (`examples/sqlite_cost.rs` with the two settings below: 289 bytes
/// written per message against 566), while a query looks into more segments per level,
/// which `search_cost` measures (docs/BENCHMARKS.md, "Search").
const AUTOMERGE: i64 = 16;
/// Bytes of new terms FTS5 gathers in memory before it writes them out as a segment (the
/// default is 1 MiB). FTS5 also writes them out at every commit, so this only matters for a
/// pass whose terms pass 1 MiB (a busy hub's, or a rebuild's): fewer, larger segments to
/// merge later. It is about the most memory the pending terms take (one row can go over).
const HASHSIZE: i64 = 4 << 20;
/// WAL pages after which a pass's commit checkpoints `search.db` (SQLite's default is
/// 1,000): pages a pass rewrites each time (the FTS5 structure record, the B-trees' upper
/// pages) are copied into the file once per checkpoint, not once per pass. The WAL is cut
/// back to `journal_size_limit` after each.
const CHECKPOINT_PAGES: i64 = 4_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
    content, content='', contentless_delete=1, detail=none,
    tokenize='unicode61 remove_diacritics 2'
);
";

/// Drops what hubs before `search.db` kept in `relay.db`: the index and its trigger (the
/// index is rebuilt in `search.db` by its thread). Nothing is written to a damaged store.
pub(super) fn drop_legacy(conn: &Connection, damaged: bool) -> Result<(), StoreError> {
    let legacy = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages_fts'")?
        .exists([])?;
    if legacy && !damaged {
        conn.execute_batch(
            "DROP TRIGGER IF EXISTS messages_fts_follows; DROP TABLE messages_fts;
             DELETE FROM meta WHERE key = 'fts_upto';",
        )?;
        tracing::info!("search index moved out of relay.db (it is rebuilt in search.db)");
    }
    Ok(())
}

/// Sets the FTS5 options that are kept in the index itself ([`AUTOMERGE`], [`HASHSIZE`]), on
/// a new index and on one an older hub made. Only what differs is written, and a write that
/// fails (a full disk) is only a warning: the index works with FTS5's defaults, and it is
/// not a reason to delete it as unreadable.
fn tune(conn: &Connection) -> Result<(), StoreError> {
    for (option, want) in [("automerge", AUTOMERGE), ("hashsize", HASHSIZE)] {
        let now: Option<i64> = conn
            .prepare_cached("SELECT v FROM messages_fts_config WHERE k = ?1")?
            .query_row([option], |r| r.get(0))
            .optional()?;
        if now == Some(want) {
            continue;
        }
        if let Err(e) = conn
            .prepare_cached("INSERT INTO messages_fts(messages_fts, rank) VALUES (?1, ?2)")
            .and_then(|mut set| set.execute(params![option, want]))
        {
            tracing::warn!("search index: could not set FTS5 {option} to {want} ({e})");
        }
    }
    Ok(())
}

/// A search for the index thread.
struct Job {
    viewer: String,
    query: SearchQuery,
    reply: oneshot::Sender<Result<SearchPage, StoreError>>,
}

/// The hub's handle on the search thread. Dropping it lets the thread finish its job and
/// stop; [`SearchIndex::stop`] also waits for it.
pub(crate) struct SearchIndex {
    jobs: SyncSender<Job>,
    thread: JoinHandle<()>,
}

impl SearchIndex {
    /// Opens (or makes) `search.db` in `data_dir`, whose `relay.db` a hub holds open, and
    /// starts the thread that keeps it up to date.
    pub(crate) fn start(data_dir: &Path) -> Result<Self, StoreError> {
        let index = match Index::open(data_dir) {
            Ok(index) => index,
            Err(StoreError::Sqlite(e)) => {
                tracing::warn!("search index unreadable ({e}): deleting it to rebuild it");
                remove_files(data_dir)?;
                Index::open(data_dir)?
            }
            Err(e) => return Err(e),
        };
        let (jobs, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("relay-search".into())
            .spawn(move || index.run(rx))
            .map_err(|e| StoreError::Io {
                path: data_dir.join(INDEX_FILE).display().to_string(),
                source: e,
            })?;
        Ok(Self { jobs, thread })
    }

    /// Deletes the index of `data_dir` (a hub started with `--no-search-index`); starting
    /// with it again rebuilds it.
    pub(crate) fn remove(data_dir: &Path) -> Result<(), StoreError> {
        if data_dir.join(INDEX_FILE).exists() {
            remove_files(data_dir)?;
            tracing::info!("search index deleted (--no-search-index)");
        }
        Ok(())
    }

    /// One page of `query` over what `viewer` may see, once everything stored before it is
    /// indexed.
    pub(crate) async fn search(
        &self,
        viewer: &str,
        query: SearchQuery,
    ) -> Result<SearchPage, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            viewer: viewer.to_string(),
            query,
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => answer.await.unwrap_or(Err(StoreError::Closed)),
            Err(TrySendError::Full(_)) => Err(StoreError::SearchBusy(QUEUE)),
            Err(TrySendError::Disconnected(_)) => Err(StoreError::Closed),
        }
    }

    /// Stops the thread after its current job and waits for it (blocking).
    pub(crate) fn stop(self) {
        drop(self.jobs);
        let _ = self.thread.join();
    }
}

fn remove_files(data_dir: &Path) -> Result<(), StoreError> {
    for path in datadir::files_of(&data_dir.join(INDEX_FILE)) {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// The thread's side: the connection and where the index stands.
struct Index {
    conn: Connection,
    /// `relay.db`.
    store: PathBuf,
    /// The `relay.db` attached as `r` (device, inode), to notice it being replaced.
    attached: Option<(u64, u64)>,
    /// The store epoch the index is for.
    epoch: String,
    /// The last seq indexed.
    upto: i64,
    /// [`Index::fingerprint`] of the message at `upto` when it was indexed.
    last: Option<String>,
    /// Where the next sweep starts.
    sweep_from: i64,
    /// The store's deletion count (`meta.deletions`) the sweep under way started from, if
    /// one is under way.
    sweeping: Option<i64>,
    /// The deletion count a whole sweep of the index has caught up with: until it changes,
    /// there is nothing to sweep (an idle hub does not walk its index forever).
    swept: i64,
    /// A pass failed and said so; said again only after one succeeds.
    failing: bool,
    /// How many times the index started over (see [`Index::reset`]).
    starts: u64,
}

impl Index {
    fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(INDEX_FILE);
        datadir::prepare(data_dir, &path)?;
        let conn = Connection::open(&path)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))?;
        // Derived data: a power cut may lose the last passes (redone from relay.db), never
        // consistency.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // The WAL file is cut back to this after a checkpoint (a rebuild's big pass would
        // otherwise leave it at that size for the hub's life).
        conn.pragma_update(None, "journal_size_limit", 64 << 20)?;
        conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
        conn.execute_batch(SCHEMA)?;
        tune(&conn)?;
        let meta = |key: &str| -> Result<Option<String>, StoreError> {
            Ok(conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?)
        };
        let epoch = meta("epoch")?.unwrap_or_default();
        let upto = meta("upto")?.and_then(|v| v.parse().ok()).unwrap_or(0);
        let last = meta("last")?.filter(|v| !v.is_empty());
        // `relay.db` is attached at the first pass (a damaged one fails passes, not the hub).
        Ok(Self {
            conn,
            store: data_dir.join(DB_FILE),
            attached: None,
            epoch,
            upto,
            last,
            sweep_from: 0,
            sweeping: None,
            swept: 0,
            failing: false,
            starts: 0,
        })
    }

    fn run(mut self, jobs: Receiver<Job>) {
        let mut last_pass = Instant::now();
        let mut passes = 0u64;
        loop {
            match jobs.recv_timeout(PASS_EVERY.saturating_sub(last_pass.elapsed())) {
                Ok(job) => {
                    let page = self
                        .catch_up_all()
                        .and_then(|_| self.query(&job.viewer, &job.query));
                    if let Err(e) = &page {
                        tracing::warn!("search failed: {e}");
                    }
                    let _ = job.reply.send(page);
                }
                Err(RecvTimeoutError::Timeout) => {
                    last_pass = Instant::now();
                    passes += 1;
                    // Sweeping every pass when idle, every [`SWEEP_BUSY_EVERY`]th when not:
                    // on a hub that is never idle deleted rows are still swept out.
                    let done = self.catch_up(PASS_MAX).and_then(|n| {
                        if n == 0 || passes.is_multiple_of(SWEEP_BUSY_EVERY) {
                            self.sweep().map(drop)
                        } else {
                            Ok(())
                        }
                    });
                    match done {
                        Ok(()) => self.failing = false,
                        Err(e) if !self.failing => {
                            self.failing = true;
                            tracing::warn!(
                                "search index: a pass failed (retried every {PASS_EVERY:?}): {e}"
                            );
                        }
                        Err(_) => {}
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        tracing::debug!("search index thread stopped");
    }

    /// Attaches `relay.db` (again, if it was replaced) and starts the index over when it was
    /// made for another store.
    fn follow(&mut self) -> Result<(), StoreError> {
        let now = SqliteBackend::file_id(&self.store);
        if now.is_none() {
            // Wiped under the hub: the store thread makes a new one; wait for it.
            return Err(StoreError::Io {
                path: self.store.display().to_string(),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        if now != self.attached {
            if self.attached.is_some() {
                self.conn.execute("DETACH DATABASE r", [])?;
            }
            self.attached = None;
            self.conn.execute(
                "ATTACH DATABASE ?1 AS r",
                [self.store.to_string_lossy().as_ref()],
            )?;
            self.attached = now;
        }
        let epoch: String = self
            .conn
            .query_row("SELECT value FROM r.meta WHERE key = 'epoch'", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or_default();
        if epoch != self.epoch {
            if !self.epoch.is_empty() {
                tracing::info!(epoch = %epoch, "search index started over for a new store");
            }
            self.reset(&epoch)?;
        }
        Ok(())
    }

    /// Empties the index and makes it the index of the store of `epoch`, from seq 0.
    fn reset(&mut self, epoch: &str) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute_batch("DROP TABLE IF EXISTS messages_fts; DELETE FROM meta;")?;
        tx.execute_batch(SCHEMA)?;
        tune(&tx)?;
        tx.execute(
            "INSERT INTO meta(key, value) VALUES ('epoch', ?1), ('upto', '0')",
            [epoch],
        )?;
        tx.commit()?;
        self.epoch = epoch.to_string();
        self.upto = 0;
        self.last = None;
        self.starts += 1;
        self.sweeping = None;
        self.sweep_from = 0;
        Ok(())
    }

    /// Indexes every message stored before now, [`PASS_MAX`] per transaction (before a
    /// search), so no read of `relay.db` lasts long: a long read transaction would keep the
    /// store's WAL from starting over. "Now" is the newest message when the first pass
    /// looked (or when the index started over for another store): under a load that stores
    /// faster than this thread indexes, chasing the newest message would never end, and the
    /// search waiting for it with it.
    fn catch_up_all(&mut self) -> Result<(), StoreError> {
        self.catch_up_all_in(PASS_MAX, || {})
    }

    /// [`Self::catch_up_all`] in passes of `pass`, calling `between` after each (tests store
    /// more messages there).
    fn catch_up_all_in(&mut self, pass: i64, mut between: impl FnMut()) -> Result<(), StoreError> {
        let mut stop = None;
        loop {
            let (before, starts) = (self.upto, self.starts);
            let (_, newest) = self.catch_up_to(pass, stop)?;
            if self.starts != starts {
                stop = None;
            }
            let stop = *stop.get_or_insert(newest);
            // Progress, not rows indexed: a pass over messages retention deleted indexes
            // none and still moves the mark.
            if self.upto >= stop || (self.upto == before && self.starts == starts) {
                return Ok(());
            }
            between();
        }
    }

    /// Indexes the messages stored after the mark, at most `limit` of them in one
    /// transaction; returns how many.
    fn catch_up(&mut self, limit: i64) -> Result<i64, StoreError> {
        self.catch_up_to(limit, None).map(|(n, _)| n)
    }

    /// [`Self::catch_up`], indexing nothing past seq `until`; also returns the newest seq
    /// stored.
    fn catch_up_to(&mut self, limit: i64, until: Option<i64>) -> Result<(i64, i64), StoreError> {
        self.follow()?;
        let (last, high): (i64, i64) = self
            .conn
            .prepare_cached(
                "SELECT coalesce(max(seq), 0),
                        (SELECT CAST(value AS INTEGER) FROM r.meta WHERE key = 'high_seq')
                 FROM r.messages",
            )?
            .query_row([], |r| {
                Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0)))
            })?;
        // The message at the mark is not the one indexed there, or the store is behind the
        // mark: an older copy of the store (same epoch) was put back, and its seqs are being
        // handed out again, so the index starts over.
        let at_mark = self.fingerprint(self.upto)?;
        let moved = match (&at_mark, &self.last) {
            (Some(now), Some(then)) => now != then,
            (None, _) => high.max(last) < self.upto,
            (Some(_), None) => false,
        };
        if self.upto > 0 && moved {
            tracing::warn!(
                store = high.max(last),
                index = self.upto,
                "search index does not match the store (restored from a copy?): rebuilding it"
            );
            self.reset(&self.epoch.clone())?;
        }
        let end = last.min(self.upto + limit).min(until.unwrap_or(i64::MAX));
        if end <= self.upto {
            return Ok((0, last));
        }
        let started = Instant::now();
        let tx = self.conn.unchecked_transaction()?;
        let n = tx
            .prepare_cached(
                "INSERT INTO messages_fts(rowid, content)
                 SELECT seq, content FROM r.messages WHERE seq > ?1 AND seq <= ?2",
            )?
            .execute(params![self.upto, end])?;
        let mark = self.fingerprint(end)?;
        tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'upto'")?
            .execute([end.to_string()])?;
        tx.prepare_cached("INSERT OR REPLACE INTO meta(key, value) VALUES ('last', ?1)")?
            .execute([mark.as_deref().unwrap_or("")])?;
        tx.commit()?;
        self.upto = end;
        self.last = mark;
        if n > PASS_MAX as usize / 4 {
            tracing::debug!(
                messages = n,
                ms = started.elapsed().as_millis() as u64,
                "search index pass"
            );
        }
        Ok((n as i64, last))
    }

    /// What identifies the stored message `seq` (its time, sender and length), if it is
    /// still stored: compared at the next pass with what the index saw there.
    fn fingerprint(&self, seq: i64) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT ts || ':' || sender || ':' || length(content) FROM r.messages WHERE seq = ?1",
            )?
            .query_row([seq], |r| r.get(0))
            .optional()?)
    }

    /// Takes rows of deleted messages out of the index, [`SWEEP_ROWS`] index rows at a time;
    /// returns how many rows it looked at. A sweep walks the whole index once after the store
    /// deleted something (`meta.deletions` moved), and then rests.
    fn sweep(&mut self) -> Result<usize, StoreError> {
        let deletions: i64 = self
            .conn
            .prepare_cached("SELECT CAST(value AS INTEGER) FROM r.meta WHERE key = 'deletions'")?
            .query_row([], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        let target = match self.sweeping {
            Some(target) => target,
            None if deletions != self.swept => {
                self.sweep_from = 0;
                deletions
            }
            None => return Ok(0),
        };
        let ids: Vec<i64> = self
            .conn
            .prepare_cached(
                "SELECT id FROM messages_fts_docsize WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?
            .query_map(params![self.sweep_from, SWEEP_ROWS], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let looked = ids.len();
        match ids.last() {
            Some(&last) if ids.len() as i64 == SWEEP_ROWS => {
                self.sweep_from = last;
                self.sweeping = Some(target);
            }
            _ => {
                self.sweep_from = 0;
                self.sweeping = None;
                self.swept = target;
            }
        }
        let mut gone = Vec::new();
        {
            let mut exists = self
                .conn
                .prepare_cached("SELECT 1 FROM r.messages WHERE seq = ?1")?;
            for id in ids {
                if !exists.exists([id])? {
                    gone.push(id);
                }
            }
        }
        if gone.is_empty() {
            return Ok(looked);
        }
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM messages_fts WHERE rowid = ?1")?;
            for id in &gone {
                delete.execute([id])?;
            }
        }
        tx.commit()?;
        tracing::debug!(
            rows = gone.len(),
            "search index: deleted messages swept out"
        );
        Ok(looked)
    }

    /// One page of `q` over what `viewer` may see: its own sends, mail to it, broadcasts.
    fn query(&self, viewer: &str, q: &SearchQuery) -> Result<SearchPage, StoreError> {
        // The visibility test is in the WHERE clause, so a snippet is only ever made of a
        // message the viewer may read.
        // Ranked and paged on small rows (seq and the sort keys), then only the page's
        // messages are read whole: sorting whole messages would hold up to MAX_OFFSET of
        // them (512 KiB each) in memory for one search.
        let mut stmt = self.conn.prepare_cached(
            "SELECT m.seq, m.ts, m.sender, m.recipient, m.reply_to, m.thread, m.content
             FROM (SELECT m.seq AS seq,
                          (?2 <> '' AND instr(lower(m.content), ?2) > 0) AS exact,
                          messages_fts.rank AS rank
                   FROM messages_fts JOIN r.messages m ON m.seq = messages_fts.rowid
                   WHERE messages_fts MATCH ?1
                     AND (m.sender = ?3 OR m.recipient = ?3 OR m.recipient = 'all')
                     AND (?4 IS NULL OR m.sender = ?4)
                     AND (?5 IS NULL OR m.thread = ?5 OR m.seq = ?5)
                     AND (?6 IS NULL OR m.ts >= ?6) AND (?7 IS NULL OR m.ts < ?7)
                   ORDER BY exact DESC, rank, seq DESC
                   LIMIT ?8 OFFSET ?9) AS hit
             JOIN r.messages m ON m.seq = hit.seq
             ORDER BY hit.exact DESC, hit.rank, hit.seq DESC",
        )?;
        let rows = stmt.query_map(
            params![
                q.expr,
                q.phrase,
                viewer,
                q.from,
                q.thread.map(|t| t as i64),
                q.since,
                q.until,
                q.count as i64 + 1,
                q.offset as i64
            ],
            |r| {
                Ok(SearchHit {
                    seq: r.get::<_, i64>(0)? as u64,
                    ts: r.get(1)?,
                    from: r.get::<_, String>(2)?.into(),
                    to: r.get::<_, String>(3)?.into(),
                    reply: reply_of(r.get(4)?, r.get(5)?),
                    snippet: q.snippet(&r.get::<_, String>(6)?),
                })
            },
        )?;
        let mut hits = rows.collect::<Result<Vec<_>, _>>()?;
        let more = hits.len() > q.count;
        hits.truncate(q.count);
        Ok(SearchPage { hits, more })
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use rusqlite::Connection;

    use super::{AUTOMERGE, HASHSIZE, INDEX_FILE, Index, PASS_MAX, SearchIndex};
    use crate::{
        config::{Retention, SyncMode},
        store::{
            Backend, Reply,
            search::{SearchPage, SearchQuery},
            sqlite::{SqliteBackend, tests::msg},
        },
    };

    fn open(dir: &Path) -> SqliteBackend {
        SqliteBackend::open_exclusive(dir, SyncMode::Normal).unwrap()
    }

    fn query(text: &str) -> SearchQuery {
        SearchQuery::of(text)
    }

    fn seqs(p: SearchPage) -> Vec<u64> {
        p.hits.into_iter().map(|h| h.seq).collect()
    }

    /// Searches through the index thread, as the hub does.
    fn search(index: &SearchIndex, viewer: &str, q: SearchQuery) -> SearchPage {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(index.search(viewer, q))
            .unwrap()
    }

    fn in_index(dir: &Path, word: &str) -> i64 {
        Connection::open(dir.join(INDEX_FILE))
            .unwrap()
            .query_row(
                "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?1",
                [word],
                |r| r.get(0),
            )
            .unwrap()
    }

    #[test]
    fn search_sees_only_what_the_viewer_may_and_ranks_the_exact_phrase_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let index = SearchIndex::start(dir.path()).unwrap();
        let ms = [
            msg(
                "A",
                "B",
                "migration: auth, auth; migration? migration, auth",
                1,
            ),
            msg("C", "D", "auth migration secret between C and D", 2),
            msg(
                "A",
                "all",
                "status: auth migration done, and the rest of the work is fine",
                3,
            ),
            msg("B", "A", "unrelated words", 4),
        ];
        b.append(&ms.iter().collect::<Vec<_>>(), &[]).unwrap();
        // Stored a moment ago, not indexed by a pass yet: the search indexes it first.
        // The exact phrase (3) before a message with both words apart (1); C→D never.
        assert_eq!(seqs(search(&index, "B", query("auth migration"))), [3, 1]);
        assert_eq!(seqs(search(&index, "A", query("Auth  MIGRATION"))), [3, 1]);
        assert_eq!(seqs(search(&index, "E", query("auth migration"))), [3]);
        assert_eq!(seqs(search(&index, "C", query("secret"))), [2]);
        assert!(search(&index, "A", query("secret")).hits.is_empty());
        assert_eq!(seqs(search(&index, "A", query("migrat*"))).len(), 2);
        let hit = &search(&index, "B", query("done")).hits[0];
        assert_eq!(
            hit.snippet,
            "status: auth migration [done], and the rest of the work is fine"
        );
        // Filters and paging.
        let mut q = query("auth");
        q.from = Some("A".into());
        q.since = Some(2);
        assert_eq!(seqs(search(&index, "B", q.clone())), [3]);
        q.since = None;
        q.until = Some(3);
        assert_eq!(seqs(search(&index, "B", q)), [1]);
        let mut q = query("auth");
        q.count = 1;
        let first = search(&index, "B", q.clone());
        assert!(first.more);
        q.offset = 1;
        let second = search(&index, "B", q);
        assert!(!second.more);
        assert_ne!(seqs(first), seqs(second));
    }

    #[test]
    fn passes_index_behind_the_store_and_a_restart_goes_on_from_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let mut index = Index::open(dir.path()).unwrap();
        let many: Vec<_> = (0..PASS_MAX + 10)
            .map(|i| msg("A", "B", &format!("heron {i}"), 3))
            .collect();
        b.append(&many.iter().collect::<Vec<_>>(), &[]).unwrap();
        assert_eq!(
            in_index(dir.path(), "heron"),
            0,
            "the store indexes nothing"
        );
        // A pass takes at most PASS_MAX, the next one the rest.
        assert_eq!(index.catch_up(PASS_MAX).unwrap(), PASS_MAX);
        assert_eq!(in_index(dir.path(), "heron"), PASS_MAX);
        assert_eq!(index.catch_up(PASS_MAX).unwrap(), 10);
        assert_eq!(index.catch_up(PASS_MAX).unwrap(), 0);
        // A restart (the index's own connection gone, as after a kill) finds its mark.
        b.append(&[&msg("A", "B", "late egret", 4)], &[]).unwrap();
        drop(index);
        let mut index = Index::open(dir.path()).unwrap();
        assert_eq!(index.upto, PASS_MAX + 10);
        assert_eq!(index.epoch, b.epoch());
        assert_eq!(index.catch_up(PASS_MAX).unwrap(), 1);
        assert_eq!(in_index(dir.path(), "egret"), 1);
    }

    #[test]
    fn a_search_catches_up_to_where_the_store_stood_when_it_began() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let mut index = Index::open(dir.path()).unwrap();
        let some: Vec<_> = (0..10)
            .map(|i| msg("A", "B", &format!("ibis {i}"), 5))
            .collect();
        b.append(&some.iter().collect::<Vec<_>>(), &[]).unwrap();
        // A store that gains a message during every pass (as a hub storing faster than the
        // index indexes): chasing the newest message would never stop.
        let mut passes = 0;
        index
            .catch_up_all_in(4, || {
                passes += 1;
                assert!(passes < 10, "the catch-up kept chasing new messages");
                b.append(&[&msg("A", "B", "late ibis", 6)], &[]).unwrap();
            })
            .unwrap();
        assert_eq!(
            index.upto, 10,
            "it stops at the newest message when it began"
        );
        assert_eq!(passes, 2);
    }

    #[test]
    fn a_search_catches_up_past_a_whole_pass_of_deleted_messages() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let many: Vec<_> = (0..PASS_MAX + 10)
            .map(|i| msg("A", "B", &format!("tern {i}"), 3))
            .collect();
        b.append(&many.iter().collect::<Vec<_>>(), &[]).unwrap();
        // Retention took the first pass's worth: that pass indexes nothing, and the search
        // must still go on to the rest.
        b.conn
            .execute("DELETE FROM messages WHERE seq <= ?1", [PASS_MAX])
            .unwrap();
        let mut index = Index::open(dir.path()).unwrap();
        index.catch_up_all().unwrap();
        assert_eq!(index.upto, PASS_MAX + 10);
        assert_eq!(in_index(dir.path(), "tern"), 10);
    }

    #[test]
    fn an_older_copy_of_the_store_put_back_makes_the_index_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let copy = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        b.append(&[&msg("A", "B", "kept puffin", 1)], &[]).unwrap();
        drop(b);
        std::fs::copy(dir.path().join("relay.db"), copy.path().join("relay.db")).unwrap();
        let mut b = open(dir.path());
        b.append(&[&msg("A", "B", "lost gannet", 2)], &[]).unwrap();
        let mut index = Index::open(dir.path()).unwrap();
        index.catch_up_all().unwrap();
        drop((b, index));
        // The older copy (same epoch) goes back; seq 2 is handed out again.
        std::fs::copy(copy.path().join("relay.db"), dir.path().join("relay.db")).unwrap();
        let mut b = open(dir.path());
        b.append(&[&msg("A", "B", "new shearwater", 3)], &[])
            .unwrap();
        let index = SearchIndex::start(dir.path()).unwrap();
        assert!(search(&index, "B", query("gannet")).hits.is_empty());
        assert_eq!(seqs(search(&index, "B", query("shearwater"))), [2]);
        assert_eq!(seqs(search(&index, "B", query("puffin"))), [1]);
    }

    #[test]
    fn deleted_messages_are_never_hits_and_are_swept_out_of_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let now = 100 * 86_400_000;
        let mut b = open(dir.path());
        let mut index = Index::open(dir.path()).unwrap();
        b.append(&[&msg("A", "B", "ancient tokens", 1)], &[])
            .unwrap();
        b.append(&[&msg("A", "B", "question about tokens", now)], &[])
            .unwrap();
        let mut answer = msg("B", "A", "answer about tokens", now);
        answer.reply = Some(Reply { to: 2, thread: 2 });
        b.append(&[&answer], &[]).unwrap();
        index.catch_up_all().unwrap();
        assert_eq!(in_index(dir.path(), "ancient"), 1);
        let policy = Retention {
            max_age: Duration::from_secs(30 * 86_400),
            max_bytes: u64::MAX,
            every: Duration::from_secs(60),
        };
        assert_eq!(b.prune(&policy, now, 100).unwrap().expired, 1);
        // Still in the index, but the join with `messages` never shows it.
        assert!(index.query("A", &query("ancient")).unwrap().hits.is_empty());
        let hits = index.query("A", &query("tokens")).unwrap().hits;
        assert_eq!(hits.len(), 2);
        let answer = hits.iter().find(|h| h.seq == 3).unwrap();
        assert_eq!(answer.reply, Some(Reply { to: 2, thread: 2 }));
        // A pass sweeps it out, and the index stays whole; with nothing deleted since, the
        // next passes do not walk the index again.
        assert_eq!(index.sweep().unwrap(), 3);
        assert_eq!(in_index(dir.path(), "ancient"), 0);
        assert_eq!(index.sweep().unwrap(), 0);
        assert_eq!(in_index(dir.path(), "tokens"), 2);
        let said: String = index
            .conn
            .query_row(
                "INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1) \
                 RETURNING 'ok'",
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| e.to_string());
        assert_eq!(said, "ok");
    }

    #[test]
    fn an_index_for_another_store_or_a_broken_file_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut b = open(dir.path());
            b.append(&[&msg("A", "B", "first store walrus", 1)], &[])
                .unwrap();
            let mut index = Index::open(dir.path()).unwrap();
            index.catch_up_all().unwrap();
            assert_eq!(in_index(dir.path(), "walrus"), 1);
        }
        // The store is wiped (a new epoch); the index of the old one is not.
        for f in ["relay.db", "relay.db-wal", "relay.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        let mut b = open(dir.path());
        b.append(&[&msg("A", "B", "second store narwhal", 1)], &[])
            .unwrap();
        let index = SearchIndex::start(dir.path()).unwrap();
        assert!(search(&index, "B", query("walrus")).hits.is_empty());
        assert_eq!(seqs(search(&index, "B", query("narwhal"))), [1]);
        index.stop();
        assert_eq!(in_index(dir.path(), "walrus"), 0);
        // A file that is not a database is deleted and rebuilt, not fatal.
        for f in ["search.db-wal", "search.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        std::fs::write(dir.path().join(INDEX_FILE), vec![0x5a; 8192]).unwrap();
        let index = SearchIndex::start(dir.path()).unwrap();
        assert_eq!(seqs(search(&index, "B", query("narwhal"))), [1]);
        index.stop();
        // --no-search-index deletes it.
        SearchIndex::remove(dir.path()).unwrap();
        assert!(!dir.path().join(INDEX_FILE).exists());
    }

    #[test]
    fn a_version_1_store_is_upgraded_in_place_and_its_old_messages_are_found() {
        let dir = tempfile::tempdir().unwrap();
        {
            // What a hub of schema version 1 left behind.
            let conn = Connection::open(dir.path().join(super::DB_FILE)).unwrap();
            conn.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
                 CREATE TABLE messages (
                     seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, sender TEXT NOT NULL,
                     recipient TEXT NOT NULL, content TEXT NOT NULL, delivered_at INTEGER,
                     read_at INTEGER, ckey TEXT);
                 INSERT INTO meta VALUES ('schema_version', '1'), ('epoch', 'ab12cd34');
                 INSERT INTO messages(seq, ts, sender, recipient, content)
                     VALUES (1, 5, 'A', 'B', 'the old deploy plan'),
                            (2, 6, 'C', 'D', 'the old private plan');",
            )
            .unwrap();
        }
        let mut b = open(dir.path());
        assert_eq!(b.epoch(), "ab12cd34");
        let version: String = b
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, "3");
        let index = SearchIndex::start(dir.path()).unwrap();
        assert_eq!(seqs(search(&index, "B", query("plan"))), [1]);
        // Old messages answer nothing; a new one may answer them.
        assert_eq!(b.thread_of("A", 1).unwrap(), Some(1));
        let mut answer = msg("B", "A", "re: plan", 7);
        answer.reply = Some(Reply { to: 1, thread: 1 });
        b.append(&[&answer], &[]).unwrap();
        let mut found = seqs(search(&index, "A", query("plan")));
        found.sort_unstable();
        assert_eq!(found, [1, 3]);
    }

    #[test]
    fn a_store_indexed_in_relay_db_by_an_older_hub_loses_that_index_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = open(dir.path());
            b.conn
                .execute_batch(
                    "CREATE VIRTUAL TABLE messages_fts USING fts5(
                         content, content='messages', content_rowid='seq', detail=none);
                     CREATE TRIGGER messages_fts_follows AFTER DELETE ON messages BEGIN
                         INSERT INTO messages_fts(messages_fts, rowid, content)
                         VALUES ('delete', old.seq, old.content);
                     END;",
                )
                .unwrap();
        }
        let b = open(dir.path());
        let left: i64 = b
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name LIKE 'messages_fts%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn the_merge_options_are_set_on_a_new_index_and_on_an_older_hubs() {
        let options = |dir: &Path| -> Vec<(String, i64)> {
            Connection::open(dir.join(INDEX_FILE))
                .unwrap()
                .prepare("SELECT k, v FROM messages_fts_config WHERE k IN ('automerge', 'hashsize') ORDER BY k")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let want = vec![
            ("automerge".to_string(), AUTOMERGE),
            ("hashsize".to_string(), HASHSIZE),
        ];
        let dir = tempfile::tempdir().unwrap();
        let _store = open(dir.path());
        drop(Index::open(dir.path()).unwrap());
        assert_eq!(options(dir.path()), want);
        // An index an older hub made (FTS5's defaults) gets them at open.
        Connection::open(dir.path().join(INDEX_FILE))
            .unwrap()
            .execute_batch("DELETE FROM messages_fts_config WHERE k IN ('automerge', 'hashsize')")
            .unwrap();
        assert_eq!(options(dir.path()), vec![]);
        drop(Index::open(dir.path()).unwrap());
        assert_eq!(options(dir.path()), want);
        // And a reset (the store was wiped) keeps them.
        let mut index = Index::open(dir.path()).unwrap();
        index.reset("another epoch").unwrap();
        drop(index);
        assert_eq!(options(dir.path()), want);
    }
}
