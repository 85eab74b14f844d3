//! Postings: which messages each party sent and was sent, kept in runs instead of two
//! per-message indexes (docs/STORAGE.md, "Postings").
//!
//! A message used to cost three b-tree inserts (the row, `messages_by_recipient`,
//! `messages_by_sender`), each touching its own pages in every group commit; the two index
//! inserts were a third of the hub's CPU per delivery (docs/BENCHMARKS.md, "Postings").
//! Here the newest messages' `(party, role, seq)` live in memory (the *tail*) and every
//! [`FLUSH_MESSAGES`] messages they are written as one row per party and role:
//! `postings(party, role, last_seq, first_seq, deltas)`, where `deltas` holds each seq as a
//! little-endian `u16` offset from `first_seq`. The tail is not lost with the process: at
//! open it is read back from `messages` after `meta.postings_upto`, the last seq written.
//!
//! Postings only narrow which rows a query reads: every query still states who may see a
//! row (`recipient = ?`, `sender = ?`) in SQL, so a stale or extra seq here (a pruned
//! message, say) is simply not matched.

use std::{collections::HashMap, rc::Rc};

use rusqlite::{Connection, OptionalExtension, params, types::Value};

use super::{get_meta, set_meta};
use crate::store::StoreError;

/// The table (in the store's `SCHEMA`).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS postings (
    party     TEXT NOT NULL,
    role      INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    deltas    BLOB NOT NULL,
    PRIMARY KEY (party, role, last_seq)
) WITHOUT ROWID;
";

/// Messages the tail holds before it is written out. Bound: the tail holds at most this
/// many plus one group commit (`store::actor::MAX_BATCH`) or one task move, unless writing
/// it fails (a full disk), when it is tried again each [`FLUSH_MESSAGES`] messages later.
pub(super) const FLUSH_MESSAGES: usize = 4096;

/// Candidate seqs handed to one query, at most; the first batch is [`FIRST_BATCH`] and each
/// next one four times larger, so a page of a few messages reads a few rows and a count over
/// a long history runs few statements.
const MAX_BATCH: usize = 4096;
const FIRST_BATCH: usize = 64;

/// Which side of a message a party is on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Role {
    /// The recipient (`all` for a broadcast).
    To = 0,
    /// The sender.
    From = 1,
}

/// Seqs after `meta.postings_upto`, per party, in ascending order: what the table does not
/// hold yet.
#[derive(Default)]
pub(super) struct Postings {
    to: HashMap<Box<str>, Vec<u64>>,
    from: HashMap<Box<str>, Vec<u64>>,
    /// Messages in the tail.
    len: usize,
    /// Rows wholly below this seq were deleted by [`Self::sweep`].
    swept_below: u64,
    /// The tail is not written out before it holds this many messages: [`FLUSH_MESSAGES`],
    /// and another [`FLUSH_MESSAGES`] after each failed write, so a full disk costs one
    /// attempt per flush's worth of mail, not one per commit.
    flush_at: usize,
    /// Why the store's postings cannot be read (a store of an older schema opened by an
    /// operator tool, which leaves the upgrade to the hub): every query refuses.
    absent: Option<&'static str>,
}

impl Postings {
    /// No postings yet (a new store, or one being upgraded).
    pub(super) fn new() -> Self {
        Self {
            flush_at: FLUSH_MESSAGES,
            ..Self::default()
        }
    }

    /// Postings that refuse every query, saying `why`.
    pub(super) fn absent(why: &'static str) -> Self {
        Self {
            absent: Some(why),
            ..Self::new()
        }
    }

