//! The hub's wire protocol: one JSON text frame per WebSocket message, discriminated by `type`.
//!
//! These types are shared by the hub (which parses [`ClientFrame`] and writes [`ServerFrame`])
//! and by every client we ship (the MCP bridge, the CLI, the load generator), so the two ends
//! cannot drift apart. The core of the protocol is the Node relay's, field for field; everything
//! else is additive (new optional fields, new frame types) and is documented in
//! `docs/PROTOCOL.md`. Unknown fields are ignored on purpose: old clients send fewer, newer
//! clients may send more.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_with::skip_serializing_none;

pub use crate::wire_tasks::{
    BlobAck, BlobPut, BundleChunk, TaskAct, TaskBundle, TaskCreate, TaskGet, TaskList, TaskPage,
    TaskRefused, TaskReply, TaskReserve, TaskReserved, TaskTag,
};

/// Free-form session metadata a client reports on `register` (pid, cwd, host, started, …).
pub type Meta = serde_json::Map<String, Value>;

/// A client-chosen request id, echoed on the reply to the frame that carried it, so a client
/// can match replies to requests without relying on ordering.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// A numeric id.
    Int(i64),
    /// A string id.
    Str(String),
}

/// Every frame a client may send to the hub.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Claim a session id for this connection.
    Register(Register),
    /// Send a message to one session or to `all`.
    Message(SendMessage),
    /// Read the visible history (Node-compatible paging).
    GetHistory(GetHistory),
    /// Who is online now.
    GetPeers(Bare),
    /// Known sessions, online and offline, with their metadata (paged).
    GetSessions(GetSessions),
    /// Application-level liveness check.
    Ping(Bare),
    /// The oldest unread inbound messages of this session (does not mark them read).
    Receive(Receive),
    /// Mark messages read for this session (after they were shown to the model).
    MarkRead(MarkRead),
    /// This session's unread count and the delivery state of its recent sends.
    GetStatus(Bare),
    /// Free an owned name.
    Release(Release),
    /// Be told when mail arrives for a session.
    Watch(Watch),
    /// Follow the operator feed (docs/PROTOCOL.md, "The operator feed").
    Subscribe(crate::wire_feed::Subscribe),
    /// Remove an offline session from the hub's session table.
    Forget(Forget),
    /// Offer a task (see [`crate::wire_tasks`]).
    TaskCreate(TaskCreate),
    /// Move a task.
    TaskAct(TaskAct),
    /// List tasks.
    TaskList(TaskList),
    /// Read one task.
    TaskGet(TaskGet),
    /// Upload a chunk of a bundle.
    BlobPut(BlobPut),
    /// Download a chunk of a task's bundle.
    TaskBundle(TaskBundle),
    /// Reserve the id of the next task.
    TaskReserve(TaskReserve),
    /// File a permission prompt for a human (see [`crate::wire_approvals`]).
    ApprovalFile(crate::wire_approvals::ApprovalFile),
    /// Report a filed prompt answered locally.
    ApprovalClose(crate::wire_approvals::ApprovalClose),
    /// Full-text search over the visible history (see [`crate::wire_search`]).
    Search(crate::wire_search::Search),
}

impl ClientFrame {
    /// Every `type` a client frame may have, in declaration order (for "unknown type" errors).
    /// The test `client_frame_types_are_serdes` holds it equal to the variants serde reads.
    pub const TYPES: &[&str] = &[
        "register",
        "message",
        "get_history",
        "get_peers",
        "get_sessions",
        "ping",
        "receive",
        "mark_read",
        "get_status",
        "release",
        "watch",
        "subscribe",
        "forget",
        "task_create",
        "task_act",
        "task_list",
        "task_get",
        "blob_put",
        "task_bundle",
        "task_reserve",
        "approval_file",
        "approval_close",
        "search",
    ];

