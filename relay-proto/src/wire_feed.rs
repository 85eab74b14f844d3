//! The operator feed: what happens on the hub, as it happens — sessions coming and going,
//! messages routed, delivered and read, tasks created and moved. One event shape for both ways of following it: the
//! web console's server-sent events (`GET /api/feed`) and a WebSocket `subscribe` frame
//! (what `claude-relay tail` uses). See docs/PROTOCOL.md, "The operator feed".
//!
//! Events carry metadata only (who, to whom, when, how big, what state; a task's title, never
//! its brief, notes or result). A message body is
//! carried only to a WebSocket subscriber that asked for `content` — an operator who may
//! already read everything — and the console fetches one body at a time when its viewer opens
//! it.

use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::wire::RequestId;

/// `subscribe`: follow the operator feed on this connection (no registration needed). Only
/// for operators: on a hub with a token, the connection must have presented it (on the
/// upgrade or here); on a hub without one, only loopback peers may subscribe (the hub's
/// one rule for who the operator is; see docs/SECURITY.md, "The operator").
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscribe {
    /// Also carry each message's body (`content`) on `message` events.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub content: bool,
    /// The hub token, if the hub needs one and the upgrade did not carry it.
    pub token: Option<String>,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// Reply to `subscribe`: events follow as `event` frames.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscribed {
    /// Whether `message` events carry bodies.
    #[serde(default)]
    pub content: bool,
    /// The store epoch (message ids are `<epoch>-<seq>`).
    pub epoch: String,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// One thing that happened on the hub. On a WebSocket it arrives as
/// `{"type":"event","kind":…,…}`; on the console's event stream as an SSE event named after
/// `kind` whose data is the same object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeedEvent {
    /// A session came online or went offline.
    Session(SessionEvent),
    /// A message was stored and routed.
    Message(MessageEvent),
    /// Stored messages were handed to a live connection of their recipient.
    Delivered(SeqsEvent),
    /// A session marked messages read.
    Read(ReadEvent),
    /// A task was created or moved.
    Task(TaskMoved),
    /// A permission prompt was filed or left `pending` (docs/PROTOCOL.md, "Approvals").
    Approval(crate::wire_approvals::ApprovalView),
    /// This subscriber fell behind and `missed` events were dropped for it (the feed never
    /// slows the hub down): refetch the state instead of trusting counts built from events.
    Lagged(Lagged),
}

/// `session`: presence changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionEvent {
    /// The session id.
    pub id: String,
    /// True when it came online.
    pub online: bool,
    /// Unix milliseconds.
    pub ts: i64,
}

/// `message`: a message was stored and routed.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageEvent {
    /// Hub-wide sequence number (the message id is `<epoch>-<seq>`).
    pub seq: u64,
    /// Sender.
    pub from: String,
    /// Recipient id, or `all`.
    pub to: String,
    /// When it was stored (Unix ms).
    pub ts: i64,
    /// Body size in bytes.
    pub bytes: u64,
    /// `delivered` (a live connection took it) or `stored` (waiting for its recipient).
    pub state: String,
    /// For broadcasts: how many live sessions took it.
    pub recipients: Option<u32>,
    /// The body, only for subscribers that asked for `content`.
    pub content: Option<String>,
}

/// `delivered`: messages `to` a session reached one of its live connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeqsEvent {
    /// The recipient.
    pub to: String,
    /// The messages.
    pub seqs: Vec<u64>,
    /// Unix milliseconds.
    pub ts: i64,
}

/// `read`: a session marked messages read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadEvent {
    /// Who read them.
    pub by: String,
    /// The messages it marked.
    pub seqs: Vec<u64>,
    /// Its unread count afterwards.
    pub unread: u64,
    /// Unix milliseconds.
    pub ts: i64,
}

/// `task`: a task was created (`action` = `create`) or moved. What a board row needs, never
/// the brief, a note or the result.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskMoved {
    /// Task id (`T-42`).
    pub id: String,
    /// Its state now.
    pub state: crate::wire_tasks::TaskState,
    /// `create`, or the move (`claim`, `complete`, …).
    pub action: String,
    /// Who made it.
    pub by: String,
    /// The creator.
    pub from: String,
    /// The addressee: a session id or `any`.
    pub to: String,
    /// Who holds it now.
    pub holder: Option<String>,
    /// Its one-line title.
    pub title: String,
    /// When it was created (Unix ms).
    pub created: i64,
    /// When this happened (Unix ms).
    pub ts: i64,
}

/// `lagged`: events were dropped for this subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lagged {
    /// How many.
    pub missed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ClientFrame, ServerFrame};

    #[test]
    fn events_travel_inside_an_event_frame() {
        let ev = FeedEvent::Message(MessageEvent {
            seq: 7,
            from: "CC-1".into(),
            to: "CC-2".into(),
            ts: 1,
            bytes: 5,
            state: "delivered".into(),
            recipients: None,
            content: None,
        });
        let text = serde_json::to_string(&ServerFrame::Event(ev.clone())).unwrap();
        assert!(
            text.starts_with(r#"{"type":"event","kind":"message","seq":7,"#),
            "{text}"
        );
        match serde_json::from_str::<ServerFrame>(&text).unwrap() {
            ServerFrame::Event(back) => assert_eq!(back, ev),
            other => panic!("{other:?}"),
        }
        let task = FeedEvent::Task(TaskMoved {
            id: "T-1".into(),
            state: crate::wire_tasks::TaskState::InputRequired,
            action: "ask".into(),
            by: "CC-2".into(),
            from: "CC-1".into(),
            to: "CC-2".into(),
            holder: Some("CC-2".into()),
            title: "t".into(),
            created: 1,
            ts: 2,
        });
        let text = serde_json::to_string(&ServerFrame::Event(task.clone())).unwrap();
        assert!(
            text.starts_with(
                r#"{"type":"event","kind":"task","id":"T-1","state":"input-required","#
            ),
            "{text}"
        );
        match serde_json::from_str::<ServerFrame>(&text).unwrap() {
            ServerFrame::Event(back) => assert_eq!(back, task),
            other => panic!("{other:?}"),
        }
        let sub: ClientFrame =
            serde_json::from_str(r#"{"type":"subscribe","content":true}"#).unwrap();
        assert!(matches!(
            sub,
            ClientFrame::Subscribe(Subscribe { content: true, .. })
        ));
    }
}
