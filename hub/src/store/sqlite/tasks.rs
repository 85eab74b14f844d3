//! Tasks in the embedded SQLite store (schema in `docs/STORAGE.md`).
//!
//! Tables (created with `IF NOT EXISTS`, so a store made by an older hub gains them in
//! place): `tasks` (one row per task, numbered hub-wide), `task_events` (the append-only
//! history), `task_mail` (which messages report a task change, for the `task` tag; a
//! trigger forgets a row when retention deletes its message), `blobs` and `blob_chunks`
//! (uploaded git bundles, kept as the chunks they arrived in, so an upload appends instead
//! of rewriting a growing value).
//!
//! Every write here is one transaction that also stores the move's mail in `messages`, with
//! the backend's sequence counter and byte total, exactly as `append` stores a message.

use relay_proto::wire_tasks::{ANY, TaskAction, TaskEvent, TaskState, TaskTag, task_id};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::{SqliteBackend, set_meta};
use crate::{
    auth::hex,
    store::{
        StoreError, StoredMessage,
        tasks::{
            Applied, BlobChunkIn, BlobLimits, BlobState, BundlePiece, ListQuery, Move, NewTask,
            TaskError, TaskMail, TaskRow, TaskStore,
        },
    },
    tasks::{
        MAX_EVENTS,
        machine::{Role, decide},
        mail,
    },
};

/// The task tables (see the module docs).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    n          INTEGER PRIMARY KEY,
    creator    TEXT NOT NULL,
    addressee  TEXT NOT NULL,
    holder     TEXT,
    title      TEXT NOT NULL,
    brief      TEXT NOT NULL,
    acceptance TEXT NOT NULL DEFAULT '[]',
    state      TEXT NOT NULL,
    created    INTEGER NOT NULL,
    updated    INTEGER NOT NULL,
    result     TEXT,
    refs       TEXT NOT NULL DEFAULT '[]',
    git        TEXT,
    blob       INTEGER,
    ckey       TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_by_key ON tasks(creator, ckey) WHERE ckey IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_by_creator ON tasks(creator, n);
CREATE INDEX IF NOT EXISTS tasks_by_addressee ON tasks(addressee, n);
CREATE INDEX IF NOT EXISTS tasks_by_holder ON tasks(holder, n);
CREATE TABLE IF NOT EXISTS task_events (
    task   INTEGER NOT NULL,
    i      INTEGER NOT NULL,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    state  TEXT NOT NULL,
    note   TEXT,
    PRIMARY KEY (task, i)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS task_mail (
    seq   INTEGER PRIMARY KEY,
    task  INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS task_mail_by_task ON task_mail(task, seq);
CREATE TRIGGER IF NOT EXISTS task_mail_follows_messages AFTER DELETE ON messages
BEGIN DELETE FROM task_mail WHERE seq = old.seq; END;
CREATE TABLE IF NOT EXISTS blobs (
    id       INTEGER PRIMARY KEY,
    owner    TEXT NOT NULL,
    size     INTEGER NOT NULL,
    received INTEGER NOT NULL DEFAULT 0,
    sha256   TEXT,
    complete INTEGER NOT NULL DEFAULT 0,
    created  INTEGER NOT NULL,
    task     INTEGER
);
CREATE INDEX IF NOT EXISTS blobs_by_owner ON blobs(owner) WHERE task IS NULL;
CREATE TABLE IF NOT EXISTS task_reservations (
    n       INTEGER PRIMARY KEY,
    owner   TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_chunks (
    blob INTEGER NOT NULL,
    off  INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (blob, off)
);
";

const OPEN_STATES: &str = "('submitted','working','input-required')";

const SELECT_TASK: &str = "SELECT t.n, t.creator, t.addressee, t.holder, t.title, t.brief,
        t.acceptance, t.state, t.created, t.updated, t.result, t.refs, t.git, b.size, b.sha256
     FROM tasks t LEFT JOIN blobs b ON b.id = t.blob AND b.complete = 1";

fn state_of(s: &str) -> rusqlite::Result<TaskState> {
    TaskState::parse(s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            7,
            rusqlite::types::Type::Text,
            format!("unknown task state {s:?}").into(),
        )
    })
}

fn row_task(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRow> {
    let json_list = |i: usize| -> rusqlite::Result<String> { r.get(i) };
    let size: Option<i64> = r.get(13)?;
    let sha: Option<String> = r.get(14)?;
    Ok(TaskRow {
        n: r.get::<_, i64>(0)? as u64,
        from: r.get(1)?,
        to: r.get(2)?,
        holder: r.get(3)?,
        title: r.get(4)?,
        brief: r.get(5)?,
        acceptance: serde_json::from_str(&json_list(6)?).unwrap_or_default(),
        state: state_of(&r.get::<_, String>(7)?)?,
        created: r.get(8)?,
        updated: r.get(9)?,
        result: r.get(10)?,
        refs: serde_json::from_str(&json_list(11)?).unwrap_or_default(),
        git: r.get(12)?,
        bundle: size.zip(sha).map(|(s, h)| (s as u64, h)),
    })
}

fn load(conn: &Connection, n: u64) -> Result<Option<TaskRow>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("{SELECT_TASK} WHERE t.n = ?1"))?
        .query_row([n as i64], row_task)
        .optional()?)
}

fn add_event(
    conn: &Connection,
    n: u64,
    at: i64,
    actor: &str,
    action: &str,
    state: TaskState,
    note: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO task_events(task, i, at, actor, action, state, note)
         VALUES (?1, (SELECT coalesce(max(i) + 1, 0) FROM task_events WHERE task = ?1),
                 ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![n as i64, at, actor, action, state.as_str(), note])?;
    Ok(())
}

