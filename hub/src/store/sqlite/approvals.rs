//! Approvals in the embedded SQLite store (schema in docs/STORAGE.md, "Approvals").
//!
//! Tables (created with `IF NOT EXISTS`, so a store made by an older hub gains them in
//! place): `approvals` (one row per prompt, numbered hub-wide, its current state and who
//! decided it) and `approval_events` (the append-only audit trail: filed, then the one
//! verdict, with who, from where and when). Every change is one transaction.

use relay_proto::wire_approvals::{ApprovalSource, ApprovalState, ApprovalView, approval_id};
use rusqlite::{OptionalExtension, Row, params};

use super::SqliteBackend;
use crate::store::{
    StoreError,
    approvals::{ApprovalEvent, ApprovalRow, ApprovalStore, Decided, Decision, Filed, NewApproval},
};

/// The approval tables (see the module docs).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS approvals (
    n          INTEGER PRIMARY KEY AUTOINCREMENT,
    session    TEXT NOT NULL,
    host       TEXT,
    cwd        TEXT,
    tool       TEXT NOT NULL,
    summary    TEXT NOT NULL,
    preview    TEXT NOT NULL,
    source     TEXT NOT NULL,
    request_id TEXT,
    state      TEXT NOT NULL,
    created    INTEGER NOT NULL,
    expires    INTEGER NOT NULL,
    decided    INTEGER,
    by_whom    TEXT,
    from_addr  TEXT,
    message    TEXT,
    truncated  INTEGER NOT NULL DEFAULT 0,
    input_chars INTEGER
);
CREATE INDEX IF NOT EXISTS approvals_by_state ON approvals(state, session);
CREATE TABLE IF NOT EXISTS approval_events (
    n         INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    state     TEXT NOT NULL,
    by_whom   TEXT NOT NULL,
    from_addr TEXT,
    message   TEXT
);
CREATE INDEX IF NOT EXISTS approval_events_by_n ON approval_events(n);
";

const COLUMNS: &str = "n, session, host, cwd, tool, summary, preview, source, request_id, state, \
                       created, expires, decided, by_whom, from_addr, message, truncated, \
                       input_chars";

/// Adds the columns a store made before them lacks (`truncated`, `input_chars`): its rows
/// read as not cut, length unknown.
pub(super) fn upgrade(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('approvals') WHERE name = 'input_chars'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has {
        conn.execute_batch(
            "ALTER TABLE approvals ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE approvals ADD COLUMN input_chars INTEGER;",
        )?;
    }
    Ok(())
}

fn row(r: &Row<'_>) -> rusqlite::Result<ApprovalRow> {
    let n = r.get::<_, i64>(0)? as u64;
    let source: String = r.get(7)?;
    let state: String = r.get(9)?;
    Ok(ApprovalRow {
        n,
        view: ApprovalView {
            id: approval_id(n),
            session: r.get(1)?,
            host: r.get(2)?,
            cwd: r.get(3)?,
            tool: r.get(4)?,
            summary: r.get(5)?,
            preview: r.get(6)?,
            // A source this hub does not know reads as the hook (the default).
            source: ApprovalSource::parse(&source).unwrap_or_default(),
            request_id: r.get(8)?,
            // A state this hub does not know reads as closed: never as pending or a verdict.
            state: ApprovalState::parse(&state).unwrap_or(ApprovalState::Closed),
            created: r.get(10)?,
            expires: r.get(11)?,
            decided: r.get(12)?,
            by: r.get(13)?,
            from: r.get(14)?,
            message: r.get(15)?,
            truncated: r.get(16)?,
            input_chars: r.get::<_, Option<i64>>(17)?.map(|n| n as u64),
        },
    })
}

impl SqliteBackend {
    fn approval(&self, n: u64) -> Result<Option<ApprovalRow>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM approvals WHERE n = ?1"))?
            .query_row([n as i64], row)
            .optional()?)
    }
}

impl ApprovalStore for SqliteBackend {
    fn file(&mut self, new: &NewApproval, total: usize) -> Result<Filed, StoreError> {
        self.writable()?;
        let tx = self.conn.transaction()?;
        let all: i64 = tx.query_row(
            "SELECT count(*) FROM approvals WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?;
        if all as usize >= total {
            return Ok(Filed::HubFull(total));
        }
        tx.execute(
            "INSERT INTO approvals (session, host, cwd, tool, summary, preview, source, \
             request_id, state, created, expires, truncated, input_chars) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9, ?10, ?11, ?12)",
            params![
                new.session,
                new.host,
                new.cwd,
                new.tool,
                new.summary,
                new.preview,
                new.source.as_str(),
                new.request_id,
                new.created,
                new.expires,
                new.truncated,
                new.input_chars.map(|n| n as i64)
            ],
        )?;
        let n = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO approval_events (n, at, state, by_whom) VALUES (?1, ?2, 'pending', ?3)",
            params![n, new.created, new.session],
        )?;
        tx.commit()?;
        Ok(match self.approval(n as u64)? {
            Some(r) => Filed::New(Box::new(r)),
            None => return Err(StoreError::Closed),
        })
    }

