//! The task frames of the wire protocol: typed handoff between sessions (see
//! `docs/PROTOCOL.md`, "Tasks", and `docs/HANDOFF.md`).
//!
//! A task is created by one session for another (or for `any` session), claimed once, moved
//! by its holder, and ends in a terminal state that never changes. The hub decides every move;
//! these types only carry requests and answers. Every frame here is additive: a client that
//! does not know them never receives one unasked — task changes reach it as ordinary
//! `message` frames (with an extra `task` field it may ignore).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_with::skip_serializing_none;

use crate::wire::RequestId;

/// The `to` of a task offered to every session: the first one to claim it holds it.
pub const ANY: &str = "any";
/// Prefix of task ids (`T-42`): short, typeable, and valid in a git ref and a branch name.
pub const ID_PREFIX: &str = "T-";

/// Formats task number `n` as its id (`T-42`).
pub fn task_id(n: u64) -> String {
    format!("{ID_PREFIX}{n}")
}

/// Reads a task id as people type it: `T-42`, `t-42` or `42`. None for anything else.
pub fn parse_task_id(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s
        .strip_prefix(ID_PREFIX)
        .or_else(|| s.strip_prefix("t-"))
        .unwrap_or(s);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n > 0)
}

/// A task's state, with A2A's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    /// Offered, not claimed (again, after a release).
    Submitted,
    /// Claimed: its holder works on it.
    Working,
    /// The holder asked the creator a question and waits for the answer.
    InputRequired,
    /// Done, with a result. Terminal.
    Completed,
    /// Given up, with a reason. Terminal.
    Failed,
    /// Declined by its addressee. Terminal.
    Rejected,
    /// Withdrawn by its creator. Terminal.
    Canceled,
}

impl TaskState {
    /// Every state, in lifecycle order.
    pub const ALL: [TaskState; 7] = [
        Self::Submitted,
        Self::Working,
        Self::InputRequired,
        Self::Completed,
        Self::Failed,
        Self::Rejected,
        Self::Canceled,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submitted => "submitted",
            Self::Working => "working",
            Self::InputRequired => "input-required",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Canceled => "canceled",
        }
    }

    /// Reads a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s.trim())
    }

    /// Terminal states never change.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Rejected | Self::Canceled
        )
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A move on an existing task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskAction {
    /// An addressee takes the task (compare-and-set: exactly one claim wins).
    Claim,
    /// The holder reports progress (note); the state stays.
    Progress,
    /// The holder asks the creator a question (note): `input-required`.
    Ask,
    /// The creator answers the question (note): `working` again.
    Answer,
    /// The holder is done (result): `completed`.
    Complete,
    /// The holder gives up (note = reason): `failed`.
    Fail,
    /// The holder hands it back: `submitted` again, no holder.
    Release,
    /// The addressee will not do it: `rejected`.
    Decline,
    /// The creator withdraws it: `canceled`.
    Cancel,
}

impl TaskAction {
    /// Every action.
    pub const ALL: [TaskAction; 9] = [
        Self::Claim,
        Self::Progress,
        Self::Ask,
        Self::Answer,
        Self::Complete,
        Self::Fail,
        Self::Release,
        Self::Decline,
        Self::Cancel,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::Progress => "progress",
            Self::Ask => "ask",
            Self::Answer => "answer",
            Self::Complete => "complete",
            Self::Fail => "fail",
            Self::Release => "release",
            Self::Decline => "decline",
            Self::Cancel => "cancel",
        }
    }

    /// Reads a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s.trim())
    }
}

/// The `task` field of a `message` frame that reports a task change: which task, and the
/// state it is in now. Absent on ordinary messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskTag {
    /// Task id (`T-42`).
    pub id: String,
    /// Its state after the change.
    pub state: TaskState,
}

/// One entry of a task's append-only history.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// When (ISO-8601, hub time).
    pub at: String,
    /// The session that made the move.
    pub by: String,
    /// `create` or the action's name.
    pub action: String,
    /// The state after the move.
    pub state: TaskState,
    /// The note, question, answer, reason or result that came with it.
    pub note: Option<String>,
}

