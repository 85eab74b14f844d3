//! Writes that commit alone or join the store's deferred transaction.
//!
//! A registration writes its session row; a storm of them arriving one at a time would pay
//! one commit each. The store actor lets such writes wait for one shared commit
//! (`Backend::defer_commits`, docs/STORAGE.md "Registrations"), so the code that writes
//! them cannot open a transaction of its own (SQLite has no nested `BEGIN`). A SAVEPOINT
//! does both jobs: outside a transaction it is one (RELEASE commits), inside one it is a
//! part of it that can be undone alone (ROLLBACK TO), so a failed statement does not take
//! other sessions' rows with it. (A full disk or an I/O error while SQLite writes pages out
//! can roll back the whole transaction instead; the backend notices and says so when it
//! settles, docs/STORAGE.md "Registrations".)

use rusqlite::Connection;

/// An open savepoint; dropped without [`release`](Self::release), its writes are undone.
pub(super) struct Savepoint<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> Savepoint<'c> {
    /// Opens one on `conn`.
    pub(super) fn begin(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached("SAVEPOINT write")?.execute([])?;
        Ok(Self { conn, open: true })
    }

    /// Keeps the writes: commits them, or leaves them to the transaction around.
    pub(super) fn release(mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("RELEASE write")?.execute([])?;
        self.open = false;
        Ok(())
    }
}

impl std::ops::Deref for Savepoint<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if self.open {
            // Fails only if SQLite already rolled the transaction back; nothing is left then.
            let _ = self.conn.execute_batch("ROLLBACK TO write; RELEASE write");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn alone_it_commits_inside_a_transaction_it_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t(x)").unwrap();
        let other = Connection::open(&path).unwrap();

        // Alone: released means committed (another connection sees it).
        let sp = Savepoint::begin(&conn).unwrap();
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        sp.release().unwrap();
        assert!(conn.is_autocommit());
        assert_eq!(rows(&other), 1);

        // Alone, dropped: undone, and no transaction is left open.
        let sp = Savepoint::begin(&conn).unwrap();
        conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
        drop(sp);
        assert!(conn.is_autocommit());
        assert_eq!(rows(&conn), 1);

        // Inside a transaction: a dropped one undoes only its own write, a released one
        // waits for the transaction's commit.
        conn.execute_batch("BEGIN").unwrap();
        let kept = Savepoint::begin(&conn).unwrap();
        conn.execute("INSERT INTO t VALUES (3)", []).unwrap();
        kept.release().unwrap();
        let undone = Savepoint::begin(&conn).unwrap();
        conn.execute("INSERT INTO t VALUES (4)", []).unwrap();
        drop(undone);
        assert!(!conn.is_autocommit(), "the transaction around stays open");
        assert_eq!(rows(&conn), 2);
        assert_eq!(rows(&other), 1, "nothing committed before the transaction");
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(rows(&other), 2);
    }
}