/// The next task number: above every number ever created or reserved (kept in
/// `meta.task_high`, so a lapsed reservation's number is not given out again).
fn next_number(conn: &Connection) -> Result<u64, StoreError> {
    let high: u64 = super::get_meta(conn, "task_high")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let max: i64 = conn.query_row("SELECT coalesce(max(n), 0) FROM tasks", [], |r| r.get(0))?;
    let n = high.max(max as u64) + 1;
    set_meta(conn, "task_high", &n.to_string())?;
    Ok(n)
}

/// Deletes a blob and its chunks.
fn drop_blob(conn: &Connection, blob: i64) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM blob_chunks WHERE blob = ?1")?
        .execute([blob])?;
    conn.prepare_cached("DELETE FROM blobs WHERE id = ?1")?
        .execute([blob])?;
    Ok(())
}

impl SqliteBackend {
    /// Stores the mail of a move inside the caller's transaction `tx`, with the next
    /// sequence number; the caller commits, then calls [`Self::mail_committed`].
    #[allow(clippy::too_many_arguments)]
    fn store_mail(
        &self,
        tx: &Connection,
        from: &str,
        to: &str,
        content: String,
        ts: i64,
        tag: TaskTag,
        task: u64,
        deliverable: &dyn Fn(&str, &str) -> bool,
    ) -> Result<TaskMail, StoreError> {
        let seq = self.next_seq;
        let predicted = deliverable(from, to);
        // A task's mail is one thread: rooted at its first mail, each answering the last.
        let (first, last): (Option<i64>, Option<i64>) = tx
            .prepare_cached("SELECT min(seq), max(seq) FROM task_mail WHERE task = ?1")?
            .query_row([task as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let reply = first.zip(last).map(|(first, last)| crate::store::Reply {
            to: last as u64,
            thread: first as u64,
        });
        tx.prepare_cached(
            "INSERT INTO messages(seq, ts, sender, recipient, content, delivered_at, reply_to,
                                  thread)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            seq as i64,
            ts,
            from,
            to,
            content,
            predicted.then_some(ts),
            reply.map(|r| r.to as i64),
            reply.map(|r| r.thread as i64),
        ])?;
        tx.prepare_cached("INSERT INTO task_mail(seq, task, state) VALUES (?1, ?2, ?3)")?
            .execute(params![seq as i64, task as i64, tag.state.as_str()])?;
        set_meta(tx, "high_seq", &seq.to_string())?;
        set_meta(
            tx,
            "total_bytes",
            &(self.total_bytes + content.len() as u64).to_string(),
        )?;
        Ok(TaskMail {
            msg: StoredMessage {
                seq,
                ts,
                from: from.into(),
                to: to.into(),
                content,
                reply,
            },
            tag,
            predicted,
        })
    }

    /// The mail's transaction committed: advance the counters it used.
    fn mail_committed(&mut self, mail: &TaskMail) {
        self.next_seq = mail.msg.seq + 1;
        self.total_bytes += mail.msg.content.len() as u64;
        self.postings
            .add(mail.msg.seq, &mail.msg.from, &mail.msg.to);
        self.flush_postings();
    }

    /// Deletes unattached blobs past their time and bundles of long-finished tasks.
    fn expire_blobs(
        &self,
        tx: &Connection,
        limits: &BlobLimits,
        now: i64,
    ) -> Result<(), StoreError> {
        let stale: Vec<i64> = tx
            .prepare_cached(
                "SELECT id FROM blobs WHERE task IS NULL AND created < ?1
                 UNION ALL
                 SELECT b.id FROM blobs b JOIN tasks t ON t.n = b.task
                 WHERE t.state NOT IN ('submitted','working','input-required') AND t.updated < ?2",
            )?
            .query_map(
                params![now - limits.pending_ttl_ms, now - limits.finished_ttl_ms],
                |r| r.get(0),
            )?
            .collect::<Result<_, _>>()?;
        for id in stale {
            drop_blob(tx, id)?;
            tx.prepare_cached("UPDATE tasks SET blob = NULL WHERE blob = ?1")?
                .execute([id])?;
        }
        Ok(())
    }
}

