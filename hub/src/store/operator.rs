//! What the operator's views ask the store: the console's recent traffic, one message body
//! when the viewer opens it, unread counts per session, and whether the store can still write
//! (for `/healthz`). A [`Backend`](super::Backend) offers these through
//! [`Backend::operator`](super::Backend::operator); one that does not (None) gets a console
//! without traffic and a health check that trusts it.
//!
//! These reads see every session's mail: they are only reachable through the operator's
//! endpoints (docs/SECURITY.md, "The console, metrics and tail").

use super::{StoreError, StoredMessage};

/// One stored message as the console's flow shows it: who, to whom, when, how big, how far it
/// got — never the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Traffic {
    /// Hub-wide sequence number.
    pub seq: u64,
    /// Unix milliseconds.
    pub ts: i64,
    /// Sender.
    pub from: String,
    /// Recipient id, or `all`.
    pub to: String,
    /// Body size in bytes.
    pub bytes: u64,
    /// When a live connection of the recipient first took it (for a broadcast: of anyone).
    pub delivered_at: Option<i64>,
    /// When it was first read.
    pub read_at: Option<i64>,
    /// For broadcasts: how many sessions have read it.
    pub read_by: Option<u32>,
}

/// The operator's queries (see the module header).
pub(crate) trait OperatorView {
    /// The most recent `limit` messages, oldest first.
    fn traffic(&mut self, limit: usize) -> Result<Vec<Traffic>, StoreError>;
    /// One message with its body.
    fn message(&mut self, seq: u64) -> Result<Option<StoredMessage>, StoreError>;
    /// The unread count of each of `ids`, in order.
    fn unread_counts(&mut self, ids: &[String]) -> Result<Vec<u64>, StoreError>;
    /// Writes something small and durable-path (a row in the store's own bookkeeping) to find
    /// out whether the store can still write: a full disk, a file-size limit or a read-only
    /// file system fail here as they would fail the next send.
    fn probe_write(&mut self, now: i64) -> Result<(), StoreError>;
}
