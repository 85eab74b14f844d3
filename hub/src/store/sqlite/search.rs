//! The full-text index behind `search` (docs/STORAGE.md, "Search index").
//!
//! `messages_fts` is an FTS5 table with external content (`content='messages'`): it keeps
//! only the index, never a second copy of the text, and `snippet()` reads the text from
//! `messages`. `detail=none` keeps no positions (the smallest and cheapest index FTS5 has;
//! phrase queries are not needed: an exact phrase is ranked first with `instr` instead).
//! Messages are indexed **behind** the commit that stores them, in batches: FTS5 writes and
//! merges an index segment per transaction, so indexing each small commit's messages in it
//! cost the direct benchmark 43 % more hub CPU per delivery (docs/BENCHMARKS.md, "Search").
//! `meta.fts_upto` is the last seq in the index; the store thread catches up after a batch
//! once [`INDEX_BATCH`] messages or [`INDEX_EVERY`] have gone by ([`SqliteBackend::
//! maintain_index`]), and every search first catches up to the last stored message — so a
//! search always sees every message acked before it, and a kill -9 loses nothing: what was
//! not indexed yet is still in `messages` and is indexed by the next search. Deletions
//! (retention) follow through a trigger, only for rows already in the index. A store opened
//! without the index (`--no-search-index`) drops it; opened with it again, the index is
//! rebuilt from every stored message — which is also how a store made before search existed
//! gets its index.

use std::time::Duration;

use rusqlite::{Connection, params};

use super::{SqliteBackend, reply_of};
use crate::store::{
    StoreError,
    search::{SNIPPET_TOKENS, SearchHit, SearchPage, SearchQuery, cut_snippet},
};

/// Unindexed messages after which the store thread indexes them (bounded work per pass).
const INDEX_BATCH: u64 = 2048;
/// Time after which the store thread indexes what is waiting, however little.
const INDEX_EVERY: Duration = Duration::from_millis(250);

/// The index.
const SCHEMA: &str = "
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
    content, content='messages', content_rowid='seq', detail=none,
    tokenize='unicode61 remove_diacritics 2'
);
";

/// The trigger that keeps the index in step with deletions — only of rows it holds: FTS5's
/// `delete` of a row it never indexed would corrupt it. Made again at every open (older
/// stores have one without the `WHEN`).
const FOLLOW: &str = "
DROP TRIGGER IF EXISTS messages_fts_follows;
CREATE TRIGGER messages_fts_follows AFTER DELETE ON messages
WHEN old.seq <= (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'fts_upto') BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.seq, old.content);
END;
";

/// Makes the index match `want` (None: leave it as it is, and write nothing — a damaged
/// store) and returns the last seq it holds, or None when there is no index.
pub(super) fn prepare(conn: &Connection, want: Option<bool>) -> Result<Option<u64>, StoreError> {
    let exists = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages_fts'")?
        .exists([])?;
    let last_seq = || -> Result<u64, StoreError> {
        Ok(
            conn.query_row("SELECT coalesce(max(seq), 0) FROM messages", [], |r| {
                r.get::<_, i64>(0)
            })? as u64,
        )
    };
    // A store indexed by a hub that indexed in every commit has no mark: it is all indexed.
    let upto = || -> Result<u64, StoreError> {
        match super::get_meta(conn, "fts_upto")? {
            Some(v) => v.parse().map_err(|_| StoreError::Corrupt {
                path: conn.path().unwrap_or("relay.db").to_string(),
                reason: format!("meta fts_upto is {v:?}, not a sequence number"),
            }),
            None => last_seq(),
        }
    };
    match want {
        None if exists => Ok(Some(upto()?)),
        None => Ok(None),
        Some(true) if exists => {
            let upto = upto()?;
            let tx = conn.unchecked_transaction()?;
            super::set_meta(&tx, "fts_upto", &upto.to_string())?;
            tx.execute_batch(FOLLOW)?;
            tx.commit()?;
            Ok(Some(upto))
        }
        Some(true) => {
            let started = std::time::Instant::now();
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(SCHEMA)?;
            tx.execute(
                "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
                [],
            )?;
            let upto = last_seq()?;
            super::set_meta(&tx, "fts_upto", &upto.to_string())?;
            tx.execute_batch(FOLLOW)?;
            tx.commit()?;
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "search index built from the stored messages"
            );
            Ok(Some(upto))
        }
        Some(false) if exists => {
            conn.execute_batch(
                "DROP TRIGGER IF EXISTS messages_fts_follows; DROP TABLE messages_fts;
                 DELETE FROM meta WHERE key = 'fts_upto';",
            )?;
            tracing::info!("search index dropped (--no-search-index)");
            Ok(None)
        }
        Some(false) => Ok(None),
    }
}

