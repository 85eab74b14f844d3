//! The SQLite backend's answers to the operator's views (see `store::operator`).

use rusqlite::OptionalExtension;

use super::{MESSAGE_COLUMNS, SqliteBackend, row_message, set_meta};
use crate::store::{
    StoreError, StoredMessage,
    operator::{OperatorView, Traffic},
};

impl OperatorView for SqliteBackend {
    fn traffic(&mut self, limit: usize) -> Result<Vec<Traffic>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, ts, sender, recipient, length(CAST(content AS BLOB)), delivered_at,
                    coalesce(read_at, CASE WHEN recipient = 'all'
                         THEN (SELECT min(at) FROM reads r WHERE r.seq = m.seq) END),
                    CASE WHEN recipient = 'all'
                         THEN (SELECT count(*) FROM reads r WHERE r.seq = m.seq) END
             FROM messages m ORDER BY seq DESC LIMIT ?1",
        )?;
        let mut rows: Vec<Traffic> = stmt
            .query_map([limit as i64], |r| {
                Ok(Traffic {
                    seq: r.get::<_, i64>(0)? as u64,
                    ts: r.get(1)?,
                    from: r.get(2)?,
                    to: r.get(3)?,
                    bytes: r.get::<_, i64>(4)? as u64,
                    delivered_at: r.get(5)?,
                    read_at: r.get(6)?,
                    read_by: r.get::<_, Option<i64>>(7)?.map(|n| n as u32),
                })
            })?
            .collect::<Result<_, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    fn message(&mut self, seq: u64) -> Result<Option<StoredMessage>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE seq = ?1"
            ))?
            .query_row([seq as i64], row_message)
            .optional()?)
    }

    fn unread_counts(&mut self, ids: &[String]) -> Result<Vec<u64>, StoreError> {
        ids.iter().map(|id| self.count_unread(id, None)).collect()
    }

    fn probe_write(&mut self, now: i64) -> Result<(), StoreError> {
        // A damaged store refuses every write, this one too.
        self.writable()?;
        set_meta(&self.conn, "health_probe", &now.to_string())?;
        Ok(())
    }
}