impl TaskStore for SqliteBackend {
    fn create_task(
        &mut self,
        new: &NewTask,
        deliverable: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Applied, TaskError> {
        let tx = self.conn.unchecked_transaction()?;
        if let Some(key) = &new.key {
            let earlier: Option<i64> = tx
                .prepare_cached("SELECT n FROM tasks WHERE creator = ?1 AND ckey = ?2")?
                .query_row(params![new.from, key], |r| r.get(0))
                .optional()?;
            if let Some(n) = earlier {
                let task =
                    load(&tx, n as u64)?.ok_or_else(|| TaskError::NotFound(task_id(n as u64)))?;
                return Ok(Applied {
                    task,
                    was: None,
                    mail: None,
                });
            }
        }
        let open: i64 = tx
            .prepare_cached(&format!(
                "SELECT count(*) FROM tasks WHERE creator = ?1 AND state IN {OPEN_STATES}"
            ))?
            .query_row([&new.from], |r| r.get(0))?;
        if open as u64 >= new.max_open {
            return Err(TaskError::Invalid(format!(
                "you already have {open} open tasks (the limit is {}); cancel or finish some first",
                new.max_open
            )));
        }
        for r in &new.refs {
            let exists = tx
                .prepare_cached("SELECT 1 FROM tasks WHERE n = ?1")?
                .query_row([*r as i64], |_| Ok(()))
                .optional()?
                .is_some();
            if !exists {
                return Err(TaskError::Invalid(format!(
                    "refs: there is no task {}",
                    task_id(*r)
                )));
            }
        }
        if let Some(b) = new.blob {
            let blob: Option<(String, bool, Option<i64>)> = tx
                .prepare_cached("SELECT owner, complete, task FROM blobs WHERE id = ?1")?
                .query_row([b as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            match blob {
                Some((owner, true, None)) if owner == new.from => {}
                Some((owner, false, None)) if owner == new.from => {
                    return Err(TaskError::Invalid(format!(
                        "blob b{b} is not complete: send its last chunk (with sha256) first"
                    )));
                }
                _ => {
                    return Err(TaskError::Invalid(format!(
                        "no complete, unattached blob b{b} of yours (expired after an hour, \
                         or already attached?)"
                    )));
                }
            }
        }
        let n = match new.reserved {
            Some(r) => {
                let gone = tx
                    .prepare_cached("DELETE FROM task_reservations WHERE n = ?1 AND owner = ?2")?
                    .execute(params![r as i64, new.from])?;
                if gone == 0 {
                    return Err(TaskError::Invalid(format!(
                        "{} is not an id you reserved (reservations lapse after an hour); \
                         create the task without id",
                        task_id(r)
                    )));
                }
                r
            }
            None => next_number(&tx)?,
        };
        tx.prepare_cached(
            "INSERT INTO tasks(n, creator, addressee, holder, title, brief, acceptance, state,
                               created, updated, result, refs, git, blob, ckey)
             VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6, 'submitted', ?7, ?7, NULL, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            n as i64,
            new.from,
            new.to,
            new.title,
            new.brief,
            serde_json::to_string(&new.acceptance).unwrap_or_else(|_| "[]".into()),
            new.now,
            serde_json::to_string(&new.refs).unwrap_or_else(|_| "[]".into()),
            new.git,
            new.blob.map(|b| b as i64),
            new.key,
        ])?;
        if let Some(b) = new.blob {
            tx.prepare_cached("UPDATE blobs SET task = ?1 WHERE id = ?2")?
                .execute(params![n as i64, b as i64])?;
        }
        add_event(
            &tx,
            n,
            new.now,
            &new.from,
            "create",
            TaskState::Submitted,
            None,
        )?;
        let id = task_id(n);
        let to = mail::recipient(None, &new.from, &new.to, None);
        let content = mail::content(
            None,
            &id,
            &new.title,
            TaskState::Submitted,
            &new.from,
            &new.to,
            None,
        );
        let tag = TaskTag {
            id,
            state: TaskState::Submitted,
        };
        let m = self.store_mail(&tx, &new.from, to, content, new.now, tag, n, deliverable)?;
        let task = load(&tx, n)?.ok_or_else(|| TaskError::NotFound(task_id(n)))?;
        tx.commit()?;
        self.mail_committed(&m);
        Ok(Applied {
            task,
            was: None,
            mail: Some(m),
        })
    }

    fn move_task(
        &mut self,
        mv: &Move,
        deliverable: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Applied, TaskError> {
        let tx = self.conn.unchecked_transaction()?;
        let Some(before) = load(&tx, mv.n)? else {
            return Err(TaskError::NotFound(task_id(mv.n)));
        };
        let role = Role::of(
            &mv.actor,
            &before.from,
            &before.to,
            before.holder.as_deref(),
        );
        let refuse = |reason: String| TaskError::Refused {
            reason,
            task: Box::new(before.clone()),
        };
        let state = decide(role, before.to == ANY, mv.action, before.state).map_err(|r| {
            refuse(r.reason(
                mv.action,
                &before.id(),
                before.state,
                &before.from,
                &before.to,
                before.holder.as_deref(),
            ))
        })?;
        if mv.action == TaskAction::Progress {
            let events: i64 = tx
                .prepare_cached("SELECT count(*) FROM task_events WHERE task = ?1")?
                .query_row([mv.n as i64], |r| r.get(0))?;
            if events as usize >= MAX_EVENTS {
                return Err(refuse(format!(
                    "{} has {events} events, the most one task keeps; finish it, or start a \
                     follow-up task",
                    before.id()
                )));
            }
        }
        let holder = match mv.action {
            TaskAction::Claim => Some(mv.actor.as_str()),
            TaskAction::Release => None,
            _ => before.holder.as_deref(),
        };
        // The event keeps what came with the move; the task keeps a result or a reason.
        let said = match mv.action {
            TaskAction::Complete => mv.result.as_deref().or(mv.note.as_deref()),
            _ => mv.note.as_deref(),
        };
        let result = match mv.action {
            TaskAction::Complete | TaskAction::Fail => said,
            _ => None,
        };
        tx.prepare_cached(
            "UPDATE tasks SET state = ?2, holder = ?3, updated = ?4,
                              result = coalesce(?5, result)
             WHERE n = ?1",
        )?
        .execute(params![mv.n as i64, state.as_str(), holder, mv.now, result])?;
        add_event(
            &tx,
            mv.n,
            mv.now,
            &mv.actor,
            mv.action.as_str(),
            state,
            said,
        )?;
        let id = before.id();
        let to = mail::recipient(
            Some(mv.action),
            &before.from,
            &before.to,
            before.holder.as_deref(),
        );
        let content = mail::content(
            Some(mv.action),
            &id,
            &before.title,
            state,
            &mv.actor,
            &before.to,
            said,
        );
        let m = self.store_mail(
            &tx,
            &mv.actor,
            to,
            content,
            mv.now,
            TaskTag { id, state },
            mv.n,
            deliverable,
        )?;
        let task = load(&tx, mv.n)?.ok_or_else(|| TaskError::NotFound(task_id(mv.n)))?;
        tx.commit()?;
        self.mail_committed(&m);
        Ok(Applied {
            task,
            was: Some(before.state),
            mail: Some(m),
        })
    }

    fn task(&mut self, n: u64) -> Result<Option<TaskRow>, StoreError> {
        load(&self.conn, n)
    }

    fn task_events(&mut self, n: u64, limit: usize) -> Result<(Vec<TaskEvent>, u64), StoreError> {
        let total: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM task_events WHERE task = ?1")?
            .query_row([n as i64], |r| r.get(0))?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT at, actor, action, state, note FROM task_events WHERE task = ?1
             ORDER BY i DESC LIMIT ?2",
        )?;
        let mut events: Vec<TaskEvent> = stmt
            .query_map(params![n as i64, limit as i64], |r| {
                Ok(TaskEvent {
                    at: relay_proto::time::iso(r.get(0)?),
                    by: r.get(1)?,
                    action: r.get(2)?,
                    state: state_of(&r.get::<_, String>(3)?)?,
                    note: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        events.reverse();
        let omitted = (total as u64).saturating_sub(events.len() as u64);
        Ok((events, omitted))
    }

    fn list_tasks(&mut self, q: &ListQuery) -> Result<(Vec<TaskRow>, bool), StoreError> {
        let sql = format!(
            "{SELECT_TASK}
             WHERE (?1 IS NULL OR t.creator = ?1 OR t.addressee = ?1 OR t.holder = ?1
                    OR (t.addressee = 'any' AND t.state = 'submitted'))
               AND ((?2 IS NULL AND t.state IN {OPEN_STATES}) OR t.state = ?2)
               AND (?3 IS NULL OR t.n < ?3)
             ORDER BY t.n DESC LIMIT ?4"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows: Vec<TaskRow> = stmt
            .query_map(
                params![
                    q.viewer,
                    q.state.map(TaskState::as_str),
                    q.before.map(|b| b as i64),
                    q.count as i64 + 1
                ],
                row_task,
            )?
            .collect::<Result<_, _>>()?;
        let more = rows.len() > q.count;
        rows.truncate(q.count);
        Ok((rows, more))
    }

    fn put_blob_chunk(
        &mut self,
        c: &BlobChunkIn,
        limits: &BlobLimits,
    ) -> Result<BlobState, TaskError> {
        let tx = self.conn.unchecked_transaction()?;
        self.expire_blobs(&tx, limits, c.now)?;
        let (blob, size, received) = match c.blob {
            None => {
                let size = c.size.ok_or_else(|| {
                    TaskError::Invalid("the first chunk must declare the blob's size".into())
                })?;
                if c.offset != 0 {
                    return Err(TaskError::Invalid(
                        "a new blob starts at offset 0 (to resume, name its blob)".into(),
                    ));
                }
                if size > limits.max_bytes {
                    return Err(TaskError::Invalid(format!(
                        "the blob is {size} bytes; this hub takes bundles up to {} bytes \
                         (--max-bundle-bytes)",
                        limits.max_bytes
                    )));
                }
                let (mine, pending): (i64, i64) = tx
                    .prepare_cached(
                        "SELECT count(CASE WHEN owner = ?1 THEN 1 END), coalesce(sum(size), 0)
                         FROM blobs WHERE task IS NULL",
                    )?
                    .query_row([&c.owner], |r| Ok((r.get(0)?, r.get(1)?)))?;
                if mine as u64 >= limits.per_session {
                    return Err(TaskError::Invalid(format!(
                        "you already have {mine} unattached uploads (the limit is {}); attach \
                         them with task_create or wait an hour for them to expire",
                        limits.per_session
                    )));
                }
                if pending as u64 + size > limits.pending_total {
                    return Err(TaskError::Invalid(
                        "the hub holds as many unattached uploads as it takes right now; try \
                         again in a while"
                            .into(),
                    ));
                }
                let attached: i64 = tx
                    .prepare_cached(
                        "SELECT coalesce(sum(size), 0) FROM blobs WHERE task IS NOT NULL",
                    )?
                    .query_row([], |r| r.get(0))?;
                if attached as u64 + size > limits.attached_total {
                    return Err(TaskError::Invalid(format!(
                        "the hub's bundle storage is full ({attached} of {} bytes); bundles \
                         of tasks finished over a week ago are deleted as they age",
                        limits.attached_total
                    )));
                }
                tx.prepare_cached("INSERT INTO blobs(owner, size, created) VALUES (?1, ?2, ?3)")?
                    .execute(params![c.owner, size as i64, c.now])?;
                (tx.last_insert_rowid(), size, 0u64)
            }
            Some(b) => {
                let row: Option<(String, i64, i64, bool, Option<i64>)> = tx
                    .prepare_cached(
                        "SELECT owner, size, received, complete, task FROM blobs WHERE id = ?1",
                    )?
                    .query_row([b as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })
                    .optional()?;
                match row {
                    Some((owner, size, received, complete, None)) if owner == c.owner => {
                        if complete {
                            return Ok(BlobState {
                                blob: b,
                                received: received as u64,
                                accepted: false,
                                complete: true,
                            });
                        }
                        (b as i64, size as u64, received as u64)
                    }
                    _ => {
                        return Err(TaskError::Invalid(format!(
                            "no upload b{b} of yours in progress (expired, attached, or never \
                             started); start again without blob"
                        )));
                    }
                }
            }
        };
        if c.offset != received {
            tx.commit()?;
            return Ok(BlobState {
                blob: blob as u64,
                received,
                accepted: false,
                complete: false,
            });
        }
        let received = received + c.data.len() as u64;
        if received > size {
            return Err(TaskError::Invalid(format!(
                "the chunk goes past the declared size ({received} > {size} bytes)"
            )));
        }
        if !c.data.is_empty() {
            tx.prepare_cached("INSERT INTO blob_chunks(blob, off, data) VALUES (?1, ?2, ?3)")?
                .execute(params![blob, c.offset as i64, c.data])?;
            tx.prepare_cached("UPDATE blobs SET received = ?2 WHERE id = ?1")?
                .execute(params![blob, received as i64])?;
        }
        let mut complete = false;
        if c.last {
            if received != size {
                return Err(TaskError::Invalid(format!(
                    "last chunk, but only {received} of the declared {size} bytes arrived"
                )));
            }
            let want = c.sha256.as_deref().unwrap_or_default().to_ascii_lowercase();
            let mut hasher = Sha256::new();
            {
                let mut stmt =
                    tx.prepare_cached("SELECT data FROM blob_chunks WHERE blob = ?1 ORDER BY off")?;
                let mut rows = stmt.query([blob])?;
                while let Some(r) = rows.next()? {
                    hasher.update(r.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?);
                }
            }
            let got = hex(&hasher.finalize());
            if got != want {
                drop_blob(&tx, blob)?;
                tx.commit()?;
                return Err(TaskError::Invalid(format!(
                    "checksum mismatch: the hub got sha256 {got}, the upload said {want:?}; \
                     the upload was discarded, start again"
                )));
            }
            tx.prepare_cached("UPDATE blobs SET complete = 1, sha256 = ?2 WHERE id = ?1")?
                .execute(params![blob, got])?;
            complete = true;
        }
        tx.commit()?;
        Ok(BlobState {
            blob: blob as u64,
            received,
            accepted: true,
            complete,
        })
    }

    fn bundle_piece(
        &mut self,
        n: u64,
        offset: u64,
        max: usize,
    ) -> Result<Option<BundlePiece>, StoreError> {
        let blob: Option<(i64, i64, String)> = self
            .conn
            .prepare_cached(
                "SELECT b.id, b.size, b.sha256 FROM tasks t JOIN blobs b ON b.id = t.blob
                 WHERE t.n = ?1 AND b.complete = 1",
            )?
            .query_row([n as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((blob, total, sha256)) = blob else {
            return Ok(None);
        };
        let mut data = Vec::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT off, data FROM blob_chunks WHERE blob = ?1
               AND off >= coalesce((SELECT max(off) FROM blob_chunks WHERE blob = ?1 AND off <= ?2), 0)
             ORDER BY off",
        )?;
        let mut rows = stmt.query(params![blob, offset as i64])?;
        while let Some(r) = rows.next()? {
            let off = r.get::<_, i64>(0)? as u64;
            let chunk = r.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
            let end = off + chunk.len() as u64;
            if end <= offset {
                continue;
            }
            let from = offset.saturating_sub(off) as usize;
            let room = max - data.len();
            let take = (chunk.len() - from).min(room);
            data.extend_from_slice(&chunk[from..from + take]);
            if data.len() >= max {
                break;
            }
        }
        Ok(Some(BundlePiece {
            data,
            total: total as u64,
            sha256,
        }))
    }

    fn reserve_task(
        &mut self,
        owner: &str,
        now: i64,
        max: u64,
        ttl_ms: i64,
    ) -> Result<u64, TaskError> {
        let tx = self.conn.unchecked_transaction()?;
        tx.prepare_cached("DELETE FROM task_reservations WHERE created < ?1")?
            .execute([now - ttl_ms])?;
        let mine: i64 = tx
            .prepare_cached("SELECT count(*) FROM task_reservations WHERE owner = ?1")?
            .query_row([owner], |r| r.get(0))?;
        if mine as u64 >= max {
            return Err(TaskError::Invalid(format!(
                "you hold {mine} unused task ids (the limit is {max}); use them or wait an \
                 hour for them to lapse"
            )));
        }
        let n = next_number(&tx)?;
        tx.prepare_cached("INSERT INTO task_reservations(n, owner, created) VALUES (?1, ?2, ?3)")?
            .execute(params![n as i64, owner, now])?;
        tx.commit()?;
        Ok(n)
    }

    fn task_tags(&mut self, seqs: &[u64]) -> Result<Vec<(u64, TaskTag)>, StoreError> {
        let (Some(lo), Some(hi)) = (seqs.iter().min(), seqs.iter().max()) else {
            return Ok(Vec::new());
        };
        // One range scan of the (small) task_mail table instead of a lookup per message.
        let wanted: std::collections::HashSet<u64> = seqs.iter().copied().collect();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, task, state FROM task_mail WHERE seq BETWEEN ?1 AND ?2")?;
        let rows = stmt.query_map(params![*lo as i64, *hi as i64], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, task, state) = row?;
            if let Some(state) = TaskState::parse(&state)
                && wanted.contains(&seq)
            {
                out.push((
                    seq,
                    TaskTag {
                        id: task_id(task as u64),
                        state,
                    },
                ));
            }
        }
        Ok(out)
    }

    fn count_by_state(&mut self) -> Result<Vec<(TaskState, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, count(*) FROM tasks GROUP BY state")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    state_of(&r.get::<_, String>(0)?)?,
                    r.get::<_, i64>(1)? as u64,
                ))
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn board(&mut self, open: usize, finished: usize) -> Result<Vec<TaskRow>, StoreError> {
        // The columns of SELECT_TASK, with what the board does not show left empty.
        let sql = |which: &str| {
            format!(
                "SELECT n, creator, addressee, holder, title, '', '[]', state, created, updated,
                        NULL, '[]', NULL, NULL, NULL
                 FROM tasks WHERE state {which} {OPEN_STATES} ORDER BY n DESC LIMIT ?1"
            )
        };
        let mut out: Vec<TaskRow> = Vec::with_capacity(open + finished);
        for (which, limit) in [("IN", open), ("NOT IN", finished)] {
            let mut stmt = self.conn.prepare_cached(&sql(which))?;
            let rows = stmt.query_map([limit as i64], row_task)?;
            for row in rows {
                out.push(row?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{
        config::SyncMode,
        store::{Backend, tasks::BlobLimits},
    };

    fn open(dir: &Path) -> SqliteBackend {
        SqliteBackend::open(dir, SyncMode::Normal).unwrap()
    }

    fn offline(_: &str, _: &str) -> bool {
        false
    }

    fn new_task(from: &str, to: &str) -> NewTask {
        NewTask {
            from: from.into(),
            to: to.into(),
            title: "Fix the parser".into(),
            brief: "See src/parse.rs".into(),
            acceptance: vec!["cargo test passes".into()],
            refs: vec![],
            git: Some(r#"{"branch":"main"}"#.into()),
            blob: None,
            reserved: None,
            key: None,
            now: 1_000,
            max_open: 10,
        }
    }

    fn mv(actor: &str, n: u64, action: TaskAction, note: Option<&str>) -> Move {
        Move {
            actor: actor.into(),
            n,
            action,
            note: note.map(str::to_string),
            result: None,
            now: 2_000,
        }
    }

    /// Everything stored about task `n`, as bytes: the row and its whole history.
    fn snapshot(b: &SqliteBackend, n: u64) -> String {
        let row: String = b
            .conn
            .query_row(
                "SELECT json_array(n, creator, addressee, holder, title, brief, acceptance, state,
                                   created, updated, result, refs, git, blob, ckey)
                 FROM tasks WHERE n = ?1",
                [n as i64],
                |r| r.get(0),
            )
            .unwrap();
        let events: String = b
            .conn
            .query_row(
                "SELECT coalesce(json_group_array(json_array(i, at, actor, action, state, note)), '[]')
                 FROM task_events WHERE task = ?1",
                [n as i64],
                |r| r.get(0),
            )
            .unwrap();
        let mail: i64 = b
            .conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        format!("{row}\n{events}\n{mail}")
    }

    #[test]
    fn a_create_stores_the_task_its_event_and_its_mail_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        b.session_registered("CC-2", "{}", 0).unwrap();
        let a = b.create_task(&new_task("CC-1", "CC-2"), &offline).unwrap();
        assert_eq!(a.task.id(), "T-1");
        assert_eq!(a.task.state, TaskState::Submitted);
        let m = a.mail.unwrap();
        assert_eq!((&*m.msg.from, &*m.msg.to), ("CC-1", "CC-2"));
        assert!(m.msg.content.contains("[T-1 submitted] \"Fix the parser\""));
        // The mail is unread mail of CC-2, with its tag.
        let inbox = b.inbox("CC-2", None, 10, usize::MAX).unwrap();
        assert_eq!(inbox.messages.len(), 1);
        assert_eq!(inbox.messages[0].seq, m.msg.seq);
        assert_eq!(b.task_tags(&[m.msg.seq]).unwrap()[0].1.id, "T-1");
        // Sequence numbers go on after the mail as after any message.
        let next = b
            .append(
                &[&crate::store::NewMessage {
                    from: "CC-1".into(),
                    to: "CC-2".into(),
                    content: "x".into(),
                    ts: 3,
                    key: None,
                    delivered_at: None,
                    reply: None,
                }],
                &[],
            )
            .unwrap();
        assert_eq!(next[0].seq(), m.msg.seq + 1);
        // A repeated key returns the first task and stores nothing.
        let mut keyed = new_task("CC-1", "CC-2");
        keyed.key = Some("k".into());
        let first = b.create_task(&keyed, &offline).unwrap();
        let again = b.create_task(&keyed, &offline).unwrap();
        assert_eq!(first.task.n, again.task.n);
        assert!(again.mail.is_none());
    }

    #[test]
    fn a_tasks_mail_is_one_thread_rooted_at_its_offer() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let offer = b.create_task(&new_task("CC-1", "CC-2"), &offline).unwrap();
        let offer = offer.mail.unwrap().msg;
        assert_eq!(offer.reply, None, "the offer roots the thread");
        let other = b.create_task(&new_task("CC-1", "CC-3"), &offline).unwrap();
        let claim = b
            .move_task(&mv("CC-2", 1, TaskAction::Claim, None), &offline)
            .unwrap()
            .mail
            .unwrap()
            .msg;
        let done = b
            .move_task(&mv("CC-2", 1, TaskAction::Progress, Some("half")), &offline)
            .unwrap()
            .mail
            .unwrap()
            .msg;
        use crate::store::Reply;
        assert_eq!(
            claim.reply,
            Some(Reply {
                to: offer.seq,
                thread: offer.seq
            })
        );
        assert_eq!(
            done.reply,
            Some(Reply {
                to: claim.seq,
                thread: offer.seq
            })
        );
        // Read back as stored, and by thread: the other task's offer is not in it.
        let q = crate::store::HistoryQuery {
            from: None,
            to: None,
            after: crate::store::After::Seq(0),
            inbound_only: false,
            thread: Some(offer.seq),
            count: 10,
            max_bytes: usize::MAX,
        };
        let thread: Vec<u64> = b
            .history("CC-1", &q)
            .unwrap()
            .messages
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(thread, [offer.seq, claim.seq, done.seq]);
        assert!(!thread.contains(&other.mail.unwrap().msg.seq));
    }

    #[test]
    fn claim_is_a_compare_and_set_and_refusals_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let n = b
            .create_task(&new_task("CC-1", "any"), &offline)
            .unwrap()
            .task
            .n;
        let won = b
            .move_task(&mv("CC-2", n, TaskAction::Claim, None), &offline)
            .unwrap();
        assert_eq!(won.task.holder.as_deref(), Some("CC-2"));
        assert_eq!(&*won.mail.unwrap().msg.to, "CC-1");
        let before = snapshot(&b, n);
        for (actor, action) in [
            ("CC-3", TaskAction::Claim),
            ("CC-3", TaskAction::Complete),
            ("CC-1", TaskAction::Claim),
            ("CC-2", TaskAction::Answer),
            ("CC-3", TaskAction::Cancel),
        ] {
            match b.move_task(&mv(actor, n, action, Some("x")), &offline) {
                Err(TaskError::Refused { reason, task }) => {
                    assert_eq!(task.holder.as_deref(), Some("CC-2"));
                    if action == TaskAction::Claim {
                        assert!(reason.contains("CC-2 holds it"), "{reason}");
                    }
                }
                other => panic!("{actor} {action:?}: {other:?}"),
            }
            assert_eq!(
                snapshot(&b, n),
                before,
                "{actor} {action:?} changed something"
            );
        }
        // Terminal is final.
        let mut done = mv("CC-2", n, TaskAction::Complete, None);
        done.result = Some("merged in abc123".into());
        let t = b.move_task(&done, &offline).unwrap().task;
        assert_eq!(
            (t.state, t.result.as_deref()),
            (TaskState::Completed, Some("merged in abc123"))
        );
        let before = snapshot(&b, n);
        for action in TaskAction::ALL {
            for actor in ["CC-1", "CC-2", "CC-3"] {
                assert!(matches!(
                    b.move_task(&mv(actor, n, action, Some("x")), &offline),
                    Err(TaskError::Refused { .. })
                ));
            }
        }
        assert_eq!(snapshot(&b, n), before);
        let (events, omitted) = b.task_events(n, 10).unwrap();
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["create", "claim", "complete"]);
        assert_eq!(omitted, 0);
        assert!(matches!(
            b.move_task(&mv("CC-2", 99, TaskAction::Claim, None), &offline),
            Err(TaskError::NotFound(_))
        ));
    }

    #[test]
    fn lists_show_a_party_its_tasks_and_the_operator_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        b.create_task(&new_task("CC-1", "CC-2"), &offline).unwrap();
        b.create_task(&new_task("CC-3", "CC-4"), &offline).unwrap();
        let open_any = b
            .create_task(&new_task("CC-3", "any"), &offline)
            .unwrap()
            .task
            .n;
        let q = |viewer: Option<&str>, state| ListQuery {
            viewer: viewer.map(str::to_string),
            state,
            before: None,
            count: 10,
        };
        let ids = |b: &mut SqliteBackend, q: ListQuery| {
            b.list_tasks(&q)
                .unwrap()
                .0
                .iter()
                .map(|t| t.n)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&mut b, q(Some("CC-2"), None)), [3, 1]);
        assert_eq!(
            ids(&mut b, q(Some("CC-9"), None)),
            [3],
            "an open `any` task is for all"
        );
        assert_eq!(ids(&mut b, q(None, None)), [3, 2, 1]);
        b.move_task(&mv("CC-9", open_any, TaskAction::Claim, None), &offline)
            .unwrap();
        assert_eq!(
            ids(&mut b, q(Some("CC-2"), None)),
            [1],
            "claimed: no longer CC-2's business"
        );
        assert_eq!(
            ids(&mut b, q(Some("CC-2"), Some(TaskState::Completed))),
            Vec::<u64>::new()
        );
        let mut paged = q(None, None);
        paged.count = 2;
        let (rows, more) = b.list_tasks(&paged).unwrap();
        assert_eq!((rows.len(), more), (2, true));
        paged.before = Some(rows[1].n);
        assert_eq!(b.list_tasks(&paged).unwrap().0.len(), 1);
    }

    #[test]
    fn the_board_shows_open_then_finished_tasks_without_briefs_and_counts_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        for _ in 0..4 {
            b.create_task(&new_task("CC-1", "CC-2"), &offline).unwrap();
        }
        b.move_task(&mv("CC-2", 1, TaskAction::Decline, Some("no")), &offline)
            .unwrap();
        b.move_task(&mv("CC-2", 3, TaskAction::Claim, None), &offline)
            .unwrap();
        let board = b.board(10, 10).unwrap();
        let rows: Vec<(u64, TaskState)> = board.iter().map(|t| (t.n, t.state)).collect();
        assert_eq!(
            rows,
            [
                (4, TaskState::Submitted),
                (3, TaskState::Working),
                (2, TaskState::Submitted),
                (1, TaskState::Rejected)
            ]
        );
        assert!(
            board
                .iter()
                .all(|t| t.brief.is_empty() && t.result.is_none())
        );
        assert_eq!(board[1].holder.as_deref(), Some("CC-2"));
        assert_eq!(b.board(1, 0).unwrap().len(), 1, "bounded");
        let mut counts = b.count_by_state().unwrap();
        counts.sort_by_key(|(s, _)| s.as_str());
        assert_eq!(
            counts,
            [
                (TaskState::Rejected, 1),
                (TaskState::Submitted, 2),
                (TaskState::Working, 1)
            ]
        );
    }

    fn limits() -> BlobLimits {
        BlobLimits {
            max_bytes: 1000,
            per_session: 2,
            pending_total: 4000,
            attached_total: 64_000,
            pending_ttl_ms: 3_600_000,
            finished_ttl_ms: 7 * 86_400_000,
        }
    }

    fn chunk(owner: &str, blob: Option<u64>, offset: u64, data: &[u8]) -> BlobChunkIn {
        BlobChunkIn {
            owner: owner.into(),
            blob,
            offset,
            data: data.to_vec(),
            size: Some(10),
            last: false,
            sha256: None,
            now: 1_000,
        }
    }

    #[test]
    fn uploads_resume_verify_and_attach_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let bytes = b"0123456789";
        let first = b
            .put_blob_chunk(&chunk("CC-1", None, 0, &bytes[..4]), &limits())
            .unwrap();
        assert_eq!(
            (first.received, first.accepted, first.complete),
            (4, true, false)
        );
        let blob = first.blob;
        // Someone else cannot append to it; a wrong offset is answered with the right one.
        assert!(
            b.put_blob_chunk(&chunk("CC-2", Some(blob), 4, b"x"), &limits())
                .is_err()
        );
        let off = b
            .put_blob_chunk(&chunk("CC-1", Some(blob), 9, b"x"), &limits())
            .unwrap();
        assert_eq!((off.received, off.accepted), (4, false));
        // Half a bundle cannot be attached.
        let mut t = new_task("CC-1", "CC-2");
        t.blob = Some(blob);
        assert!(matches!(
            b.create_task(&t, &offline),
            Err(TaskError::Invalid(_))
        ));
        let mut last = chunk("CC-1", Some(blob), 4, &bytes[4..]);
        last.last = true;
        last.sha256 = Some(hex(&Sha256::digest(bytes)));
        assert!(b.put_blob_chunk(&last, &limits()).unwrap().complete);
        // Another session cannot attach it; its owner can, once.
        let mut theirs = new_task("CC-3", "CC-2");
        theirs.blob = Some(blob);
        assert!(b.create_task(&theirs, &offline).is_err());
        let task = b.create_task(&t, &offline).unwrap().task;
        assert_eq!(task.bundle.as_ref().map(|b| b.0), Some(10));
        assert!(b.create_task(&t, &offline).is_err(), "attached twice");
        // Download in pieces that do not line up with the upload's chunks.
        let mut got = Vec::new();
        while got.len() < 10 {
            let p = b
                .bundle_piece(task.n, got.len() as u64, 3)
                .unwrap()
                .unwrap();
            assert_eq!(p.total, 10);
            got.extend(p.data);
        }
        assert_eq!(got, bytes);
        assert!(
            b.bundle_piece(task.n, 10, 3)
                .unwrap()
                .unwrap()
                .data
                .is_empty()
        );
    }

    #[test]
    fn uploads_are_bounded_and_a_bad_checksum_discards_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let mut big = chunk("CC-1", None, 0, b"");
        big.size = Some(1001);
        let e = b.put_blob_chunk(&big, &limits()).unwrap_err().to_string();
        assert!(e.contains("up to 1000 bytes"), "{e}");
        let one = b
            .put_blob_chunk(&chunk("CC-1", None, 0, b"ab"), &limits())
            .unwrap();
        b.put_blob_chunk(&chunk("CC-1", None, 0, b"ab"), &limits())
            .unwrap();
        let e = b
            .put_blob_chunk(&chunk("CC-1", None, 0, b"ab"), &limits())
            .unwrap_err();
        assert!(e.to_string().contains("unattached uploads"), "{e}");
        let mut wrong = chunk("CC-1", Some(one.blob), 2, b"cdefghij");
        wrong.last = true;
        wrong.sha256 = Some("00".repeat(32));
        let e = b.put_blob_chunk(&wrong, &limits()).unwrap_err().to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
        let chunks: i64 = b
            .conn
            .query_row(
                "SELECT count(*) FROM blob_chunks WHERE blob = ?1",
                [one.blob as i64],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(chunks, 0, "discarded");
        // An hour later the unattached one is gone and the session may upload again.
        let mut later = chunk("CC-1", None, 0, b"ab");
        later.now += 3_600_001;
        b.put_blob_chunk(&later, &limits()).unwrap();
    }

    #[test]
    fn tasks_survive_a_reopen_and_the_schema_upgrades_an_old_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A store as an older hub left it: no task tables.
            let conn = Connection::open(dir.path().join(super::super::DB_FILE)).unwrap();
            conn.execute_batch(super::super::SCHEMA).unwrap();
        }
        let mut b = open(dir.path());
        let n = b
            .create_task(&new_task("CC-1", "CC-2"), &offline)
            .unwrap()
            .task
            .n;
        b.move_task(&mv("CC-2", n, TaskAction::Claim, None), &offline)
            .unwrap();
        drop(b);
        let mut b = open(dir.path());
        let t = b.task(n).unwrap().unwrap();
        assert_eq!(
            (t.state, t.holder.as_deref()),
            (TaskState::Working, Some("CC-2"))
        );
        assert_eq!(b.task_events(n, 10).unwrap().0.len(), 2);
        assert!(b.tasks().is_some());
    }

    #[test]
    fn reserved_ids_are_the_reservers_and_never_given_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let r = b.reserve_task("CC-1", 0, 2, 1000).unwrap();
        assert_eq!(r, 1);
        assert_eq!(
            b.create_task(&new_task("CC-3", "CC-2"), &offline)
                .unwrap()
                .task
                .n,
            2
        );
        let mut theirs = new_task("CC-3", "CC-2");
        theirs.reserved = Some(r);
        assert!(b.create_task(&theirs, &offline).is_err(), "not CC-3's");
        let mut mine = new_task("CC-1", "CC-2");
        mine.reserved = Some(r);
        assert_eq!(b.create_task(&mine, &offline).unwrap().task.n, 1);
        assert!(b.create_task(&mine, &offline).is_err(), "used once");
        b.reserve_task("CC-1", 0, 2, 1000).unwrap();
        b.reserve_task("CC-1", 0, 2, 1000).unwrap();
        assert!(b.reserve_task("CC-1", 0, 2, 1000).is_err(), "bounded");
        // Lapsed reservations free the slot, but their numbers are not reused.
        assert_eq!(b.reserve_task("CC-1", 5000, 2, 1000).unwrap(), 5);
    }
}
