//! The full-text index behind `search` (docs/STORAGE.md, "Search index").
//!
//! `messages_fts` is an FTS5 table with external content (`content='messages'`): it keeps
//! only the index, never a second copy of the text, and `snippet()` reads the text from
//! `messages`. `detail=none` keeps no positions (the smallest and cheapest index FTS5 has;
//! phrase queries are not needed: an exact phrase is ranked first with `instr` instead).
//! Each message is indexed by the code that stores it, in the same transaction (`append`,
//! task mail), so the index is exactly as durable as the messages; deletions (retention)
//! follow through a trigger. A store opened without the index (`--no-search-index`) drops
//! it; opened with it again, the index is rebuilt from every stored message — which is also
//! how a store made before search existed gets its index.

use rusqlite::{Connection, params};

use super::{SqliteBackend, reply_of};
use crate::store::{
    StoreError,
    search::{SNIPPET_TOKENS, SearchHit, SearchPage, SearchQuery, cut_snippet},
};

/// The index and the trigger that keeps it in step with deletions.
const SCHEMA: &str = "
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
    content, content='messages', content_rowid='seq', detail=none,
    tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS messages_fts_follows AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.seq, old.content);
END;
";

/// Makes the index match `want` (None: leave it as it is) and says whether it exists.
pub(super) fn prepare(conn: &Connection, want: Option<bool>) -> Result<bool, StoreError> {
    let exists = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages_fts'")?
        .exists([])?;
    match want {
        None => Ok(exists),
        Some(true) if exists => Ok(true),
        Some(true) => {
            let started = std::time::Instant::now();
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(SCHEMA)?;
            tx.execute(
                "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
                [],
            )?;
            tx.commit()?;
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "search index built from the stored messages"
            );
            Ok(true)
        }
        Some(false) if exists => {
            conn.execute_batch(
                "DROP TRIGGER IF EXISTS messages_fts_follows; DROP TABLE messages_fts;",
            )?;
            tracing::info!("search index dropped (--no-search-index)");
            Ok(false)
        }
        Some(false) => Ok(false),
    }
}

/// Indexes one message inside the transaction that stores it.
pub(super) fn index(tx: &Connection, seq: u64, content: &str) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO messages_fts(rowid, content) VALUES (?1, ?2)")?
        .execute(params![seq as i64, content])?;
    Ok(())
}

impl SqliteBackend {
    /// Whether messages are indexed as they are stored (for task mail, stored elsewhere).
    pub(super) fn indexed(&self) -> bool {
        self.indexed
    }

    /// One page of `q` over what `viewer` may see: its own sends, mail to it, broadcasts.
    pub(super) fn search_page(
        &mut self,
        viewer: &str,
        q: &SearchQuery,
    ) -> Result<SearchPage, StoreError> {
        if !self.indexed {
            return Err(StoreError::NoSearchIndex);
        }
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
    use crate::{
        config::{Retention, SyncMode},
        store::{
            Backend, Reply,
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
