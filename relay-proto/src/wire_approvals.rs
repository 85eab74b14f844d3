//! The approval frames: a permission prompt of an agent, filed on the hub so that a human can
//! answer it from anywhere (docs/PROTOCOL.md, "Approvals"; docs/SECURITY.md, "Approvals").
//!
//! A client may **file** a prompt (`approval_file`), is told its verdict on the connection
//! that filed it (`approval_verdict`), and may report it **closed** when it was answered
//! locally (`approval_close`). No client frame answers a prompt: answers come only from a
//! human, over the operator's HTTP endpoint (`POST /api/approvals/ID`), never over the
//! WebSocket protocol every bridge speaks.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_with::skip_serializing_none;

use crate::wire::RequestId;

/// Prefix of approval ids (`A-7`).
pub const ID_PREFIX: &str = "A-";
/// Longest tool name, in bytes.
pub const MAX_TOOL: usize = 128;
/// Longest input preview the hub keeps, in characters (longer ones are cut, with `…`).
pub const MAX_PREVIEW: usize = 2000;
/// Length at which Claude Code cuts a channel's `input_preview`: a preview this long may
/// have been cut before it reached the bridge, and how long the input was is not known.
pub const CHANNEL_PREVIEW: usize = 200;
/// Longest description or summary, in characters (longer ones are cut).
pub const MAX_DESCRIPTION: usize = 500;
/// Longest working directory or host name, in characters (longer ones are cut).
pub const MAX_PLACE: usize = 512;
/// Longest message of a verdict, in characters.
pub const MAX_MESSAGE: usize = 1000;
/// Longest channel `request_id`, in bytes.
pub const MAX_REQUEST_ID: usize = 128;
/// Longest time a prompt may wait for a verdict before it expires.
pub const MAX_TIMEOUT_S: u64 = 3600;
/// Time a prompt waits when its filer names none.
pub const DEFAULT_TIMEOUT_S: u64 = 600;

/// Formats approval number `n` as its id (`A-7`).
pub fn approval_id(n: u64) -> String {
    format!("{ID_PREFIX}{n}")
}

/// Reads an approval id as people type it: `A-7`, `a-7` or `7`.
pub fn parse_approval_id(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s
        .strip_prefix(ID_PREFIX)
        .or_else(|| s.strip_prefix("a-"))
        .unwrap_or(s);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n > 0)
}

/// Where a prompt came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalSource {
    /// The `PermissionRequest` hook (`claude-relay approval-hook`).
    #[default]
    Hook,
    /// A Claude Code channel's `permission_request` notification, forwarded by the bridge.
    Channel,
}

impl ApprovalSource {
    /// The name on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hook => "hook",
            Self::Channel => "channel",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hook" => Self::Hook,
            "channel" => Self::Channel,
            _ => return None,
        })
    }
}

/// A prompt's state. `pending` moves once, to one of the others, and never again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for a human.
    Pending,
    /// A human allowed it.
    Allowed,
    /// A human denied it.
    Denied,
    /// Nobody answered in time.
    Expired,
    /// Answered elsewhere (the local dialog), or its filer went away.
    Closed,
}

impl ApprovalState {
    /// The name on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Closed => "closed",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "allowed" => Self::Allowed,
            "denied" => Self::Denied,
            "expired" => Self::Expired,
            "closed" => Self::Closed,
            _ => return None,
        })
    }
}

/// `approval_file`: file a permission prompt of session `clientId` and wait for its verdict
/// on this connection. No registration needed (the hook is a short-lived process, not the
/// session's bridge); an owned name needs its owner secret, as `watch` does.
#[skip_serializing_none]
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalFile {
    /// The session asking.
    pub client_id: String,
    /// Its owner secret; required when the name is owned.
    pub owner_secret: Option<String>,
    /// The hub token, if the hub needs one and the upgrade did not carry it.
    pub token: Option<String>,
    /// The tool the agent wants to run (`Bash`, `Edit`, …).
    pub tool: String,
    /// The tool's input as the agent gave it (the hook's `tool_input`); the hub keeps a
    /// bounded preview of it.
    pub input: Option<Value>,
    /// A preview already made (a channel's `input_preview`), used when `input` is absent.
    pub input_preview: Option<String>,
    /// What the tool would do, in the model's words (a channel's `description`). Not shown
    /// as the summary: the hub summarises what would run (`input`, `input_preview`), never
    /// the model's account of it.
    pub description: Option<String>,
    /// The agent's working directory.
    pub cwd: Option<String>,
    /// The machine.
    pub host: Option<String>,
    /// Hook or channel.
    #[serde(default)]
    pub source: ApprovalSource,
    /// The channel's `request_id` (channel prompts).
    pub request_id: Option<String>,
    /// Seconds the filer waits; the prompt expires after them (at most [`MAX_TIMEOUT_S`]).
    pub timeout_s: Option<u64>,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

impl std::fmt::Debug for ApprovalFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalFile")
            .field("client_id", &self.client_id)
            .field(
                "owner_secret",
                &self.owner_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tool", &self.tool)
            .field("source", &self.source)
            .field("request_id", &self.request_id)
            .field("rid", &self.rid)
            .finish_non_exhaustive()
    }
}