    /// Reads `meta.postings_upto` and the tail after it back from `messages`. On a damaged
    /// store (`partial`), a read error ends the tail where it happened instead of failing:
    /// what was read is still served.
    pub(super) fn load(conn: &Connection, partial: bool) -> Result<Self, StoreError> {
        let mut p = Self::new();
        let read = (|| -> Result<(), StoreError> {
            let upto: i64 = get_meta(conn, "postings_upto")?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut stmt = conn.prepare(
                "SELECT seq, sender, recipient FROM messages WHERE seq > ?1 ORDER BY seq",
            )?;
            let mut rows = stmt.query([upto])?;
            while let Some(r) = rows.next()? {
                p.add_row(r)?;
            }
            Ok(())
        })();
        match read {
            Err(e) if !partial => Err(e),
            _ => Ok(p),
        }
    }

    /// Records a committed message read as `(seq, sender, recipient)`; returns its seq.
    pub(super) fn add_row(&mut self, r: &rusqlite::Row<'_>) -> Result<u64, StoreError> {
        let seq = r.get::<_, i64>(0)? as u64;
        let (from, to): (String, String) = (r.get(1)?, r.get(2)?);
        self.add(seq, &from, &to);
        Ok(seq)
    }

    /// Records a committed message.
    pub(super) fn add(&mut self, seq: u64, from: &str, to: &str) {
        for (map, party) in [(&mut self.from, from), (&mut self.to, to)] {
            match map.get_mut(party) {
                Some(v) => v.push(seq),
                None => {
                    map.insert(party.into(), vec![seq]);
                }
            }
        }
        self.len += 1;
    }

    /// True when the tail should be written out.
    pub(super) fn due(&self) -> bool {
        self.len >= self.flush_at
    }

    /// Writing the tail out failed: try again a flush's worth of mail later.
    pub(super) fn write_failed(&mut self) {
        self.flush_at = self.len + FLUSH_MESSAGES;
    }

    /// Writes the tail as rows inside `tx` and records `high` (the store's last seq, at
    /// least every seq in the tail) as written; [`Self::written`] follows the commit.
    pub(super) fn write(&self, tx: &Connection, high: u64) -> Result<(), StoreError> {
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO postings(party, role, last_seq, first_seq, deltas)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (role, map) in [(Role::To, &self.to), (Role::From, &self.from)] {
            for (party, seqs) in map {
                // One row per run whose offsets fit a u16.
                let mut rest = &seqs[..];
                while let Some(&first) = rest.first() {
                    let n = rest
                        .iter()
                        .position(|&s| s - first > u16::MAX as u64)
                        .unwrap_or(rest.len());
                    let (run, next) = rest.split_at(n);
                    let deltas: Vec<u8> = run
                        .iter()
                        .flat_map(|&s| ((s - first) as u16).to_le_bytes())
                        .collect();
                    let last = *run.last().expect("a run holds its first seq");
                    insert.execute(params![
                        &**party,
                        role as i64,
                        last as i64,
                        first as i64,
                        deltas
                    ])?;
                    rest = next;
                }
            }
        }
        set_meta(tx, "postings_upto", &high.to_string())
    }

    /// The rows [`Self::write`] made were committed.
    pub(super) fn written(&mut self) {
        self.to.clear();
        self.from.clear();
        self.len = 0;
        self.flush_at = FLUSH_MESSAGES;
    }

    /// Deletes rows whose every seq is below `min_live` (the oldest stored message), once
    /// the oldest has moved on by a flush's worth since the last sweep: a sweep reads the
    /// whole table, so it runs about once per [`FLUSH_MESSAGES`] messages pruned.
    pub(super) fn sweep(&mut self, tx: &Connection, min_live: u64) -> Result<(), StoreError> {
        if min_live < self.swept_below + FLUSH_MESSAGES as u64 {
            return Ok(());
        }
        tx.prepare_cached("DELETE FROM postings WHERE last_seq < ?1")?
            .execute([min_live as i64])?;
        self.swept_below = min_live;
        Ok(())
    }