    /// Sets the request id of this frame (whatever its type).
    pub fn set_rid(&mut self, rid: RequestId) {
        let slot = match self {
            Self::Register(f) => &mut f.rid,
            Self::Message(f) => &mut f.rid,
            Self::GetHistory(f) => &mut f.rid,
            Self::GetPeers(f) | Self::Ping(f) | Self::GetStatus(f) => &mut f.rid,
            Self::GetSessions(f) => &mut f.rid,
            Self::Receive(f) => &mut f.rid,
            Self::MarkRead(f) => &mut f.rid,
            Self::Release(f) => &mut f.rid,
            Self::Watch(f) => &mut f.rid,
            Self::Subscribe(f) => &mut f.rid,
            Self::Forget(f) => &mut f.rid,
            Self::TaskCreate(f) => &mut f.rid,
            Self::TaskAct(f) => &mut f.rid,
            Self::TaskList(f) => &mut f.rid,
            Self::TaskGet(f) => &mut f.rid,
            Self::BlobPut(f) => &mut f.rid,
            Self::TaskBundle(f) => &mut f.rid,
            Self::TaskReserve(f) => &mut f.rid,
            Self::ApprovalFile(f) => &mut f.rid,
            Self::ApprovalClose(f) => &mut f.rid,
            Self::Search(f) => &mut f.rid,
        };
        *slot = Some(rid);
    }

    /// The request id carried by this frame, if any.
    pub fn rid(&self) -> Option<&RequestId> {
        match self {
            Self::Register(f) => f.rid.as_ref(),
            Self::Message(f) => f.rid.as_ref(),
            Self::GetHistory(f) => f.rid.as_ref(),
            Self::GetPeers(f) | Self::Ping(f) | Self::GetStatus(f) => f.rid.as_ref(),
            Self::GetSessions(f) => f.rid.as_ref(),
            Self::Receive(f) => f.rid.as_ref(),
            Self::MarkRead(f) => f.rid.as_ref(),
            Self::Release(f) => f.rid.as_ref(),
            Self::Watch(f) => f.rid.as_ref(),
            Self::Subscribe(f) => f.rid.as_ref(),
            Self::Forget(f) => f.rid.as_ref(),
            Self::TaskCreate(f) => f.rid.as_ref(),
            Self::TaskAct(f) => f.rid.as_ref(),
            Self::TaskList(f) => f.rid.as_ref(),
            Self::TaskGet(f) => f.rid.as_ref(),
            Self::BlobPut(f) => f.rid.as_ref(),
            Self::TaskBundle(f) => f.rid.as_ref(),
            Self::TaskReserve(f) => f.rid.as_ref(),
            Self::ApprovalFile(f) => f.rid.as_ref(),
            Self::ApprovalClose(f) => f.rid.as_ref(),
            Self::Search(f) => f.rid.as_ref(),
        }
    }
}

/// A frame with no fields besides the optional request id.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Bare {
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// `register`: claim `clientId` for this connection.
#[skip_serializing_none]
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Register {
    /// The session id to claim. Required; validated against the id grammar.
    pub client_id: Option<String>,
    /// Metadata shown to other sessions by `get_sessions`.
    pub meta: Option<Meta>,
    /// Presence format this client wants: `"full"` (default, Node-compatible: a
    /// `peer_joined`/`peer_left` per change, each with the whole peer list), `"delta"`
    /// (batched `presence {joined, left}` frames) or `"none"` (no presence pushes).
    pub presence: Option<PresenceMode>,
    /// The hub token, for hubs started with `--token-file` (alternatively sent as an
    /// `Authorization: Bearer` header on the WebSocket upgrade).
    pub token: Option<String>,
    /// True when the client keeps owner secrets: a name claimed for the first time is then
    /// given one (returned once in `registered.ownerSecret`), and every later claim of the
    /// name must present it. Clients that do not set this (the Node relay's) keep the old
    /// behaviour for names nobody owns.
    pub ownership: Option<bool>,
    /// The owner secret of `clientId`, if this client holds it.
    pub owner_secret: Option<String>,
    /// True to have the hub push this session's unread mail (oldest first, up to 100
    /// messages and the hub's page budget in bytes) right after `registered`, as ordinary
    /// `message` frames. They count as delivered, not read.
    pub backlog: Option<bool>,
    /// True when the name was made up for this one process (the bridge's
    /// `<HOSTNAME>-<pid base 36>`): nobody will claim it again, so when this connection ends
    /// the hub forgets the session unless direct mail to it is waiting unread.
    pub transient: Option<bool>,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// `get_sessions`: a page of the sessions the hub knows. Pages run online sessions first
/// (by id), then offline ones, most recently seen first; follow `next` to read them all.
/// A client that sends neither field (the Node relay's) gets the first page at the default
/// size.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetSessions {
    /// Most sessions in the reply (default and maximum: the hub's page size, 1000); the page
    /// also ends early when it would exceed the hub's byte budget.
    pub limit: Option<u32>,
    /// The `next` of the previous page (an opaque cursor).
    pub after: Option<String>,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// `forget`: remove an offline session from the hub's session table (and its ownership).
/// Its unread mail stays stored for whoever claims the name next.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Forget {
    /// The session to forget.
    pub client_id: String,
    /// Its owner secret; required when the name is owned.
    pub owner_secret: Option<String>,
    /// The hub token, if the hub needs one and the upgrade did not carry it.
    pub token: Option<String>,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// `release`: give up ownership of a name (so it can be claimed elsewhere).
#[skip_serializing_none]
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    /// The name to free.
    pub client_id: String,
    /// Its owner secret.
    pub owner_secret: String,
    /// The hub token, if the hub needs one and the upgrade did not carry it.
    pub token: Option<String>,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// `watch`: be told when mail arrives for a session, without holding its name (what
/// `claude-relay wait` uses to wake an idle agent).
#[skip_serializing_none]
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Watch {
    /// The session to watch.
    pub client_id: String,
    /// Its owner secret; required when the name is owned.
    pub owner_secret: Option<String>,
    /// The hub token, if the hub needs one and the upgrade did not carry it.
    pub token: Option<String>,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// A secret field in `Debug` output: whether it is there, never what it is. Frames are
/// printed in debug logs; tokens and owner secrets must not be (see docs/SECURITY.md).
struct Redacted(bool);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0 { "Some(<redacted>)" } else { "None" })
    }
}

