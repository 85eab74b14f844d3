//! The approval half of the storage contract: permission prompts and the audit trail of
//! their verdicts (docs/STORAGE.md, "Approvals"; docs/SECURITY.md, "Approvals").
//!
//! A backend that keeps approvals returns an [`ApprovalStore`] from
//! [`Backend::approvals`](super::Backend::approvals); every call runs on the store actor
//! thread, and each change is one transaction that writes the prompt's new state and appends
//! its event to the trail — so a verdict that was acknowledged survives a crash, and a
//! prompt leaves `pending` exactly once (the first answer wins).

use relay_proto::wire_approvals::{ApprovalSource, ApprovalState, ApprovalView, approval_id};

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

/// A prompt as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApprovalRow {
    /// The number in its id (`A-n`).
    pub n: u64,
    /// What was filed.
    pub session: String,
    /// See [`NewApproval`].
    pub host: Option<String>,
    /// See [`NewApproval`].
    pub cwd: Option<String>,
    /// See [`NewApproval`].
    pub tool: String,
    /// See [`NewApproval`].
    pub summary: String,
    /// See [`NewApproval`].
    pub preview: String,
    /// See [`NewApproval`].
    pub truncated: bool,
    /// See [`NewApproval`].
    pub input_chars: Option<u64>,
    /// See [`NewApproval`].
    pub source: ApprovalSource,
    /// See [`NewApproval`].
    pub request_id: Option<String>,
    /// The state.
    pub state: ApprovalState,
    /// Unix ms.
    pub created: i64,
    /// Unix ms.
    pub expires: i64,
    /// When it left `pending`.
    pub decided: Option<i64>,
    /// Who moved it out of `pending`.
    pub by: Option<String>,
    /// From which address.
    pub from: Option<String>,
    /// The human's message.
    pub message: Option<String>,
}

impl ApprovalRow {
    /// The id (`A-n`).
    pub(crate) fn id(&self) -> String {
        approval_id(self.n)
    }

    /// The client-facing form.
    pub(crate) fn view(&self) -> ApprovalView {
        ApprovalView {
            id: self.id(),
            session: self.session.clone(),
            host: self.host.clone(),
            cwd: self.cwd.clone(),
            tool: self.tool.clone(),
            summary: self.summary.clone(),
            preview: self.preview.clone(),
            truncated: self.truncated,
            input_chars: self.input_chars,
            source: self.source,
            request_id: self.request_id.clone(),
            state: self.state,
            created: self.created,
            expires: self.expires,
            decided: self.decided,
            by: self.by.clone(),
            from: self.from.clone(),
            message: self.message.clone(),
        }
    }
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