/// The git bundle attached to a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleInfo {
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

/// A task as the hub shows it to a party.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    /// `T-42`.
    pub id: String,
    /// The creator.
    pub from: String,
    /// The addressee: a session id, or `any`.
    pub to: String,
    /// Who holds it now (working or input-required); null otherwise.
    #[serialize_always]
    pub holder: Option<String>,
    /// One line.
    pub title: String,
    /// Markdown; omitted from lists (read one task for it).
    pub brief: Option<String>,
    /// Checks that define done.
    #[serde(default)]
    pub acceptance: Vec<String>,
    /// Where it stands.
    pub state: TaskState,
    /// When it was created (ISO-8601).
    pub created: String,
    /// When it last changed (ISO-8601).
    pub updated: String,
    /// The result (completed) or the reason (failed), when there is one.
    #[serde(default)]
    #[serialize_always]
    pub result: Option<String>,
    /// Ids of the tasks this one follows up.
    #[serde(default)]
    pub refs: Vec<String>,
    /// The git context the creator's bridge recorded (remote, branch, HEAD, dirty files…),
    /// as it recorded it; null when none was recorded.
    #[serde(default)]
    #[serialize_always]
    pub git: Option<Value>,
    /// The attached git bundle, if any (download it with `task_bundle`).
    #[serde(default)]
    #[serialize_always]
    pub bundle: Option<BundleInfo>,
    /// The most recent events, oldest first (only when one task is read).
    pub history: Option<Vec<TaskEvent>>,
    /// How many older events were left out of `history`.
    pub history_omitted: Option<u64>,
}

/// `task_create`: offer a task to `to` (a session id or `any`).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCreate {
    /// Addressee: a session id, or `any`.
    pub to: String,
    /// One line (≤ 200 characters).
    pub title: String,
    /// Markdown (≤ 16 KiB).
    pub brief: String,
    /// Checks that define done (≤ 20, each ≤ 300 characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acceptance: Vec<String>,
    /// Ids of earlier tasks this one follows up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<String>,
    /// Git context recorded by the creator's bridge (a JSON object, ≤ 64 KiB).
    pub git: Option<Value>,
    /// A complete blob this connection uploaded with `blob_put`, attached as the bundle.
    pub blob: Option<String>,
    /// An id this session reserved with `task_reserve` (its git snapshot is already kept
    /// under `refs/relay/tasks/<id>`); absent: the hub gives the next one.
    pub id: Option<String>,
    /// Idempotency key (≤ 128 bytes): creating again with the same key returns the task
    /// made the first time instead of a second one.
    pub key: Option<String>,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// `task_act`: make a move on a task.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAct {
    /// Task id.
    pub id: String,
    /// The move.
    pub action: TaskAction,
    /// Progress note, question, answer, reason (≤ 4 KiB).
    pub note: Option<String>,
    /// The result, for `complete` (≤ 16 KiB).
    pub result: Option<String>,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// Acting for a session from a connection that does not hold its name (the CLI): its id
/// and owner secret. Only for reading (`task_list`, `task_get`, `task_bundle`).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActAs {
    /// The session.
    pub client_id: Option<String>,
    /// Its owner secret (the name must be owned).
    pub owner_secret: Option<String>,
}

/// `task_list`: my open tasks (to me, held by me, from me), newest first; or, for the hub
/// operator, every session's.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskList {
    /// Only tasks in this state (default: every non-terminal state).
    pub state: Option<TaskState>,
    /// Page size (default 20, at most 100).
    pub count: Option<u32>,
    /// Only tasks older than this id (the page cursor).
    pub before: Option<String>,
    /// The operator view: every task of every session. Only for a connection that is the
    /// hub's operator (it showed the hub token; on a hub without one, a loopback client).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// For a connection that holds no name.
    #[serde(flatten)]
    pub act_as: ActAs,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// `task_get`: one task with its recent history.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskGet {
    /// Task id.
    pub id: String,
    /// Most events to return (default 20, at most 200), newest kept.
    pub history: Option<u32>,
    /// Read it as the hub's operator (any task, whoever's): only for a connection that is the
    /// operator, like `task_list`'s `all`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// For a connection that holds no name.
    #[serde(flatten)]
    pub act_as: ActAs,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// `blob_put`: one chunk of a blob (a git bundle) this session uploads before
