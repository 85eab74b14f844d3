//! The task half of the storage contract: tasks, their history, the mail every move sends,
//! and the blobs (git bundles) attached to them. See `docs/HANDOFF.md` and `docs/STORAGE.md`.
//!
//! A backend that stores tasks returns a [`TaskStore`] from [`Backend::tasks`]; every call
//! runs on the store actor thread. Each move is one transaction: read the task, let
//! [`crate::tasks::machine::decide`] rule on it, write the new state, append the event and
//! store the mail to the other party — so an acknowledged move survives a crash with its
//! mail, and a refused one changes nothing.
//!
//! [`Backend::tasks`]: super::Backend::tasks

use relay_proto::{
    time::iso,
    wire_tasks::{BundleInfo, TaskAction, TaskEvent, TaskState, TaskTag, TaskView, task_id},
};

use super::{StoreError, StoredMessage};

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskRow {
    /// The number in its id (`T-n`).
    pub n: u64,
    /// Creator.
    pub from: String,
    /// Addressee: a session id or `any`.
    pub to: String,
    /// Current holder.
    pub holder: Option<String>,
    /// One line.
    pub title: String,
    /// Markdown.
    pub brief: String,
    /// Checks that define done.
    pub acceptance: Vec<String>,
    /// State.
    pub state: TaskState,
    /// Unix ms.
    pub created: i64,
    /// Unix ms of the last move.
    pub updated: i64,
    /// Result or failure reason.
    pub result: Option<String>,
    /// Numbers of the tasks it follows up.
    pub refs: Vec<u64>,
    /// Git context JSON text, as the creator's bridge sent it.
    pub git: Option<String>,
    /// The attached bundle: (bytes, sha256 hex).
    pub bundle: Option<(u64, String)>,
}

impl TaskRow {
    /// The id (`T-n`).
    pub(crate) fn id(&self) -> String {
        task_id(self.n)
    }

    /// True when `viewer` may read the task: a party (creator, addressee, holder), or anyone
    /// while a task offered to `any` is unclaimed.
    pub(crate) fn visible_to(&self, viewer: &str) -> bool {
        viewer == self.from
            || viewer == self.to
            || self.holder.as_deref() == Some(viewer)
            || (self.to == relay_proto::wire_tasks::ANY && self.state == TaskState::Submitted)
    }

    /// The client-facing form; the brief only when `with_brief` (lists leave it out).
    pub(crate) fn view(&self, with_brief: bool) -> TaskView {
        TaskView {
            id: self.id(),
            from: self.from.clone(),
            to: self.to.clone(),
            holder: self.holder.clone(),
            title: self.title.clone(),
            brief: with_brief.then(|| self.brief.clone()),
            acceptance: self.acceptance.clone(),
            state: self.state,
            created: iso(self.created),
            updated: iso(self.updated),
            result: self.result.clone(),
            refs: self.refs.iter().map(|n| task_id(*n)).collect(),
            git: self
                .git
                .as_deref()
                .and_then(|g| serde_json::from_str(g).ok()),
            bundle: self.bundle.as_ref().map(|(bytes, sha)| BundleInfo {
                bytes: *bytes,
                sha256: sha.clone(),
            }),
            history: None,
            history_omitted: None,
        }
    }
}

/// A task about to be created (validated by the hub).
#[derive(Debug, Clone)]
pub(crate) struct NewTask {
    /// Creator.
    pub from: String,
    /// Addressee or `any`.
    pub to: String,
    /// One line.
    pub title: String,
    /// Markdown.
    pub brief: String,
    /// Checks.
    pub acceptance: Vec<String>,
    /// Numbers of earlier tasks (must exist).
    pub refs: Vec<u64>,
    /// Git context JSON text.
    pub git: Option<String>,
    /// A complete blob of the creator's to attach.
    pub blob: Option<u64>,
    /// A number the creator reserved (see [`TaskStore::reserve_task`]).
    pub reserved: Option<u64>,
    /// Idempotency key.
    pub key: Option<String>,
    /// Hub time.
    pub now: i64,
    /// Most non-terminal tasks one creator may have.
    pub max_open: u64,
}

/// A move on a task, as asked.
#[derive(Debug, Clone)]
pub(crate) struct Move {
    /// Who asks.
    pub actor: String,
    /// Task number.
    pub n: u64,
    /// The move.
    pub action: TaskAction,
    /// Note, question, answer or reason.
    pub note: Option<String>,
    /// Result (complete).
    pub result: Option<String>,
    /// Hub time.
    pub now: i64,
}

/// The mail a move stored, to route once the transaction is committed.
#[derive(Debug, Clone)]
pub(crate) struct TaskMail {
    /// The stored message.
    pub msg: StoredMessage,
    /// The `task` field of its `message` frame.
    pub tag: TaskTag,
    /// Whether its delivery was recorded with the insert (a live recipient was there).
    pub predicted: bool,
}

/// What a successful create or move did.
#[derive(Debug, Clone)]
pub(crate) struct Applied {
    /// The task after it.
    pub task: TaskRow,
    /// Its state before (None for a create).
    pub was: Option<TaskState>,
    /// The mail it sent (None for a repeated create: nothing new was stored).
    pub mail: Option<TaskMail>,
}