impl std::fmt::Debug for Register {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Register")
            .field("client_id", &self.client_id)
            .field("meta", &self.meta)
            .field("presence", &self.presence)
            .field("token", &Redacted(self.token.is_some()))
            .field("ownership", &self.ownership)
            .field("owner_secret", &Redacted(self.owner_secret.is_some()))
            .field("backlog", &self.backlog)
            .field("rid", &self.rid)
            .finish()
    }
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Release")
            .field("client_id", &self.client_id)
            .field("owner_secret", &Redacted(true))
            .field("token", &Redacted(self.token.is_some()))
            .field("rid", &self.rid)
            .finish()
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("client_id", &self.client_id)
            .field("owner_secret", &Redacted(self.owner_secret.is_some()))
            .field("token", &Redacted(self.token.is_some()))
            .field("rid", &self.rid)
            .finish()
    }
}

/// How presence changes are reported to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceMode {
    /// Every presence frame carries the full peer list (the Node relay's behaviour).
    #[default]
    Full,
    /// Batched `presence {joined, left}` frames, at most four a second, the same bytes for
    /// every such client.
    Delta,
    /// No presence frames at all: the client asks (`get_peers`, `get_sessions`) when it
    /// wants to know. What the MCP bridge uses; registering N such sessions costs the hub
    /// O(N), not O(N²).
    None,
}

/// `message`: send `content` to `to` (a session id, or `all` — the default).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SendMessage {
    /// Recipient id or `all`; missing, null or empty means `all`.
    pub to: Option<String>,
    /// The message text. Must be a string.
    pub content: String,
    /// Optional idempotency key chosen by the sender (≤ 128 chars). Sending again with the
    /// same key (say, after a lost connection swallowed the ack) stores nothing new: the
    /// hub answers with the original message's `sent`, marked `duplicate`.
    pub key: Option<String>,
    /// The id of the message this one answers (one the sender can see: its own send, mail
    /// to it, or a broadcast). The hub stores it with the thread it belongs to (the root
    /// message's id) and refuses, storing nothing, an id the sender cannot see.
    #[serde(rename = "replyTo")]
    pub reply_to: Option<String>,
    /// Echoed on the `sent` ack.
    pub rid: Option<RequestId>,
}

/// `get_history`: read messages visible to this session.
///
/// Without `after`: the most recent `count` matching messages (oldest first within the page),
/// as the Node relay does. With `after` (a message id or an ISO-8601 time): the oldest `count`
/// matching messages after that point, so a reader following `cursor` sees everything once.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetHistory {
    /// Page size; default 10, capped by the hub.
    pub count: Option<u32>,
    /// Only messages sent by this session.
    pub from: Option<String>,
    /// Only messages addressed to this id (or `all`).
    pub to: Option<String>,
    /// Page forward from this message id or ISO-8601 time.
    pub after: Option<String>,
    /// Leave out this session's own sends.
    pub inbound_only: Option<bool>,
    /// Only messages of this thread (a message id: the thread's root), the root included.
    pub thread: Option<String>,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// `receive`: the oldest unread inbound messages of this session, oldest first.