    /// Hands `visit` the candidate seqs of `sources` (each a party and its role), merged
    /// and without repeats, `>= lo`, ascending or (`desc`) descending, in batches (a
    /// `rarray` parameter). `visit` answers whether it wants more.
    pub(super) fn batches(
        &self,
        conn: &Connection,
        sources: &[(&str, Role)],
        lo: u64,
        desc: bool,
        mut visit: impl FnMut(&Rc<Vec<Value>>) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        if let Some(why) = self.absent {
            return Err(StoreError::Corrupt {
                path: super::DB_FILE.into(),
                reason: why.into(),
            });
        }
        // Seqs are SQLite integers: nothing is stored above i64::MAX.
        let lo = lo.min(i64::MAX as u64);
        let mut cursors: Vec<Cursor<'_>> = sources
            .iter()
            .map(|&(party, role)| Cursor::new(self, party, role, lo, desc))
            .collect();
        let mut size = FIRST_BATCH;
        loop {
            let mut batch = Vec::with_capacity(size);
            while batch.len() < size {
                let mut best: Option<u64> = None;
                for c in cursors.iter_mut() {
                    if let Some(s) = c.peek(conn)? {
                        let better = match best {
                            None => true,
                            Some(b) => (s < b) != desc,
                        };
                        if better {
                            best = Some(s);
                        }
                    }
                }
                let Some(seq) = best else { break };
                for c in cursors.iter_mut() {
                    if c.peek(conn)? == Some(seq) {
                        c.buf.pop();
                    }
                }
                batch.push(Value::Integer(seq as i64));
            }
            if batch.is_empty() || !visit(&Rc::new(batch))? {
                return Ok(());
            }
            size = (size * 4).min(MAX_BATCH);
        }
    }
}

/// The first row of a party's role holding a seq `>= ?3`. (Statements of this shape, a range
/// and an ORDER BY, are compiled again at every use unless the connection keeps its query
/// plans: see `SqliteBackend::init`, `SQLITE_DBCONFIG_ENABLE_QPSG`.)
pub(super) const ROW_FROM: &str = "SELECT first_seq, last_seq, deltas FROM postings
     WHERE party = ?1 AND role = ?2 AND last_seq >= ?3 ORDER BY last_seq LIMIT 1";
/// The last row of a party's role whose seqs are all `< ?3`.
pub(super) const ROW_BEFORE: &str = "SELECT first_seq, last_seq, deltas FROM postings
     WHERE party = ?1 AND role = ?2 AND last_seq < ?3 ORDER BY last_seq DESC LIMIT 1";

/// One source's seqs in order: a row of the table at a time, then (ascending) or first
/// (descending) the tail.
struct Cursor<'a> {
    postings: &'a Postings,
    party: &'a str,
    role: Role,
    lo: u64,
    desc: bool,
    /// The next seqs, the next one last (so `pop` takes it).
    buf: Vec<u64>,
    /// Ascending: the last row's `last_seq`; descending: its `first_seq`.
    bound: Option<i64>,
    rows_done: bool,
    tail_done: bool,
}

impl<'a> Cursor<'a> {
    fn new(postings: &'a Postings, party: &'a str, role: Role, lo: u64, desc: bool) -> Self {
        Self {
            postings,
            party,
            role,
            lo,
            desc,
            buf: Vec::new(),
            bound: None,
            rows_done: false,
            tail_done: false,
        }
    }

    fn peek(&mut self, conn: &Connection) -> Result<Option<u64>, StoreError> {
        while self.buf.is_empty() && !(self.rows_done && self.tail_done) {
            if (self.desc && !self.tail_done) || self.rows_done {
                self.take_tail();
            } else {
                self.next_row(conn)?;
            }
        }
        Ok(self.buf.last().copied())
    }

    fn take_tail(&mut self) {
        self.tail_done = true;
        let map = match self.role {
            Role::To => &self.postings.to,
            Role::From => &self.postings.from,
        };
        if let Some(seqs) = map.get(self.party) {
            self.buf.extend(seqs.iter().filter(|&&s| s >= self.lo));
            if !self.desc {
                self.buf.reverse();
            }
        }
    }