/// Why a task operation did nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TaskError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such task.
    #[error("no task {0}")]
    NotFound(String),
    /// The state machine (or a per-task bound) refused the move; the task is unchanged.
    #[error("{reason}")]
    Refused {
        /// Why, in words.
        reason: String,
        /// The task as it stands.
        task: Box<TaskRow>,
    },
    /// The request cannot be honoured (a bound, a bad blob, an unknown ref).
    #[error("{0}")]
    Invalid(String),
}

impl From<rusqlite::Error> for TaskError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(StoreError::Sqlite(e))
    }
}

/// Which tasks a list shows.
#[derive(Debug, Clone)]
pub(crate) struct ListQuery {
    /// Only tasks this session is party to (None: the operator view, every task).
    pub viewer: Option<String>,
    /// Only this state (None: every non-terminal state).
    pub state: Option<TaskState>,
    /// Only tasks numbered below this.
    pub before: Option<u64>,
    /// Page size.
    pub count: usize,
}

/// Bounds on blobs (see `docs/HANDOFF.md`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlobLimits {
    /// Largest blob (`--max-bundle-bytes`).
    pub max_bytes: u64,
    /// Unattached blobs one session may have at once.
    pub per_session: u64,
    /// Bytes of unattached blobs the whole hub holds at once.
    pub pending_total: u64,
    /// Bytes of attached bundles the whole hub keeps.
    pub attached_total: u64,
    /// Unattached blobs older than this (ms) are deleted.
    pub pending_ttl_ms: i64,
    /// Bundles of tasks finished longer ago than this (ms) are deleted.
    pub finished_ttl_ms: i64,
}

/// A chunk of a blob, decoded.
#[derive(Debug, Clone)]
pub(crate) struct BlobChunkIn {
    /// Uploading session.
    pub owner: String,
    /// Blob number; None to start one.
    pub blob: Option<u64>,
    /// Where the chunk starts.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// Declared whole size (first chunk).
    pub size: Option<u64>,
    /// Last chunk: check `sha256`.
    pub last: bool,
    /// SHA-256 of the whole blob, hex.
    pub sha256: Option<String>,
    /// Hub time.
    pub now: i64,
}

/// Where an upload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlobState {
    /// Blob number.
    pub blob: u64,
    /// Bytes stored.
    pub received: u64,
    /// False when the chunk was not at `received` and was not taken.
    pub accepted: bool,
    /// Checked and attachable.
    pub complete: bool,
}

/// A piece of an attached bundle.
#[derive(Debug, Clone)]
pub(crate) struct BundlePiece {
    /// The bytes from the asked offset (empty past the end).
    pub data: Vec<u8>,
    /// The bundle's size.
    pub total: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// Task storage (see the module docs). `deliverable(from, to)` says whether a live
/// connection would take mail from `from` to `to` right now (the router's answer), so the
/// delivery can be recorded with the insert like any message's.
pub(crate) trait TaskStore {
    /// Creates a task (or, for a key used before by the same creator, returns that task with
    /// no mail) and stores the offer as mail to the addressee (`all` for `any`).
    fn create_task(
        &mut self,
        new: &NewTask,
        deliverable: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Applied, TaskError>;
    /// Makes a move if the state machine allows it, with its event and mail, in one
    /// transaction; otherwise changes nothing and says why.
    fn move_task(
        &mut self,
        mv: &Move,
        deliverable: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Applied, TaskError>;
    /// One task.
    fn task(&mut self, n: u64) -> Result<Option<TaskRow>, StoreError>;
    /// The most recent `limit` events of a task, oldest first, and how many older ones were
    /// left out.
    fn task_events(&mut self, n: u64, limit: usize) -> Result<(Vec<TaskEvent>, u64), StoreError>;
    /// A page of tasks, newest first, and whether more follow.
    fn list_tasks(&mut self, q: &ListQuery) -> Result<(Vec<TaskRow>, bool), StoreError>;
    /// Stores one chunk of an upload.
    fn put_blob_chunk(
        &mut self,
        chunk: &BlobChunkIn,
        limits: &BlobLimits,
    ) -> Result<BlobState, TaskError>;
    /// Up to `max` bytes of task `n`'s bundle from `offset`; None when it has none.
    fn bundle_piece(
        &mut self,
        n: u64,
        offset: u64,
        max: usize,
    ) -> Result<Option<BundlePiece>, StoreError>;
    /// Reserves the next task number for `owner` (at most `max` outstanding per session;
    /// reservations older than `ttl_ms` lapse). Numbers are never given out twice.
    fn reserve_task(
        &mut self,
        owner: &str,
        now: i64,
        max: u64,
        ttl_ms: i64,
    ) -> Result<u64, TaskError>;
    /// The task tags of those of `seqs` that are task mail.
    fn task_tags(&mut self, seqs: &[u64]) -> Result<Vec<(u64, TaskTag)>, StoreError>;
    /// How many tasks are in each state (the `relay_tasks` gauge starts from this; see
    /// `crate::metrics`).
    fn count_by_state(&mut self) -> Result<Vec<(TaskState, u64)>, StoreError>;
    /// The operator's board (the console): up to `open` open tasks and up to `finished`
    /// finished ones, each newest first — without brief, acceptance, result or git context,
    /// which the board does not show.
    fn board(&mut self, open: usize, finished: usize) -> Result<Vec<TaskRow>, StoreError>;
}