/// Indexes the stored messages after `upto` (at most `limit` of them) in one transaction;
/// returns the new mark.
fn catch_up(conn: &Connection, upto: u64, limit: Option<u64>) -> Result<u64, StoreError> {
    let end: Option<i64> = match limit {
        Some(n) => conn
            .prepare_cached(
                "SELECT max(seq) FROM (SELECT seq FROM messages WHERE seq > ?1 ORDER BY seq LIMIT ?2)",
            )?
            .query_row(params![upto as i64, n as i64], |r| r.get(0))?,
        None => conn
            .prepare_cached("SELECT max(seq) FROM messages WHERE seq > ?1")?
            .query_row([upto as i64], |r| r.get(0))?,
    };
    let Some(end) = end else {
        return Ok(upto);
    };
    let tx = conn.unchecked_transaction()?;
    tx.prepare_cached(
        "INSERT INTO messages_fts(rowid, content)
         SELECT seq, content FROM messages WHERE seq > ?1 AND seq <= ?2",
    )?
    .execute(params![upto as i64, end])?;
    super::set_meta(&tx, "fts_upto", &end.to_string())?;
    tx.commit()?;
    Ok(end as u64)
}

impl SqliteBackend {
    /// After a stored batch: indexes what is waiting once there is enough of it, or it has
    /// waited long enough (see the module doc). An error is logged; the next pass or search
    /// tries again.
    pub(super) fn maintain_index(&mut self) {
        let Some(upto) = self.fts_upto else { return };
        let last = self.next_seq.saturating_sub(1);
        if last <= upto
            || (last - upto < INDEX_BATCH && self.fts_caught.elapsed() < INDEX_EVERY)
            || self.writable().is_err()
        {
            return;
        }
        match catch_up(&self.conn, upto, Some(2 * INDEX_BATCH)) {
            Ok(end) => self.fts_upto = Some(end),
            Err(e) => tracing::warn!("search index: catching up failed: {e}"),
        }
        self.fts_caught = std::time::Instant::now();
    }

    /// Indexes every stored message not indexed yet (before a search).
    fn index_all(&mut self) -> Result<(), StoreError> {
        let Some(upto) = self.fts_upto else {
            return Ok(());
        };
        if self.writable().is_err() {
            return Ok(()); // a damaged store searches what its index holds
        }
        self.fts_upto = Some(catch_up(&self.conn, upto, None)?);
        self.fts_caught = std::time::Instant::now();
        Ok(())
    }