/// `task_create` attaches it. Chunks must arrive in order: `offset` is the number of bytes
/// the hub already has (a wrong one is answered with the right one, so an upload resumes).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobPut {
    /// The blob to append to; absent on the first chunk (the hub makes one).
    pub blob: Option<String>,
    /// Where this chunk starts.
    pub offset: u64,
    /// The chunk, base64 (≤ 256 KiB of bytes per frame).
    pub data: String,
    /// The blob's whole size, declared on the first chunk (checked against the hub's cap
    /// before anything is stored).
    pub size: Option<u64>,
    /// True on the last chunk: the hub checks `sha256` and the blob becomes attachable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last: bool,
    /// SHA-256 of the whole blob, hex (required with `last`).
    pub sha256: Option<String>,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// `task_reserve`: the id the next task of this session will have, so its git snapshot can
/// be named after it before the task exists (reservations expire after an hour).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReserve {
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// `task_reserved`: reply to `task_reserve`.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReserved {
    /// The reserved id; pass it as `id` on `task_create`.
    pub id: String,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// `task_bundle`: a chunk of a task's bundle, from `offset`.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskBundle {
    /// Task id.
    pub id: String,
    /// First byte wanted.
    #[serde(default)]
    pub offset: u64,
    /// For a connection that holds no name.
    #[serde(flatten)]
    pub act_as: ActAs,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// `task`: one task (the reply to `task_create`, `task_act` and `task_get`).
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReply {
    /// The task as stored after the request.
    pub task: TaskView,
    /// For a new task: who will see it and when ("queued: CC-2 offline since 14:02").
    pub notice: Option<String>,
    /// `task_create` with a key that was used before: this is the task made then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// `tasks`: a page of tasks (reply to `task_list`), newest first, without briefs.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskPage {
    /// The tasks.
    pub tasks: Vec<TaskView>,
    /// More match: ask again with `before` = the last id.
    #[serde(default)]
    pub more: bool,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// `task_refused`: the move was not made, and why. Nothing changed.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRefused {
    /// Task id.
    pub id: String,
    /// The move that was refused.
    pub action: TaskAction,
    /// Why, in words a model or a person can act on.
    pub reason: String,
    /// The task as it stands (unchanged), when the asker may see it: for a lost claim it
    /// names the holder.
    pub task: Option<TaskView>,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// `blob`: reply to `blob_put`.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobAck {
    /// The blob's id (pass it on the next chunk, and to `task_create`).
    pub blob: String,
    /// Bytes the hub has: the next chunk's `offset`.
    pub received: u64,
    /// False when the chunk was not taken because its offset was not `received`.
    pub accepted: bool,
    /// True once the last chunk arrived and the checksum matched.
    pub complete: bool,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// `bundle`: reply to `task_bundle`.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleChunk {
    /// Task id.
    pub id: String,
    /// Where `data` starts.
    pub offset: u64,
    /// The bytes, base64 (empty at the end).
    pub data: String,
    /// The bundle's size.
    pub total: u64,
    /// SHA-256 of the whole bundle, hex.
    pub sha256: String,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_typeable_and_strict() {
        assert_eq!(task_id(42), "T-42");
        for ok in ["T-42", "t-42", "42", " T-42 "] {
            assert_eq!(parse_task_id(ok), Some(42), "{ok}");
        }
        for bad in [
            "",
            "T-",
            "T-0",
            "T--1",
            "T-4a",
            "x-1",
            "T-1/2",
            "T-99999999999999999999",
        ] {
            assert_eq!(parse_task_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn states_and_actions_use_their_wire_names() {
        for s in TaskState::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
        }
        assert_eq!(TaskState::InputRequired.as_str(), "input-required");
        for a in TaskAction::ALL {
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                format!("\"{}\"", a.as_str())
            );
            assert_eq!(TaskAction::parse(a.as_str()), Some(a));
        }
        let terminal: Vec<_> = TaskState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(terminal.len(), 4);
    }
}