/// `approval_close`: the prompt was answered locally (or the filer gives up on it). Only the
/// connection that filed it, or a connection registered as its session, may close it; a
/// prompt already decided keeps its verdict.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalClose {
    /// The approval id (`A-7`).
    pub id: String,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// One prompt as the hub shows it: to its filer, on the operator feed and in the console.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalView {
    /// `A-7`.
    pub id: String,
    /// The session asking.
    pub session: String,
    /// Its machine, as the filer said.
    pub host: Option<String>,
    /// Its working directory, as the filer said.
    pub cwd: Option<String>,
    /// The tool.
    pub tool: String,
    /// One readable line: what would run.
    pub summary: String,
    /// The input, bounded ([`MAX_PREVIEW`]).
    pub preview: String,
    /// Whether `preview` is not the whole input: cut by the hub at [`MAX_PREVIEW`], or a
    /// channel preview that may have been cut by the agent's client ([`CHANNEL_PREVIEW`]).
    /// A human approving it has not seen all of it.
    #[serde(default)]
    pub truncated: bool,
    /// How many characters the whole input had (as compact JSON), when the hub saw it
    /// whole; absent when only a cut preview arrived (a channel prompt).
    pub input_chars: Option<u64>,
    /// Hook or channel.
    pub source: ApprovalSource,
    /// The channel's `request_id` (channel prompts).
    pub request_id: Option<String>,
    /// The state.
    pub state: ApprovalState,
    /// Filed at (Unix ms).
    pub created: i64,
    /// Expires at (Unix ms) while pending.
    pub expires: i64,
    /// Decided at (Unix ms).
    pub decided: Option<i64>,
    /// Who decided: `console (login)`, `cli? (token)` (a claimed name, then how it proved itself), `hub` (expired), the session (closed)…
    pub by: Option<String>,
    /// From which address a human answered.
    pub from: Option<String>,
    /// The human's message with the verdict.
    pub message: Option<String>,
}

impl ApprovalView {
    /// `allow` / `deny` for a human's verdict; None otherwise.
    pub fn behavior(&self) -> Option<&'static str> {
        match self.state {
            ApprovalState::Allowed => Some("allow"),
            ApprovalState::Denied => Some("deny"),
            _ => None,
        }
    }
}

/// Reply to `approval_file` and `approval_close`.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalReply {
    /// The prompt as it stands.
    pub approval: ApprovalView,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// Pushed to the connection that filed a prompt when it leaves `pending`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalVerdict {
    /// The prompt with its verdict.
    pub approval: ApprovalView,
}

/// What a human sends to `POST /api/approvals/ID` (JSON body).
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    /// `allow` or `deny`.
    pub behavior: String,
    /// Told to the agent with the verdict.
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_as_typed() {
        assert_eq!(parse_approval_id("A-7"), Some(7));
        assert_eq!(parse_approval_id(" a-12 "), Some(12));
        assert_eq!(parse_approval_id("3"), Some(3));
        for bad in ["", "A-", "A-0", "T-3", "A-x", "-1"] {
            assert_eq!(parse_approval_id(bad), None, "{bad}");
        }
        assert_eq!(approval_id(9), "A-9");
    }

    #[test]
    fn states_round_trip() {
        for s in [
            ApprovalState::Pending,
            ApprovalState::Allowed,
            ApprovalState::Denied,
            ApprovalState::Expired,
            ApprovalState::Closed,
        ] {
            assert_eq!(ApprovalState::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn sources_round_trip_under_their_wire_names() {
        for s in [ApprovalSource::Hook, ApprovalSource::Channel] {
            assert_eq!(ApprovalSource::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(ApprovalSource::parse("pager"), None);
    }
}
