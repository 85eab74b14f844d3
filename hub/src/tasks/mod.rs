//! Typed task handoff (see `docs/HANDOFF.md`): one session offers a task to another (or to
//! `any`), exactly one claims it, its holder moves it to a terminal state, and every move is
//! mail to the other party.
//!
//! - [`machine`]: who may make which move from which state — one pure function.
//! - [`mail`]: who each move's mail goes to, what it says, and its `message` frame.
//! - [`handle`]: the task frames of a connection (validation, identity, store calls, replies).
//!
//! Every session's tasks are the hub operator's to read (`all`), decided like every
//! operator right by [`crate::operator`].
//!
//! Storage lives behind [`crate::store::tasks::TaskStore`]; the store applies each move in
//! one transaction with its mail, so a move the hub acknowledged survives a crash.
//!
//! Every bound is here, with why it exists (each is also in `docs/HANDOFF.md`).

pub(crate) mod handle;
pub(crate) mod machine;
pub(crate) mod mail;

use std::collections::HashMap;

use relay_proto::wire::{Envelope, TaskTag};

use crate::{
    HubState,
    store::{
        Backend, StoredMessage,
        tasks::{BlobLimits, TaskMail},
    },
};

/// Longest title, in characters: one line on a board.
pub(crate) const MAX_TITLE_CHARS: usize = 200;
/// Largest brief, in bytes: a brief points at files and commits, it does not carry them.
pub(crate) const MAX_BRIEF_BYTES: usize = 16 << 10;
/// Most acceptance checks, and the longest one in characters.
pub(crate) const MAX_ACCEPTANCE: usize = 20;
/// Longest acceptance check, in characters.
pub(crate) const MAX_ACCEPTANCE_CHARS: usize = 300;
/// Largest note (progress, question, answer, reason), in bytes.
pub(crate) const MAX_NOTE_BYTES: usize = 4 << 10;
/// Largest result, in bytes.
pub(crate) const MAX_RESULT_BYTES: usize = 16 << 10;
/// Most tasks one task refers to.
pub(crate) const MAX_REFS: usize = 10;
/// Largest git context (serialized JSON), in bytes.
pub(crate) const MAX_GIT_BYTES: usize = 64 << 10;
/// Most non-terminal tasks one creator may have: the table grows only as fast as work does.
pub(crate) const MAX_OPEN_PER_CREATOR: u64 = 200;
/// Most events one task keeps (further progress notes are refused; final moves still work).
pub(crate) const MAX_EVENTS: usize = 1000;
/// Default and largest page of `task_list`.
pub(crate) const DEFAULT_LIST: usize = 20;
/// Largest page of `task_list`.
pub(crate) const MAX_LIST: usize = 100;
/// Default and largest history of `task_get`.
pub(crate) const DEFAULT_HISTORY: usize = 20;
/// Largest history of `task_get`.
pub(crate) const MAX_HISTORY: usize = 200;
/// Largest chunk of one `blob_put`, decoded (its base64 is a third larger, well under the
/// frame limit).
pub(crate) const MAX_CHUNK_BYTES: usize = 256 << 10;
/// Bytes of one `bundle` reply, decoded.
pub(crate) const BUNDLE_PIECE_BYTES: usize = 192 << 10;
/// Unused reserved task ids one session may hold (a handoff reserves one before it records
/// the git state).
pub(crate) const RESERVED_PER_SESSION: u64 = 8;
/// A reserved id not used for this long lapses (its number is not given out again).
pub(crate) const RESERVATION_TTL_MS: i64 = 3_600_000;
/// Default `--max-bundle-bytes`.
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 16 << 20;
/// Unattached uploads one session may have at once.
pub(crate) const BLOBS_PER_SESSION: u64 = 2;
/// An upload never attached to a task is deleted after this long.
pub(crate) const BLOB_TTL_MS: i64 = 3_600_000;
/// The bundle of a task that finished this long ago is deleted (the task keeps its git
/// context and history).
pub(crate) const FINISHED_BUNDLE_TTL_MS: i64 = 7 * 86_400_000;

/// What the task handlers need besides the store.
#[derive(Debug, Clone)]
pub(crate) struct TaskConfig {
    /// Bounds on uploads.
    pub blobs: BlobLimits,
}

impl TaskConfig {
    /// The limits for a hub whose bundles may be `max_bundle` bytes.
    pub(crate) fn new(max_bundle: u64) -> Self {
        Self {
            blobs: BlobLimits {
                max_bytes: max_bundle,
                per_session: BLOBS_PER_SESSION,
                pending_total: max_bundle.saturating_mul(4),
                attached_total: max_bundle.saturating_mul(64),
                pending_ttl_ms: BLOB_TTL_MS,
                finished_ttl_ms: FINISHED_BUNDLE_TTL_MS,
            },
        }
    }
}

/// Pushes a move's committed mail to whoever it is for, like any routed message.
pub(crate) fn route(hub: &HubState, m: &TaskMail) {
    let frame = mail::frame(&hub.store.epoch(), &m.msg, &m.tag);
    hub.router.route_stored(&m.msg, &frame, m.predicted);
}

/// Stored messages in their client-facing form, with the `task` tag on task mail — for the
/// paths that read mail back from the store (the backlog after `register`, `receive`,
/// `get_history`). A failed tag lookup leaves the tags off rather than failing the read.
pub(crate) fn envelopes(b: &mut dyn Backend, msgs: Vec<StoredMessage>) -> Vec<Envelope> {
    let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
    let mut tags: HashMap<u64, TaskTag> = match b.tasks().map(|t| t.task_tags(&seqs)) {
        Some(Ok(tags)) => tags.into_iter().collect(),
        Some(Err(e)) => {
            tracing::warn!("task tags unavailable: {e}");
            HashMap::new()
        }
        None => HashMap::new(),
    };
    let epoch = b.epoch().to_string();
    msgs.into_iter()
        .map(|m| {
            let seq = m.seq;
            let mut e = m.into_envelope(&epoch);
            e.task = tags.remove(&seq);
            e
        })
        .collect()
}