/// Nothing is marked read until the client sends `mark_read`.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receive {
    /// Page size; default 10, capped by the hub.
    pub count: Option<u32>,
    /// Only messages from this sender.
    pub from: Option<String>,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// `mark_read`: mark these messages (by `seq`) read for this session.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarkRead {
    /// Sequence numbers of messages this session received.
    pub seqs: Vec<u64>,
    /// Echoed on the reply.
    pub rid: Option<RequestId>,
}

/// Every frame the hub sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The connection now holds `clientId`.
    Registered(Registered),
    /// The claim was refused; the connection stays open and may try another id.
    RegisterRejected(RegisterRejected),
    /// Another session came online.
    PeerJoined(Presence),
    /// A session went offline.
    PeerLeft(Presence),
    /// Presence changes of the last moments, batched (for `presence: "delta"` clients).
    Presence(PresenceBatch),
    /// A message for this session (direct or broadcast).
    Message(Envelope),
    /// The hub stored (and possibly delivered) a message this connection sent.
    Sent(Sent),
    /// Reply to `get_history`.
    History(History),
    /// Reply to `get_peers`.
    Peers(Peers),
    /// Reply to `get_sessions`.
    Sessions(Sessions),
    /// Reply to `ping`.
    Pong(Pong),
    /// Reply to `receive`.
    Inbox(Inbox),
    /// Reply to `mark_read`.
    Marked(Marked),
    /// Reply to `get_status`.
    Status(Status),
    /// Reply to `release`.
    Released(Released),
    /// Reply to `watch`.
    Watching(Watching),
    /// Reply to `forget`.
    Forgotten(Forgotten),
    /// Doorbell for a `watch`: new mail arrived for the watched session (no content).
    Mail(Mail),
    /// Reply to `subscribe`.
    Subscribed(crate::wire_feed::Subscribed),
    /// One event of the operator feed.
    Event(crate::wire_feed::FeedEvent),
    /// One task (reply to `task_create`, `task_act`, `task_get`).
    Task(TaskReply),
    /// A page of tasks (reply to `task_list`).
    Tasks(TaskPage),
    /// A task move was refused; nothing changed.
    TaskRefused(TaskRefused),
    /// Reply to `blob_put`.
    Blob(BlobAck),
    /// Reply to `task_bundle`.
    Bundle(BundleChunk),
    /// Reply to `task_reserve`.
    TaskReserved(TaskReserved),
    /// Reply to `approval_file` and `approval_close`.
    Approval(crate::wire_approvals::ApprovalReply),
    /// A prompt this connection filed left `pending` (pushed).
    ApprovalVerdict(crate::wire_approvals::ApprovalVerdict),
    /// Reply to `search`.
    Found(crate::wire_search::Found),
    /// Something about a client frame was wrong; the connection stays open.
    Error(ErrorFrame),
}

impl ServerFrame {
    /// The request id this frame answers, if any.
    pub fn rid(&self) -> Option<&RequestId> {
        match self {
            Self::Registered(f) => f.rid.as_ref(),
            Self::RegisterRejected(f) => f.rid.as_ref(),
            Self::Sent(f) => f.rid.as_ref(),
            Self::History(f) => f.rid.as_ref(),
            Self::Peers(f) => f.rid.as_ref(),
            Self::Sessions(f) => f.rid.as_ref(),
            Self::Pong(f) => f.rid.as_ref(),
            Self::Inbox(f) => f.rid.as_ref(),
            Self::Marked(f) => f.rid.as_ref(),
            Self::Status(f) => f.rid.as_ref(),
            Self::Released(f) => f.rid.as_ref(),
            Self::Watching(f) => f.rid.as_ref(),
            Self::Forgotten(f) => f.rid.as_ref(),
            Self::Error(f) => f.rid.as_ref(),
            Self::Task(f) => f.rid.as_ref(),
            Self::Tasks(f) => f.rid.as_ref(),
            Self::TaskRefused(f) => f.rid.as_ref(),
            Self::Blob(f) => f.rid.as_ref(),
            Self::Bundle(f) => f.rid.as_ref(),
            Self::TaskReserved(f) => f.rid.as_ref(),
            Self::Approval(f) => f.rid.as_ref(),
            Self::Found(f) => f.rid.as_ref(),
            Self::ApprovalVerdict(_)
            | Self::PeerJoined(_)
            | Self::PeerLeft(_)
            | Self::Presence(_)
            | Self::Message(_)
            | Self::Mail(_)
            | Self::Event(_) => None,
            Self::Subscribed(f) => f.rid.as_ref(),
        }
    }
}

