//! The message store: the seam between the hub and whatever keeps messages durable.
//!
//! [`Backend`] is the storage contract (plain synchronous calls, one owner at a time): the
//! embedded SQLite store implements it today, a distributed log can implement it later.
//! The hub never calls a backend directly: [`StoreHandle`] sends requests to an actor thread
//! that owns the backend, so the async hub never blocks on disk, and the actor group-commits
//! concurrent sends into one transaction (see [`actor`]).

pub(crate) mod actor;
pub(crate) mod approvals;
pub(crate) mod checkpoint;
pub(crate) mod datadir;
mod local;
pub(crate) mod operator;
pub(crate) mod search;
pub(crate) mod sqlite;
pub(crate) mod tasks;

use std::sync::Arc;

use arc_swap::ArcSwap;

use relay_proto::wire::{Envelope, SendState};
use tokio::sync::{mpsc, oneshot};

use crate::config::Retention;
pub(crate) use actor::{Append, CommitSink, Committed};
pub use local::LocalStore;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory could not be created or read.
    #[error("store directory {path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another process (another hub) holds the data directory's lock.
    #[error("the data directory {dir} is in use by another hub ({})", match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_string(),
    })]
    Locked {
        /// The directory.
        dir: String,
        /// The holder's pid, as it wrote it into the lock file.
        pid: Option<u32>,
    },
    /// The integrity check at open found the file damaged: writes are refused so that
    /// nothing more is acknowledged into it (reads of what is intact still work).
    #[error(
        "store file {path} is damaged ({report}); the hub refuses to store anything in it — \
         see docs/STORAGE.md, \"A damaged store\""
    )]
    Damaged {
        /// The file.
        path: String,
        /// What the check said (its first lines).
        report: String,
    },
    /// As many searches as the index thread queues are waiting already.
    #[error("the search index is busy ({0} searches waiting); try again in a moment")]
    SearchBusy(usize),
    /// The actor is gone (the hub is shutting down).
    #[error("store is shut down")]
    Closed,
    /// The store file exists but is not ours or is damaged.
    #[error("store file {path} is unusable: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// What the integrity check at open (`PRAGMA quick_check`) found. Kept on the
/// [`StoreHandle`] so that a health endpoint can report it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Integrity {
    /// The check passed (or the backend has nothing to check).
    #[default]
    Ok,
    /// The file is damaged: the store is read-only. The report is what the check said.
    Damaged(String),
}

/// A message about to be stored.
#[derive(Debug, Clone)]
pub(crate) struct NewMessage {
    /// Sender id (already validated, set by the hub from the connection's registration).
    pub from: Arc<str>,
    /// Recipient id or `all`.
    pub to: Arc<str>,
    /// The text.
    pub content: String,
    /// Hub time in Unix milliseconds.
    pub ts: i64,
    /// The sender's idempotency key, if it gave one.
    pub key: Option<String>,
    /// The message it answers and that message's thread root (checked visible to the
    /// sender before it was queued; see `docs/PROTOCOL.md`, `replyTo`).
    pub reply: Option<Reply>,
    /// Set (by the store actor, just before the commit) when a live connection of the
    /// recipient is there to take it: recording the delivery with the insert saves an
    /// `UPDATE` per message. The router takes it back in the rare case the push fails.
    pub delivered_at: Option<i64>,
}

/// Where a reply sits: the message it answers and the root of that message's thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The answered message's sequence number.
    pub to: u64,
    /// The thread's root (the answered message's thread, or the answered message itself).
    pub thread: u64,
}

/// What `append` did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Appended {
    /// Stored under this sequence number.
    New(u64),
    /// Its key matched an earlier message of the same sender, to the same recipient with
    /// the same content (a resend); nothing was stored.
    Duplicate {
        /// The original's sequence number.
        seq: u64,
        /// Whether the original was delivered to a live connection.
        delivered: bool,
    },
    /// Its key matched an earlier message of the same sender with another recipient or
    /// other content: the key was reused for a different message. Nothing was stored; the
    /// sender must hear that this message was not sent (see `docs/PROTOCOL.md`, `key`).
    KeyConflict {
        /// The earlier message's sequence number.
        seq: u64,
    },
}