    fn next_row(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let row: Option<(i64, i64, Vec<u8>)> = if self.desc {
            conn.prepare_cached(ROW_BEFORE)?
                .query_row(
                    params![self.party, self.role as i64, self.bound.unwrap_or(i64::MAX)],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?
        } else {
            let from = self
                .bound
                .map_or(self.lo as i64, |b| b.saturating_add(1).max(self.lo as i64));
            conn.prepare_cached(ROW_FROM)?
                .query_row(params![self.party, self.role as i64, from], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?
        };
        let Some((first, last, deltas)) = row else {
            self.rows_done = true;
            return Ok(());
        };
        self.bound = Some(if self.desc { first } else { last });
        if self.desc && (last as u64) < self.lo {
            self.rows_done = true;
            return Ok(());
        }
        self.buf.extend(
            deltas
                .chunks_exact(2)
                .map(|d| first as u64 + u16::from_le_bytes([d[0], d[1]]) as u64)
                .filter(|&s| s >= self.lo),
        );
        if !self.desc {
            self.buf.reverse();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
             CREATE TABLE messages (seq INTEGER PRIMARY KEY, sender TEXT, recipient TEXT);",
        )
        .unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn
    }

    fn all(p: &Postings, conn: &Connection, src: &[(&str, Role)], lo: u64, desc: bool) -> Vec<u64> {
        let mut out = Vec::new();
        p.batches(conn, src, lo, desc, |b| {
            out.extend(b.iter().map(|v| match v {
                Value::Integer(i) => *i as u64,
                _ => unreachable!(),
            }));
            Ok(true)
        })
        .unwrap();
        out
    }

    #[test]
    fn runs_split_where_an_offset_outgrows_a_u16_and_merge_in_order_both_ways() {
        let conn = db();
        let mut p = Postings::new();
        // a → b every 7th seq across 200,000 seqs (several u16 runs), b → all in between.
        let mut expect_ab = Vec::new();
        for seq in 1..=200_000u64 {
            if seq % 7 == 0 {
                p.add(seq, "a", "b");
                expect_ab.push(seq);
            } else if seq % 1000 == 1 {
                p.add(seq, "b", "all");
            }
        }
        p.write(&conn, 200_000).unwrap();
        p.written();
        let runs: i64 = conn
            .query_row(
                "SELECT count(*) FROM postings WHERE party = 'a' AND role = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(runs >= 4, "{runs} runs for a span of 200,000 seqs");
        // Newer messages stay in the tail.
        p.add(200_003, "a", "b");
        expect_ab.push(200_003);
        assert_eq!(all(&p, &conn, &[("a", Role::From)], 1, false), expect_ab);
        assert_eq!(
            all(&p, &conn, &[("a", Role::From)], 150_000, false),
            expect_ab
                .iter()
                .copied()
                .filter(|&s| s >= 150_000)
                .collect::<Vec<_>>()
        );
        let mut desc = expect_ab.clone();
        desc.reverse();
        assert_eq!(all(&p, &conn, &[("a", Role::From)], 1, true), desc);
        // b's view: what it was sent and what it sent, once each, in order.
        let mut merged: Vec<u64> = (1..=200_000u64)
            .filter(|s| s % 7 == 0 || s % 1000 == 1)
            .collect();
        merged.push(200_003);
        let b = [("b", Role::To), ("b", Role::From), ("b", Role::To)];
        assert_eq!(all(&p, &conn, &b, 1, false), merged);
        assert!(all(&p, &conn, &[("nobody", Role::To)], 1, false).is_empty());
        // Sweeping drops only runs wholly below the oldest live message.
        p.sweep(&conn, 100_000).unwrap();
        let kept = all(&p, &conn, &[("a", Role::From)], 1, false);
        assert!(kept.iter().all(|&s| s >= 100_000 - u16::MAX as u64));
        assert!(kept.ends_with(&expect_ab[expect_ab.len() - 100..]));
    }
}