/// `registered`.
#[skip_serializing_none]
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    /// The id this connection now holds.
    pub client_id: String,
    /// The other sessions online (not including this one). For a `presence: "delta"` client
    /// only the first page of them, by id (see `peers_total`).
    pub peers: Vec<String>,
    /// For a `presence: "delta"` client: how many other sessions are online in all. When it
    /// is more than `peers` holds, the rest are read with `get_sessions` (online sessions
    /// come first). Absent for the Node relay's clients, which always get the whole list.
    pub peers_total: Option<u64>,
    /// The store's epoch: a random id made when the store was created. A change means the
    /// hub's history was reset.
    pub epoch: Option<String>,
    /// Unread inbound messages waiting for this session.
    pub unread: Option<u64>,
    /// A newly minted owner secret for this name, sent exactly once: keep it (mode 0600)
    /// and present it on every later claim.
    pub owner_secret: Option<String>,
    /// Whether the name is owned (claims need its secret).
    pub owned: Option<bool>,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("client_id", &self.client_id)
            .field("peers", &self.peers)
            .field("peers_total", &self.peers_total)
            .field("epoch", &self.epoch)
            .field("unread", &self.unread)
            .field("owner_secret", &Redacted(self.owner_secret.is_some()))
            .field("owned", &self.owned)
            .field("rid", &self.rid)
            .finish()
    }
}

/// `released`: the name has no owner any more.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Released {
    /// The freed name.
    pub client_id: String,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// `forgotten`: the session is no longer in the hub's table.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Forgotten {
    /// The forgotten session.
    pub client_id: String,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// `watching`: the watch is in place.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Watching {
    /// The watched session.
    pub client_id: String,
    /// Its unread inbound messages now.
    pub unread: u64,
    /// Who sent them (distinct senders, oldest first, at most 10).
    pub from: Vec<String>,
    /// Whether the hub knows a session by this name (one registered under it and was not
    /// forgotten). False means nothing ever registered as it: mail to it can still come,
    /// but a misspelt name would wait forever. Absent from older hubs.
    pub known: Option<bool>,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// `mail`: new mail arrived for a watched session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mail {
    /// The watched session.
    pub client_id: String,
    /// The sender.
    pub from: String,
    /// The message's sequence number.
    pub seq: u64,
}

/// `register_rejected`.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRejected {
    /// The id that was asked for (as sent).
    pub client_id: String,
    /// Why, in words a person can act on.
    pub reason: String,
    /// Machine-readable reason: `invalid_id`, `name_in_use`, `already_registered`,
    /// `not_owner`, `unauthorized`, `rate_limited`, `too_large`.
    pub code: Option<String>,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// `peer_joined` / `peer_left`.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    /// The session that joined or left.
    pub client_id: String,
    /// Everyone online after the change; omitted for `presence: "delta"` connections.
    pub peers: Option<Vec<String>>,
}

/// `presence`: who came online and who went offline since the last such frame. Sent to
/// `presence: "delta"` clients at most every quarter second; the same bytes go to all of
/// them, so a registration storm of N sessions costs O(N) frames per client, not O(N²).
/// Apply `joined`, then `left`; an id appears in at most one of them (its last change).
/// A batch of more changes than one page (the hub's `delta_peers_page`, as `registered`)
/// names none of them: it says `resync` and how many are `online`, and a client that keeps
/// the whole list reads it again with `get_sessions` (docs/PROTOCOL.md, "Presence"). So a
/// storm costs each delta client O(1) bytes a batch, not O(N).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PresenceBatch {
    /// Sessions that are online now and were not at the last frame (as far as this batch
    /// knows). Empty when `resync` is set.
    pub joined: Vec<String>,
    /// Sessions that went offline. Empty when `resync` is set.
    pub left: Vec<String>,
    /// More changed than one page: the list a client keeps is stale, and `get_sessions`
    /// has the current one. Absent otherwise.
    pub resync: Option<bool>,
    /// With `resync`: how many sessions are online now, the recipient included (the frame
    /// is shared by every delta client).
    pub online: Option<u64>,
}