    /// One page of `q` over what `viewer` may see: its own sends, mail to it, broadcasts.
    pub(super) fn search_page(
        &mut self,
        viewer: &str,
        q: &SearchQuery,
    ) -> Result<SearchPage, StoreError> {
        if self.fts_upto.is_none() {
            return Err(StoreError::NoSearchIndex);
        }
        self.index_all()?;
        // The visibility test is in the WHERE clause, so a snippet is only ever made of a
        // message the viewer may read.
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT m.seq, m.ts, m.sender, m.recipient, m.reply_to, m.thread,
                    snippet(messages_fts, 0, '[', ']', '…', {SNIPPET_TOKENS})
             FROM messages_fts JOIN messages m ON m.seq = messages_fts.rowid
             WHERE messages_fts MATCH ?1
               AND (m.sender = ?3 OR m.recipient = ?3 OR m.recipient = 'all')
               AND (?4 IS NULL OR m.sender = ?4)
               AND (?5 IS NULL OR m.thread = ?5 OR m.seq = ?5)
               AND (?6 IS NULL OR m.ts >= ?6) AND (?7 IS NULL OR m.ts < ?7)
             ORDER BY (?2 <> '' AND instr(lower(m.content), ?2) > 0) DESC,
                      messages_fts.rank, m.seq DESC
             LIMIT ?8 OFFSET ?9"
        ))?;
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
                    snippet: cut_snippet(r.get(6)?),
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

    use super::super::{SqliteBackend, tests::msg};
    use super::INDEX_BATCH;
    use crate::{
        config::{Retention, SyncMode},
        store::{
            Backend, NewMessage, Reply,
            search::{SearchPage, SearchQuery},
        },
    };

    fn open(dir: &Path, search: bool) -> SqliteBackend {
        SqliteBackend::open_exclusive(dir, SyncMode::Normal, search).unwrap()
    }

    fn query(text: &str) -> SearchQuery {
        let (expr, phrase) = SearchQuery::terms(text).unwrap();
        SearchQuery {
            expr,
            phrase,
            from: None,
            thread: None,
            since: None,
            until: None,
            offset: 0,
            count: 10,
        }
    }

    fn seqs(p: SearchPage) -> Vec<u64> {
        p.hits.into_iter().map(|h| h.seq).collect()
    }

    #[test]
    fn search_sees_only_what_the_viewer_may_and_ranks_the_exact_phrase_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path(), true);
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
        // The exact phrase (3) before a message with both words apart (1); C→D never.
        assert_eq!(
            seqs(b.search("B", &query("auth migration")).unwrap()),
            [3, 1]
        );
        assert_eq!(
            seqs(b.search("A", &query("Auth  MIGRATION")).unwrap()),
            [3, 1]
        );
        assert_eq!(seqs(b.search("E", &query("auth migration")).unwrap()), [3]);
        assert_eq!(seqs(b.search("C", &query("secret")).unwrap()), [2]);
        assert!(b.search("A", &query("secret")).unwrap().hits.is_empty());
        assert_eq!(seqs(b.search("A", &query("migrat*")).unwrap()).len(), 2);
        let hit = &b.search("B", &query("done")).unwrap().hits[0];
        assert_eq!(
            hit.snippet,
            "status: auth migration [done], and the rest of the work is fine"
        );
        // Filters and paging.
        let mut q = query("auth");
        q.from = Some("A".into());
        q.since = Some(2);
        assert_eq!(seqs(b.search("B", &q).unwrap()), [3]);
        q.since = None;
        q.until = Some(3);
        assert_eq!(seqs(b.search("B", &q).unwrap()), [1]);
        let mut q = query("auth");
        q.count = 1;
        let first = b.search("B", &q).unwrap();
        assert!(first.more);
        q.offset = 1;
        let second = b.search("B", &q).unwrap();
        assert!(!second.more);
        assert_ne!(seqs(first), seqs(second));
    }

    #[test]
    fn threads_and_the_index_follow_retention_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let now = 100 * 86_400_000;
        {
            let mut b = open(dir.path(), true);
            b.append(&[&msg("A", "B", "ancient history", 1)], &[])
                .unwrap();
            b.append(&[&msg("A", "B", "question about tokens", now)], &[])
                .unwrap();
            assert_eq!(b.thread_of("B", 2).unwrap(), Some(2));
            assert_eq!(b.thread_of("C", 2).unwrap(), None, "not C's to see");
            let mut answer = msg("B", "A", "answer about tokens", now);
            answer.reply = Some(Reply { to: 2, thread: 2 });
            b.append(&[&answer], &[]).unwrap();
            assert_eq!(b.thread_of("A", 3).unwrap(), Some(2));
            let policy = Retention {
                max_age: Duration::from_secs(30 * 86_400),
                max_bytes: u64::MAX,
                every: Duration::from_secs(60),
            };
            assert_eq!(b.prune(&policy, now, 100).unwrap().expired, 1);
            assert!(b.search("A", &query("ancient")).unwrap().hits.is_empty());
        }
        let mut b = open(dir.path(), true);
        let hits = b.search("A", &query("tokens")).unwrap().hits;
        assert_eq!(hits.len(), 2);
        let answer = hits.iter().find(|h| h.seq == 3).unwrap();
        assert_eq!(answer.reply, Some(Reply { to: 2, thread: 2 }));
        let integrity: String = b
            .conn
            .query_row(
                "INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1) \
                 RETURNING 'ok'",
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| e.to_string());
        assert_eq!(integrity, "ok");
    }

    fn index_is_whole(b: &SqliteBackend) {
        let said: String = b
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

    fn in_index(b: &SqliteBackend, word: &str) -> i64 {
        b.conn
            .query_row(
                "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?1",
                [word],
                |r| r.get(0),
            )
            .unwrap()
    }

    #[test]
    fn messages_are_indexed_behind_their_commit_and_a_search_catches_up_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path(), true);
        b.append(&[&msg("A", "B", "first falcon", 1)], &[]).unwrap();
        b.maintain();
        // One message, just now: not indexed yet.
        assert_eq!(in_index(&b, "falcon"), 0);
        // Deleting a row the index does not hold leaves the index whole (the trigger only
        // follows rows it holds).
        b.conn
            .execute("DELETE FROM messages WHERE seq = 1", [])
            .unwrap();
        b.append(&[&msg("A", "B", "second falcon", 2)], &[])
            .unwrap();
        // A search sees every stored message: it indexes what is waiting first.
        assert_eq!(seqs(b.search("B", &query("falcon")).unwrap()), [2]);
        index_is_whole(&b);
        // Deleting an indexed row takes it out of the index.
        b.conn
            .execute("DELETE FROM messages WHERE seq = 2", [])
            .unwrap();
        assert_eq!(in_index(&b, "falcon"), 0);
        index_is_whole(&b);

        // Enough waiting messages are indexed after a batch, without a search.
        let many: Vec<NewMessage> = (0..INDEX_BATCH)
            .map(|i| msg("A", "B", &format!("heron {i}"), 3))
            .collect();
        b.append(&many.iter().collect::<Vec<_>>(), &[]).unwrap();
        b.maintain();
        assert_eq!(in_index(&b, "heron"), INDEX_BATCH as i64);
        index_is_whole(&b);

        // A restart finds the mark and what is still to index.
        b.append(&[&msg("A", "B", "late egret", 4)], &[]).unwrap();
        drop(b);
        let mut b = open(dir.path(), true);
        assert_eq!(in_index(&b, "egret"), 0);
        assert_eq!(seqs(b.search("B", &query("egret")).unwrap()).len(), 1);
        index_is_whole(&b);
    }

    #[test]
    fn without_the_index_search_is_refused_and_turning_it_on_rebuilds_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut b = open(dir.path(), false);
            b.append(&[&msg("A", "B", "stored while unindexed", 1)], &[])
                .unwrap();
            assert!(matches!(
                b.search("B", &query("unindexed")),
                Err(crate::store::StoreError::NoSearchIndex)
            ));
        }
        let mut b = open(dir.path(), true);
        assert_eq!(seqs(b.search("B", &query("unindexed")).unwrap()), [1]);
    }

    #[test]
    fn a_version_1_store_is_upgraded_in_place_and_its_old_messages_are_found() {
        let dir = tempfile::tempdir().unwrap();
        {
            // What a hub of schema version 1 left behind.
            let conn = Connection::open(dir.path().join(super::super::DB_FILE)).unwrap();
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
        let mut b = open(dir.path(), true);
        assert_eq!(b.epoch(), "ab12cd34");
        let version: String = b
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, "2");
        assert_eq!(seqs(b.search("B", &query("plan")).unwrap()), [1]);
        // Old messages answer nothing; a new one may answer them.
        assert_eq!(b.thread_of("A", 1).unwrap(), Some(1));
        let mut answer = msg("B", "A", "re: plan", 7);
        answer.reply = Some(Reply { to: 1, thread: 1 });
        b.append(&[&answer], &[]).unwrap();
        let mut found = seqs(b.search("A", &query("plan")).unwrap());
        found.sort_unstable();
        assert_eq!(found, [1, 3]);
    }
}