    fn decide(&mut self, n: u64, d: &Decision) -> Result<Decided, StoreError> {
        self.writable()?;
        let tx = self.conn.transaction()?;
        let changed = tx.execute(
            "UPDATE approvals SET state = ?2, decided = ?3, by_whom = ?4, from_addr = ?5, \
             message = ?6 WHERE n = ?1 AND state = 'pending'",
            params![n as i64, d.state.as_str(), d.at, d.by, d.from, d.message],
        )?;
        if changed == 1 {
            tx.execute(
                "INSERT INTO approval_events (n, at, state, by_whom, from_addr, message) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![n as i64, d.at, d.state.as_str(), d.by, d.from, d.message],
            )?;
        }
        tx.commit()?;
        Ok(match (self.approval(n)?, changed) {
            (None, _) => Decided::NotFound,
            (Some(r), 1) => Decided::Done(r),
            (Some(r), _) => Decided::Already(r),
        })
    }

    fn get(&mut self, n: u64) -> Result<Option<ApprovalRow>, StoreError> {
        self.approval(n)
    }

    fn list(&mut self, pending: usize, recent: usize) -> Result<Vec<ApprovalRow>, StoreError> {
        let mut out: Vec<ApprovalRow> = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM approvals WHERE state = 'pending' ORDER BY n LIMIT ?1"
            ))?
            .query_map([pending as i64], row)?
            .collect::<Result<_, _>>()?;
        let done: Vec<ApprovalRow> = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM approvals WHERE state != 'pending' ORDER BY n DESC LIMIT ?1"
            ))?
            .query_map([recent as i64], row)?
            .collect::<Result<_, _>>()?;
        out.extend(done);
        Ok(out)
    }

    fn events(&mut self, n: u64) -> Result<Vec<ApprovalEvent>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT at, state, by_whom, from_addr, message FROM approval_events \
                 WHERE n = ?1 ORDER BY rowid",
            )?
            .query_map([n as i64], |r| {
                let state: String = r.get(1)?;
                Ok(ApprovalEvent {
                    at: r.get(0)?,
                    state: ApprovalState::parse(&state).unwrap_or(ApprovalState::Closed),
                    by: r.get(2)?,
                    from: r.get(3)?,
                    message: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?)
    }

    fn prune(&mut self, keep: usize, before: i64, limit: usize) -> Result<usize, StoreError> {
        self.writable()?;
        let tx = self.conn.transaction()?;
        let victims: Vec<i64> = tx
            .prepare_cached(
                "SELECT n FROM approvals WHERE state != 'pending' AND (decided < ?1 OR n NOT IN \
                 (SELECT n FROM approvals WHERE state != 'pending' ORDER BY n DESC LIMIT ?2)) \
                 ORDER BY n LIMIT ?3",
            )?
            .query_map(params![before, keep as i64, limit as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for n in &victims {
            tx.execute("DELETE FROM approval_events WHERE n = ?1", [n])?;
            tx.execute("DELETE FROM approvals WHERE n = ?1", [n])?;
        }
        tx.commit()?;
        Ok(victims.len())
    }

    fn close_all_pending(&mut self, at: i64) -> Result<u64, StoreError> {
        self.writable()?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO approval_events (n, at, state, by_whom, message) \
             SELECT n, ?1, 'closed', 'hub', 'the hub restarted: nobody waits for it any more' \
             FROM approvals WHERE state = 'pending'",
            [at],
        )?;
        let n = tx.execute(
            "UPDATE approvals SET state = 'closed', decided = ?1, by_whom = 'hub', \
             message = 'the hub restarted: nobody waits for it any more' \
             WHERE state = 'pending'",
            [at],
        )?;
        tx.commit()?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::SyncMode, store::Backend};

    fn new(session: &str) -> NewApproval {
        NewApproval {
            session: session.into(),
            host: Some("box".into()),
            cwd: Some("/w".into()),
            tool: "Bash".into(),
            summary: "npm test".into(),
            preview: "{\"command\":\"npm test\"}".into(),
            truncated: false,
            input_chars: Some(22),
            source: ApprovalSource::Hook,
            request_id: None,
            created: 1,
            expires: 2,
        }
    }

    fn verdict(state: ApprovalState, by: &str) -> Decision {
        Decision {
            state,
            by: by.into(),
            from: Some("127.0.0.1".into()),
            message: None,
            at: 5,
        }
    }

    #[test]
    fn pruning_keeps_pending_prompts_and_the_newest_recent_verdicts() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = SqliteBackend::open(dir.path(), SyncMode::Normal).unwrap();
        let s = b.approvals().unwrap();
        let mut ns = Vec::new();
        for i in 0..6 {
            let Filed::New(a) = s.file(&new("CC-1"), 100).unwrap() else {
                panic!("not filed")
            };
            if i != 0 {
                // A-1 stays pending; the others are decided at time 10 * i.
                let mut d = verdict(ApprovalState::Denied, "cli");
                d.at = 10 * i;
                s.decide(a.n, &d).unwrap();
            }
            ns.push(a.n);
        }
        // Keep the newest 4 decided; nothing is older than 0: the oldest verdict goes.
        assert_eq!(s.prune(4, 0, 100).unwrap(), 1);
        assert!(s.get(ns[1]).unwrap().is_none());
        assert!(
            s.events(ns[1]).unwrap().is_empty(),
            "its trail went with it"
        );
        // Decided before 45: three more go, one per call when limited.
        for _ in 0..3 {
            assert_eq!(s.prune(100, 45, 1).unwrap(), 1);
        }
        assert_eq!(s.prune(100, 45, 1).unwrap(), 0);
        let left: Vec<u64> = s.list(10, 10).unwrap().iter().map(|r| r.n).collect();
        assert_eq!(left, vec![ns[0], ns[5]]);
        // A pending prompt is never pruned, whatever the bounds.
        assert_eq!(s.prune(0, i64::MAX, 100).unwrap(), 1);
        assert_eq!(
            s.get(ns[0]).unwrap().unwrap().view.state,
            ApprovalState::Pending
        );
        assert_eq!(s.events(ns[0]).unwrap().len(), 1);
    }

    #[test]
    fn a_table_made_before_the_cut_columns_gains_them() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let before = SCHEMA.replace(
            "message    TEXT,\n    truncated  INTEGER NOT NULL DEFAULT 0,\n    input_chars INTEGER\n",
            "message    TEXT\n",
        );
        assert_ne!(before, SCHEMA);
        conn.execute_batch(&before).unwrap();
        conn.execute(
            "INSERT INTO approvals (session, tool, summary, preview, source, state, created, \
             expires) VALUES ('CC-1', 'Bash', 'ls', '{}', 'hook', 'closed', 1, 2)",
            [],
        )
        .unwrap();
        upgrade(&conn).unwrap();
        upgrade(&conn).unwrap();
        let old = conn
            .query_row(&format!("SELECT {COLUMNS} FROM approvals"), [], row)
            .unwrap();
        assert!(!old.view.truncated);
        assert_eq!(old.view.input_chars, None);
    }

    #[test]
    fn first_answer_wins_is_bounded_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = SqliteBackend::open(dir.path(), SyncMode::Normal).unwrap();
        let s = b.approvals().unwrap();
        let Filed::New(a) = s.file(&new("CC-1"), 2).unwrap() else {
            panic!("not filed")
        };
        assert_eq!(a.view.state, ApprovalState::Pending);
        assert!(matches!(s.file(&new("CC-1"), 2).unwrap(), Filed::New(_)));
        assert!(matches!(
            s.file(&new("CC-2"), 2).unwrap(),
            Filed::HubFull(2)
        ));
        let Decided::Done(d) = s
            .decide(a.n, &verdict(ApprovalState::Allowed, "cli"))
            .unwrap()
        else {
            panic!("not decided")
        };
        assert_eq!(d.view.state, ApprovalState::Allowed);
        let Decided::Already(d) = s.decide(a.n, &verdict(ApprovalState::Denied, "x")).unwrap()
        else {
            panic!("decided twice")
        };
        assert_eq!(d.view.state, ApprovalState::Allowed);
        assert!(matches!(
            s.decide(999, &verdict(ApprovalState::Denied, "x")).unwrap(),
            Decided::NotFound
        ));
        drop(b);
        let mut b = SqliteBackend::open(dir.path(), SyncMode::Normal).unwrap();
        let s = b.approvals().unwrap();
        let ev = s.events(a.n).unwrap();
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!(ev[1].state, ApprovalState::Allowed);
        assert_eq!(ev[1].by, "cli");
        assert_eq!(ev[1].from.as_deref(), Some("127.0.0.1"));
        assert_eq!(s.close_all_pending(9).unwrap(), 1);
        let list = s.list(10, 10).unwrap();
        assert!(list.iter().all(|r| r.view.state != ApprovalState::Pending));
    }
}