/// A stored message as clients see it (`message` frames and history entries).
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Hub-assigned id, unique across store resets (`<epoch>-<seq>`).
    pub id: String,
    /// Sender session id (set by the hub, never by the client).
    pub from: String,
    /// Recipient id or `all`.
    pub to: String,
    /// The text.
    pub content: String,
    /// When the hub stored it (ISO-8601, UTC, milliseconds).
    pub timestamp: String,
    /// Hub-wide, strictly increasing sequence number.
    #[serde(default)]
    pub seq: u64,
    /// On mail that reports a task change: the task and its new state (additive; see
    /// [`crate::wire_tasks`]).
    pub task: Option<TaskTag>,
    /// The id of the message this one answers (absent on messages that answer none).
    #[serde(rename = "replyTo")]
    pub reply_to: Option<String>,
    /// The thread this message belongs to: the id of the root message of its chain of
    /// replies (absent on a message that answers none; such a message roots its own thread).
    pub thread: Option<String>,
}

/// `sent`: the hub stored the message (and says whether a live connection took it).
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sent {
    /// The stored message's id.
    pub id: String,
    /// Recipient id or `all`.
    pub to: String,
    /// True when a live connection of the recipient (for `all`: at least one other session)
    /// took the message; false when it is stored and waiting. Not an error either way.
    pub delivered: bool,
    /// The stored message's sequence number.
    #[serde(default)]
    pub seq: u64,
    /// When it was stored.
    pub timestamp: Option<String>,
    /// For broadcasts: how many live sessions took it.
    pub recipients: Option<u32>,
    /// True when `key` matched an earlier message: nothing new was stored or delivered, and
    /// `id`/`seq`/`delivered` describe the original.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// `history`.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// Oldest first.
    pub messages: Vec<Envelope>,
    /// The id of the last message returned (pass it as `after` to continue), or the `after`
    /// that was given when nothing new matched; null when there is nothing to page from.
    #[serialize_always]
    pub cursor: Option<String>,
    /// True when `after` named no known position (unknown id, other epoch, bad time):
    /// nothing is replayed; start again without `after`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown_cursor: bool,
    /// True when more matching messages follow this page (only with `after`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// `peers`.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Peers {
    /// Every session online now (including the asker).
    pub peers: Vec<String>,
    /// The asker's id; null before `register`.
    #[serde(rename = "self")]
    #[serialize_always]
    pub self_id: Option<String>,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// One session in a `sessions` reply.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    /// Whether a live connection holds the id now.
    pub online: bool,
    /// When the session was last connected (now, if online). ISO-8601.
    pub last_seen: Option<String>,
    /// When the current (or last) connection registered. ISO-8601.
    pub connected_at: Option<String>,
    /// The metadata the session reported on `register` (pid, cwd, host, started, …).
    #[serde(flatten)]
    pub meta: Meta,
}

