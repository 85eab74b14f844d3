//! Search over the history a session may see (docs/PROTOCOL.md, "search"): the `search`
//! frame and its `found` reply. Additive: clients that never send `search` see nothing new.

use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::{wire::RequestId, wire_tasks::ActAs};

/// `search`: full-text search over what the asker may read — its own sends, direct mail to
/// it and broadcasts; never other sessions' direct mail. Results are ranked (an exact phrase
/// first, then by relevance), newest first among equals. A registered connection searches
/// as itself; one that holds no name names an owned session and shows its owner secret.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Search {
    /// The words to find (all of them, in any order; a word ending in `*` matches as a
    /// prefix). Punctuation separates words; at most [`MAX_QUERY_BYTES`] bytes.
    pub query: String,
    /// Only messages from this sender.
    pub from: Option<String>,
    /// Only messages of this thread (a message id: the root's).
    pub thread: Option<String>,
    /// Only messages stored at or after this ISO-8601 time.
    pub since: Option<String>,
    /// Only messages stored before this ISO-8601 time.
    pub until: Option<String>,
    /// Page size; default 10, capped by the hub.
    pub count: Option<u32>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// For a connection that holds no name (`claude-relay search`): the session to search
    /// as, with its owner secret — the same rule as the task frames.
    #[serde(flatten)]
    pub act_as: ActAs,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// Longest `search.query`.
pub const MAX_QUERY_BYTES: usize = 256;

/// One search result: where the message is and a short piece of it, never the whole text
/// (read it with `get_history`).
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hit {
    /// The message id.
    pub id: String,
    /// Its sequence number.
    pub seq: u64,
    /// The sender.
    pub from: String,
    /// The recipient or `all`.
    pub to: String,
    /// When it was stored (ISO-8601).
    pub timestamp: String,
    /// Its thread (the root message's id; the message's own id when it answers none).
    pub thread: String,
    /// The message it answers, if any.
    pub reply_to: Option<String>,
    /// A few words around the matches, matches in `[` `]`, cuts marked `…`.
    pub snippet: String,
}

/// `found`: reply to `search`.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Found {
    /// Best first.
    pub hits: Vec<Hit>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}