impl Appended {
    /// The sequence number of the stored (or original) message.
    pub(crate) fn seq(self) -> u64 {
        match self {
            Appended::New(s)
            | Appended::Duplicate { seq: s, .. }
            | Appended::KeyConflict { seq: s } => s,
        }
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredMessage {
    /// Hub-wide sequence number.
    pub seq: u64,
    /// Unix milliseconds.
    pub ts: i64,
    /// Sender id.
    pub from: Arc<str>,
    /// Recipient id or `all`.
    pub to: Arc<str>,
    /// The text.
    pub content: String,
    /// The message it answers and its thread, if it answers one.
    pub reply: Option<Reply>,
}

impl StoredMessage {
    /// The client-facing form, consuming the message (no copy of the content).
    pub(crate) fn into_envelope(self, epoch: &str) -> Envelope {
        Envelope {
            id: message_id(epoch, self.seq),
            from: self.from.to_string(),
            to: self.to.to_string(),
            content: self.content,
            timestamp: relay_proto::time::iso(self.ts),
            seq: self.seq,
            task: None,
            reply_to: self.reply.map(|r| message_id(epoch, r.to)),
            thread: self.reply.map(|r| message_id(epoch, r.thread)),
        }
    }

    /// The client-facing form, copying the content (task mail keeps its stored message).
    /// Ids are `<epoch>-<seq>`, unique across store resets.
    pub(crate) fn envelope(&self, epoch: &str) -> Envelope {
        self.clone().into_envelope(epoch)
    }
}

/// Bytes a message adds to a reply frame (`history`, `inbox`): its content as JSON escapes
/// it, plus sender, recipient and the fixed fields. Pages are bounded by this, not by raw
/// content bytes: a body of control characters grows sixfold when escaped, and a page that
/// held 4 MiB of them raw would be a 24 MiB frame, past what clients accept (16 MiB).
pub(crate) fn wire_len(m: &StoredMessage) -> usize {
    /// `{"id":"<epoch>-<seq>","from":"","to":"","content":"","timestamp":"…","seq":N},`
    const FIXED: usize = 128;
    /// `"replyTo":"<epoch>-<seq>","thread":"<epoch>-<seq>",` at their longest.
    const REPLY: usize = 96;
    FIXED + m.reply.map_or(0, |_| REPLY) + m.from.len() + m.to.len() + json_string_len(&m.content)
}

/// Length of `s` once serde_json has escaped it (without the quotes): `"` and `\` and the
/// short escapes (`\n`, `\t`, …) take two bytes, other C0 controls six (`\u001f`).
pub(crate) fn json_string_len(s: &str) -> usize {
    s.len()
        + s.bytes()
            .map(|b| match b {
                b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
                0..=0x1f => 5,
                _ => 0,
            })
            .sum::<usize>()
}

/// Formats a message id.
pub(crate) fn message_id(epoch: &str, seq: u64) -> String {
    format!("{epoch}-{seq}")
}

/// Parses a message id into its sequence number if it belongs to `epoch`.
pub(crate) fn parse_message_id(epoch: &str, id: &str) -> Option<u64> {
    let (e, seq) = id.rsplit_once('-')?;
    if e != epoch {
        return None;
    }
    seq.parse().ok()
}

/// Where a history page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    /// The most recent page (no cursor given).
    Latest,
    /// Messages with a sequence number above this.
    Seq(u64),
    /// Messages stored after this time (Unix ms).
    Time(i64),
}

/// A `get_history` request after validation.
#[derive(Debug, Clone)]
pub(crate) struct HistoryQuery {
    /// Only from this sender.
    pub from: Option<String>,
    /// Only to this recipient (`all` for broadcasts).
    pub to: Option<String>,
    /// Where to start.
    pub after: After,
    /// Leave out the viewer's own sends.
    pub inbound_only: bool,
    /// Only this thread (its root's seq): the root and every message whose thread it is.
    pub thread: Option<u64>,
    /// Page size in messages.
    pub count: usize,
    /// Page size in reply bytes, as [`wire_len`] counts them (at least one message is always
    /// returned).
    pub max_bytes: usize,
}

/// A page of history, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct HistoryPage {
    /// The messages.
    pub messages: Vec<StoredMessage>,
    /// More matching messages follow (paging forward only).
    pub more: bool,
}