/// `sessions`: one page of known sessions.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sessions {
    /// The sessions of this page by id (see [`GetSessions`] for which ones).
    pub sessions: BTreeMap<String, SessionView>,
    /// The asker's id; null before `register`.
    #[serde(rename = "self")]
    #[serialize_always]
    pub self_id: Option<String>,
    /// How many sessions the hub knows in all (this page may hold fewer).
    pub total: Option<u64>,
    /// How many of them are online now.
    pub online: Option<u64>,
    /// Cursor of the next page (pass it as `after`); absent on the last page.
    pub next: Option<String>,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// `pong`.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pong {
    /// Hub time, milliseconds since the Unix epoch (as the Node relay sends it).
    pub timestamp: i64,
    /// The hub's version (`claude-relay --version` of the binary running it), so clients
    /// such as `claude-relay doctor` can tell a hub left running on an old binary. Absent
    /// from the Node relay and older hubs.
    pub version: Option<String>,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// `inbox`: reply to `receive`.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inbox {
    /// The oldest unread inbound messages, oldest first.
    pub messages: Vec<Envelope>,
    /// How many more unread messages (matching the same filter) follow this page.
    pub remaining: u64,
    /// The store's epoch.
    pub epoch: Option<String>,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// `marked`: reply to `mark_read`.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Marked {
    /// How many messages changed from unread to read.
    pub marked: u64,
    /// Unread inbound messages left for this session.
    pub unread: u64,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// Where a sent message stands, as its sender sees it.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendState {
    /// Message id.
    pub id: String,
    /// Sequence number.
    pub seq: u64,
    /// Recipient id or `all`.
    pub to: String,
    /// `stored`, `delivered` or `read` (for broadcasts: the furthest any recipient got).
    pub state: String,
    /// When the hub stored it.
    pub stored_at: String,
    /// When a live connection of the recipient first took it.
    pub delivered_at: Option<String>,
    /// When the recipient first read it with `receive`/`mark_read`.
    pub read_at: Option<String>,
    /// For broadcasts: how many sessions have read it.
    pub read_by: Option<u32>,
    /// The first characters of the content, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub preview: String,
}

/// `status`: reply to `get_status`.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The asker's id.
    #[serde(rename = "self")]
    #[serialize_always]
    pub self_id: Option<String>,
    /// Unread inbound messages waiting for the asker.
    pub unread: u64,
    /// The store's epoch.
    pub epoch: String,
    /// The asker's most recent sends, newest first, with their delivery state.
    pub sends: Vec<SendState>,
    /// Echoed request id.
    pub rid: Option<RequestId>,
}

/// `error`.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorFrame {
    /// What was wrong, in words.
    pub message: String,
    /// Machine-readable kind (see [`codes`]).
    pub code: Option<String>,
    /// For `rate_limited`: how long to wait before retrying.
    pub retry_after_ms: Option<u64>,
    /// Echoed request id (when the frame that failed carried a readable one).
    pub rid: Option<RequestId>,
}

/// Machine-readable error codes carried in `error.code` and `register_rejected.code`.
pub mod codes {
    /// Not JSON.
    pub const BAD_JSON: &str = "bad_json";
    /// JSON, but not a valid frame (missing or wrong-typed field).
    pub const BAD_FRAME: &str = "bad_frame";
    /// `type` names no frame this hub knows.
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    /// A session id that breaks the grammar.
    pub const INVALID_ID: &str = "invalid_id";
    /// The operation needs `register` first.
    pub const NOT_REGISTERED: &str = "not_registered";
    /// Frame or content over the size cap.
    pub const TOO_LARGE: &str = "too_large";
    /// Binary frames are not part of the protocol.
    pub const BINARY: &str = "binary_frame";
    /// The name is held by a live connection.
    pub const NAME_IN_USE: &str = "name_in_use";
    /// This connection already holds another name.
    pub const ALREADY_REGISTERED: &str = "already_registered";
    /// The hub could not do it right now (store unavailable, shutting down).
    pub const UNAVAILABLE: &str = "unavailable";
    /// Over a rate limit; `retryAfterMs` says when to retry. The frame was not processed.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The hub requires a token and none (or a wrong one) was presented.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// The name is owned and the owner secret was missing or wrong.
    pub const NOT_OWNER: &str = "not_owner";
    /// A `message` reused the `key` of an earlier, different message of the same sender
    /// (other recipient or content). It was not stored.
    pub const KEY_CONFLICT: &str = "key_conflict";
    /// The hub knows no session by that name (`forget`), or no such task, or not one the
    /// asker may see (task frames).
    pub const NOT_FOUND: &str = "not_found";
    /// Not allowed to read or do this (not a party, not the operator).
    pub const FORBIDDEN: &str = "forbidden";
}

/// Most unread messages the hub pushes after `registered` to a client that asked for its
/// `backlog`.
pub const BACKLOG_MAX: u64 = 100;

