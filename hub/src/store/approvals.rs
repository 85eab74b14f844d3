//! The approval half of the storage contract: permission prompts and the audit trail of
//! their verdicts (docs/STORAGE.md, "Approvals"; docs/SECURITY.md, "Approvals").
//!
//! A backend that keeps approvals returns an [`ApprovalStore`] from
//! [`Backend::approvals`](super::Backend::approvals); every call runs on the store actor
//! thread, and each change is one transaction that writes the prompt's new state and appends
//! its event to the trail — so a verdict that was acknowledged survives a crash, and a
//! prompt leaves `pending` exactly once (the first answer wins).

use relay_proto::wire_approvals::{ApprovalSource, ApprovalState, ApprovalView};

use super::StoreError;

/// A prompt about to be filed (already bounded by `crate::approvals`).
#[derive(Debug, Clone)]
pub(crate) struct NewApproval {
    /// The session asking.
    pub session: String,
    /// Its machine.
    pub host: Option<String>,
    /// Its working directory.
    pub cwd: Option<String>,
    /// The tool.
    pub tool: String,
    /// One readable line.
    pub summary: String,
    /// The bounded input preview.
    pub preview: String,
    /// Whether `preview` is not the whole input.
    pub truncated: bool,
    /// How long the whole input was, when known.
    pub input_chars: Option<u64>,
    /// Hook or channel.
    pub source: ApprovalSource,
    /// The channel's request id.
    pub request_id: Option<String>,
    /// Unix ms.
    pub created: i64,
    /// Unix ms.
    pub expires: i64,
}

/// A prompt as stored: its number (the order the hub filed prompts in, and what the expiry
/// and retention passes count by) and the form clients see, read straight from the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApprovalRow {
    /// The number in its id (`A-n`).
    pub n: u64,
    /// Everything else, as the wire carries it.
    pub view: ApprovalView,
}

/// A move out of `pending`, with who made it.
#[derive(Debug, Clone)]
pub(crate) struct Decision {
    /// `allowed`, `denied`, `expired` or `closed`.
    pub state: ApprovalState,
    /// Who: `console (login)`, `cli? (token)` (a claimed name, then how it proved itself), `hub`, the session…
    pub by: String,
    /// The address a human answered from.
    pub from: Option<String>,
    /// The human's message.
    pub message: Option<String>,
    /// Unix ms.
    pub at: i64,
}

/// What [`ApprovalStore::file`] did.
#[derive(Debug)]
pub(crate) enum Filed {
    /// Stored.
    New(Box<ApprovalRow>),
    /// The hub has this many pending prompts already.
    HubFull(usize),
}

/// What [`ApprovalStore::decide`] did.
#[derive(Debug)]
pub(crate) enum Decided {
    /// It was pending and now is not.
    Done(ApprovalRow),
    /// It had left `pending` already (the first answer won): unchanged.
    Already(ApprovalRow),
    /// No such prompt.
    NotFound,
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApprovalEvent {
    /// Unix ms.
    pub at: i64,
    /// The state it moved to (`pending` for the filing).
    pub state: ApprovalState,
    /// Who.
    pub by: String,
    /// From where.
    pub from: Option<String>,
    /// With what message.
    pub message: Option<String>,
}

/// The approval queries and moves (see the module header).
pub(crate) trait ApprovalStore {
    /// Files a prompt unless the hub has `total` pending ones already (the hub-wide bound of
    /// `crate::approvals`; the per-session and per-connection quotas are counted per filing
    /// connection there).
    fn file(&mut self, new: &NewApproval, total: usize) -> Result<Filed, StoreError>;
    /// Moves prompt `n` out of `pending`, if it still is.
    fn decide(&mut self, n: u64, d: &Decision) -> Result<Decided, StoreError>;
    /// One prompt.
    fn get(&mut self, n: u64) -> Result<Option<ApprovalRow>, StoreError>;
    /// Pending prompts (oldest first), then up to `recent` decided ones (newest first).
    fn list(&mut self, pending: usize, recent: usize) -> Result<Vec<ApprovalRow>, StoreError>;
    /// A prompt's audit trail, oldest first.
    fn events(&mut self, n: u64) -> Result<Vec<ApprovalEvent>, StoreError>;
    /// Closes every pending prompt (at start: nobody waits for them any more). Returns how
    /// many.
    fn close_all_pending(&mut self, at: i64) -> Result<u64, StoreError>;
    /// Deletes prompts no longer pending, with their trails, that are older than the newest
    /// `keep` such prompts or were decided before `before` (Unix ms) — at most `limit` in
    /// one call, oldest first. Returns how many went. A pending prompt is never deleted.
    fn prune(&mut self, keep: usize, before: i64, limit: usize) -> Result<usize, StoreError>;
}