/// A page of unread inbound mail, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct InboxPage {
    /// The messages.
    pub messages: Vec<StoredMessage>,
    /// Unread messages matching the same filter that were not returned.
    pub remaining: u64,
}

/// What the store knows about a session.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionRecord {
    /// The id.
    pub id: String,
    /// Metadata JSON object from its last registration.
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// Length of that metadata as stored (JSON text): what it adds to a reply, without
    /// serializing it again to find out.
    pub meta_bytes: usize,
    /// When it was last connected (Unix ms).
    pub last_seen: i64,
    /// When its last connection registered (Unix ms).
    pub connected_at: Option<i64>,
}

/// What a prune pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PruneReport {
    /// Messages deleted for age.
    pub expired: u64,
    /// Messages deleted to get under the size cap.
    pub evicted: u64,
    /// True when the pass stopped at its budget and there is more to do.
    pub more: bool,
}

/// The storage contract. One owner calls it at a time (the actor thread).
pub(crate) trait Backend: Send {
    /// The store's epoch: a random id made when the store was created.
    fn epoch(&self) -> &str;
    /// What the integrity check at open found; a damaged store refuses every write.
    fn integrity(&self) -> Integrity {
        Integrity::Ok
    }
    /// Task storage (see [`tasks`]); None for a backend that keeps no tasks (the hub then
    /// answers task frames with `unavailable`).
    fn tasks(&mut self) -> Option<&mut dyn tasks::TaskStore> {
        None
    }
    /// Approval storage (see [`approvals`]); None for a backend that keeps none (the hub
    /// then answers approval frames with `unavailable`).
    fn approvals(&mut self) -> Option<&mut dyn approvals::ApprovalStore> {
        None
    }
    /// Stores `batch` in one transaction and applies delivery fixes (see
    /// [`mark_delivered`](Self::mark_delivered)) in the same transaction. Returns what
    /// happened to each message, in order (a message whose key matches an earlier one of the
    /// same sender is not stored again).
    fn append(
        &mut self,
        batch: &[&NewMessage],
        delivered: &[(u64, Option<i64>)],
    ) -> Result<Vec<Appended>, StoreError>;
    /// Checks that the store's file is still the one that was opened. If it was deleted or
    /// replaced (the data directory wiped under a running hub), reopens a fresh store — with
    /// a new epoch — and returns true.
    fn verify(&mut self) -> Result<bool, StoreError>;
    /// `(seq, Some(when))`: a live connection took the message (the first time wins);
    /// `(seq, None)`: a delivery recorded at insert did not happen after all.
    fn mark_delivered(&mut self, delivered: &[(u64, Option<i64>)]) -> Result<(), StoreError>;
    /// Housekeeping the actor runs between batches, after the last one was routed (the
    /// SQLite backend finishes a WAL checkpoint here when the WAL has grown too large).
    fn maintain(&mut self) {}
    /// Lets the writes of the calls that follow wait for one later commit, until
    /// [`settle`](Self::settle): the actor's answer to a storm of registrations, each of
    /// which would otherwise commit its session row alone (see [`Request::Deferred`]). A
    /// backend that cannot defer writes commits each as before.
    fn defer_commits(&mut self) {}
    /// Commits what [`defer_commits`](Self::defer_commits) let wait, if anything. On an
    /// error those writes are rolled back (they are bookkeeping: see [`Request::Deferred`]).
    fn settle(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// The thread root of message `seq` if `viewer` may see it (its own send, mail to it, a
    /// broadcast); None when the message is unknown or not the viewer's to see: a reply to
    /// it must be refused without saying which.
    fn thread_of(&mut self, viewer: &str, seq: u64) -> Result<Option<u64>, StoreError>;
    /// History visible to `viewer`: its own sends, mail to it, and broadcasts.
    fn history(&mut self, viewer: &str, q: &HistoryQuery) -> Result<HistoryPage, StoreError>;
    /// The oldest unread inbound messages of `viewer`, optionally only `from` one sender;
    /// the page stops before `max_bytes` of reply (as [`wire_len`] counts), but always holds
    /// at least one message.
    fn inbox(
        &mut self,
        viewer: &str,
        from: Option<&str>,
        count: usize,
        max_bytes: usize,
    ) -> Result<InboxPage, StoreError>;
    /// Marks messages read for `viewer` (only ones visible and inbound to it). Returns
    /// (newly marked, unread left).
    fn mark_read(&mut self, viewer: &str, seqs: &[u64], now: i64)
    -> Result<(u64, u64), StoreError>;
    /// Unread inbound messages of `viewer`.
    fn unread_count(&mut self, viewer: &str) -> Result<u64, StoreError>;
    /// A session registered: remember it and its metadata. Returns its unread count.
    fn session_registered(&mut self, id: &str, meta: &str, now: i64) -> Result<u64, StoreError>;
    /// A session's connection ended.
    fn session_left(&mut self, id: &str, now: i64) -> Result<(), StoreError>;
    /// The session `id`, if the store knows it.
    fn session(&mut self, id: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Up to `limit` sessions, most recently seen first (then by id, descending), strictly
    /// after the position `after` = (last seen, id) in that order.
    fn sessions_by_recency(
        &mut self,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError>;
    /// How many sessions the store knows.
    fn session_count(&mut self) -> Result<u64, StoreError>;
    /// Forgets `id`: its session record, its ownership and its broadcast read marks (mail
    /// addressed to it stays). Returns whether there was anything to forget.
    fn forget_session(&mut self, id: &str) -> Result<bool, StoreError>;
    /// Forgets `id` (as [`forget_session`](Self::forget_session)) unless direct mail to it
    /// is waiting unread. Returns whether it was forgotten.
    fn forget_if_idle(&mut self, id: &str) -> Result<bool, StoreError>;
    /// Keeps at most `max` sessions: forgets the least recently seen ones for which `spare`
    /// (the router's "online now") is false, keeping their ownership. Returns how many went.
    fn trim_sessions(
        &mut self,
        max: usize,
        spare: &dyn Fn(&str) -> bool,
    ) -> Result<u64, StoreError>;
    /// The most recent sends of `sender`, newest first, with delivery state.
    fn recent_sends(&mut self, sender: &str, limit: usize) -> Result<Vec<SendState>, StoreError>;
    /// The stored hash of `id`'s owner secret, if the name is owned.
    fn owner_hash(&mut self, id: &str) -> Result<Option<String>, StoreError>;
    /// Makes `id` owned by whoever holds the secret with this hash.
    fn set_owner(&mut self, id: &str, secret_hash: &str, now: i64) -> Result<(), StoreError>;
    /// Frees `id`: it has no owner any more. Returns whether it had one.
    fn release_owner(&mut self, id: &str) -> Result<bool, StoreError>;
    /// Distinct senders of `viewer`'s unread mail, oldest first, at most `limit`.
    fn unread_senders(&mut self, viewer: &str, limit: usize) -> Result<Vec<String>, StoreError>;
    /// The operator's views (console, `/healthz`), if this backend answers them.
    fn operator(&mut self) -> Option<&mut dyn operator::OperatorView> {
        None
    }
    /// Deletes what the retention policy says must go, at most `budget` messages per call.
    fn prune(
        &mut self,
        policy: &Retention,
        now: i64,
        budget: usize,
    ) -> Result<PruneReport, StoreError>;
}

/// A query run on the actor thread (see [`StoreHandle::call`]).
pub(crate) type Job = Box<dyn FnOnce(&mut dyn Backend) + Send>;

/// Why [`StoreHandle::try_append`] did not queue a message.
pub(crate) enum TryAppend {
    /// The queue is full: here is the message, to wait with ([`StoreHandle::append`]).
    Full(Append),
    /// The actor is gone: here is the message, to answer its sender.
    Closed(Append),
}

/// A request to the store actor.
pub(crate) enum Request {
    /// Store a message, then route it and ack its sender (see [`CommitSink`]).
    Append(Append),
    /// Run a closure against the backend after every earlier append is committed.
    Call(Job),
    /// Like `Call`, but its writes may wait up to [`actor::DEFER_FOR`] for one commit shared
    /// with the deferred calls around it (a registration's session row and delivery marks,
    /// a leaving session's last-seen time and the table's trim: bookkeeping that nothing
    /// acked depends on). Anything else the actor runs — an append,
    /// a call — commits them first, so no reader and no later message ever sees the store
    /// without them. A hub killed in that window loses only what those rows said last: a
    /// session first seen then counts as first seen after the restart, and no message
    /// stored after its registration can be missing for it, since storing one commits the
    /// rows first (docs/STORAGE.md, "Registrations"). A call that hands out something it
    /// wrote (an owner secret) settles before it answers.
    Deferred(Job),
}

/// The hub's handle to the store actor. Cheap to clone.
#[derive(Clone)]
pub(crate) struct StoreHandle {
    tx: mpsc::Sender<Request>,
    /// Updated by the actor when the store is reopened after a reset.
    epoch: Arc<ArcSwap<String>>,
    /// The open store's integrity (updated with the epoch).
    integrity: Arc<ArcSwap<Integrity>>,
}

impl StoreHandle {
    /// The store's current epoch (a lock-free read: every connection asks on its hot path,
    /// the actor replaces it only when the store is reset).
    pub(crate) fn epoch(&self) -> Arc<String> {
        self.epoch.load_full()
    }

    /// What the integrity check found when the store was opened (for `/healthz`).
    pub(crate) fn integrity(&self) -> Integrity {
        Integrity::clone(&self.integrity.load())
    }

    /// Queues a message for storing. Waits only while the actor's queue is full
    /// (backpressure); the sender is acked by the [`CommitSink`] after the commit.
    pub(crate) async fn append(&self, append: Append) -> Result<(), StoreError> {
        self.tx
            .send(Request::Append(append))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Queues a message if the actor's queue has room now, as [`append`](Self::append)
    /// would, and gives it back when the queue is full: the reader's way to handle a
    /// message without building a future for it (`ConnSession::now`). The message comes
    /// back by value, as tokio's own `TrySendError` carries it: boxing it would allocate
    /// for every message that waits.
    #[allow(clippy::result_large_err)]
    pub(crate) fn try_append(&self, append: Append) -> Result<(), TryAppend> {
        use mpsc::error::TrySendError;
        self.tx
            .try_send(Request::Append(append))
            .map_err(|e| match e {
                TrySendError::Full(Request::Append(a)) => TryAppend::Full(a),
                TrySendError::Closed(Request::Append(a)) => TryAppend::Closed(a),
                _ => unreachable!("what was sent is an append"),
            })
    }

    /// Runs `f` on the actor thread, after everything queued before it, and returns its result.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Backend) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.run(f, Request::Call).await
    }

    /// Like [`call`](Self::call), but what `f` writes may be committed a little later,
    /// together with the writes of the deferred calls around it ([`Request::Deferred`]).
    pub(crate) async fn call_deferred<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Backend) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.run(f, Request::Deferred).await
    }

    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Backend) -> Result<R, StoreError> + Send + 'static,
        kind: fn(Job) -> Request,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(kind(Box::new(move |b| {
                let _ = tx.send(f(b));
            })))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Like [`call`](Self::call) but never waits for queue space: used from `Drop`-like paths
    /// (a connection ending) where waiting is not possible. Returns false if the queue is full.
    pub(crate) fn try_call(&self, f: impl FnOnce(&mut dyn Backend) + Send + 'static) -> bool {
        self.tx.try_send(Request::Call(Box::new(f))).is_ok()
    }

    /// [`try_call`](Self::try_call) whose writes may wait for a shared commit, as
    /// [`call_deferred`](Self::call_deferred)'s do.
    pub(crate) fn try_call_deferred(
        &self,
        f: impl FnOnce(&mut dyn Backend) + Send + 'static,
    ) -> bool {
        self.tx.try_send(Request::Deferred(Box::new(f))).is_ok()
    }
}