/// Default port of the hub.
pub const DEFAULT_PORT: u16 = 9999;
/// Default hub URL for clients.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:9999";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frame_types_are_serdes() {
        // serde lists the variants it knows in its "unknown variant" error: the derived truth.
        let err = serde_json::from_str::<ClientFrame>(r#"{"type":"no_such_type"}"#)
            .unwrap_err()
            .to_string();
        let expected = err
            .split("expected one of ")
            .nth(1)
            .unwrap_or_else(|| panic!("{err}"));
        let serde_types: Vec<&str> = expected
            .split(", ")
            .map(|t| t.trim_start_matches('`'))
            .map(|t| t.split('`').next().unwrap_or(t))
            .collect();
        assert_eq!(serde_types, ClientFrame::TYPES, "{err}");
    }

    #[test]
    fn rid_is_set_on_every_frame_kind() {
        let mut f = ClientFrame::GetStatus(Default::default());
        f.set_rid(RequestId::Int(9));
        assert_eq!(f.rid(), Some(&RequestId::Int(9)));
    }

    #[test]
    fn debug_output_of_frames_never_shows_a_secret() {
        let frames: Vec<ClientFrame> = [
            r#"{"type":"register","clientId":"A","token":"TOK-SECRET","ownerSecret":"OWN-SECRET"}"#,
            r#"{"type":"release","clientId":"A","token":"TOK-SECRET","ownerSecret":"OWN-SECRET"}"#,
            r#"{"type":"watch","clientId":"A","token":"TOK-SECRET","ownerSecret":"OWN-SECRET"}"#,
        ]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
        let reg: ServerFrame = serde_json::from_str(
            r#"{"type":"registered","clientId":"A","peers":[],"ownerSecret":"OWN-SECRET"}"#,
        )
        .unwrap();
        let text = format!("{frames:?} {reg:?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(
            text.contains("Some(<redacted>)") && text.contains("client_id: \"A\""),
            "{text}"
        );
    }

    #[test]
    fn node_core_frames_parse() {
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"register","clientId":"M2"}"#).unwrap();
        assert!(
            matches!(f, ClientFrame::Register(Register { client_id: Some(ref c), .. }) if c == "M2")
        );
        let f: ClientFrame = serde_json::from_str(r#"{"type":"message","content":"hi"}"#).unwrap();
        assert!(matches!(
            f,
            ClientFrame::Message(SendMessage { to: None, .. })
        ));
        let f: ClientFrame = serde_json::from_str(r#"{"type":"get_history","count":5}"#).unwrap();
        assert!(matches!(
            f,
            ClientFrame::GetHistory(GetHistory { count: Some(5), .. })
        ));
        for t in ["get_peers", "get_sessions", "ping"] {
            let f: ClientFrame = serde_json::from_str(&format!(r#"{{"type":"{t}"}}"#)).unwrap();
            assert!(f.rid().is_none());
        }
    }

    #[test]
    fn rid_is_echoable_and_unknown_fields_are_ignored() {
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"ping","rid":7,"future":{"x":1}}"#).unwrap();
        assert_eq!(f.rid(), Some(&RequestId::Int(7)));
        let f: ClientFrame = serde_json::from_str(r#"{"type":"ping","rid":"a"}"#).unwrap();
        assert_eq!(f.rid(), Some(&RequestId::Str("a".into())));
    }

    #[test]
    fn non_string_content_is_an_error() {
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"message","content":5}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn server_frames_round_trip_with_node_field_names() {
        let f = ServerFrame::Message(Envelope {
            id: "e-1".into(),
            from: "CC-1".into(),
            to: "CC-2".into(),
            content: "hi".into(),
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            seq: 1,
            task: None,
            reply_to: None,
            thread: None,
        });
        let s = serde_json::to_string(&f).unwrap();
        assert!(
            s.starts_with(r#"{"type":"message","id":"e-1","from":"CC-1""#),
            "{s}"
        );
        // A message that answers none carries nothing new (what old clients see).
        assert!(!s.contains("replyTo") && !s.contains("thread"), "{s}");
        let back: ServerFrame = serde_json::from_str(&s).unwrap();
        assert!(matches!(back, ServerFrame::Message(e) if e.content == "hi"));

        let p = ServerFrame::Peers(Peers {
            peers: vec!["a".into()],
            self_id: None,
            rid: None,
        });
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"type":"peers","peers":["a"],"self":null}"#
        );
        let r = ServerFrame::Registered(Registered {
            client_id: "a".into(),
            peers: vec![],
            peers_total: None,
            epoch: None,
            unread: None,
            owner_secret: None,
            owned: None,
            rid: None,
        });
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"type":"registered","clientId":"a","peers":[]}"#
        );
    }
}
