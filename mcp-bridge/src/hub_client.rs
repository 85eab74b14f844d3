//! The bridge's one connection to the hub: connect, register, keep it alive, reconnect.
//!
//! A single task owns the WebSocket. Tools never touch it; they call [`HubClient::request`],
//! which stamps the frame with a fresh request id (`rid`), queues it for that task and waits
//! for the reply carrying the same `rid` — under a timeout, and failing at once when the
//! connection drops. So a tool call can never hang on the hub.
//!
//! - The connection starts on [`HubClient::start`]: at the first tool call, or a moment after
//!   the client's `initialized` (see `Timeouts::register_delay`), so a client that only probes
//!   the server (`claude mcp list`) never registers anything on the hub.
//! - Lost connections are retried with exponential backoff and full jitter ([`Backoff`]); each
//!   new connection registers again. The backoff starts over only after a connection stayed
//!   up for `healthy_after`, so a link that flaps (registers, dies) is not hammered.
//! - Liveness both ways: the hub pings us (tungstenite answers while we keep reading); we send
//!   an application `ping` every `ping_interval` and treat `idle` (two intervals) without any
//!   frame as a half-open connection, dropped and redialled.
//! - A name held by a live connection, or owned by someone else (`not_owner`): an id from
//!   `RELAY_CLIENT_ID` moves on to the next number (`CODEX` → `CODEX2`) until it first
//!   registers; any other id keeps retrying with backoff and the tools say why.
//! - Ownership: every claim asks the hub to make the name owned and presents the owner
//!   secret from [`OwnerStore`] when there is one. A secret the hub mints is saved (0600,
//!   atomically) before the name is used; if it cannot be saved, the bridge keeps it in
//!   memory, retries saving on every reconnect, and says so on stderr and in every tool
//!   result until it is saved. A transient name (`<HOSTNAME>-<pid>`) keeps its secret in
//!   memory only: nobody claims that name after this process, so a file would only pile up.
//! - The name in `registered` must be exactly the one asked for; anything else (a hub that
//!   is not ours, or a broken one) is refused before any secret is kept for it.
//! - The hub token and `wss://` trust come with every dial ([`dial::connect_with`]).
//! - Pushed `message` frames bump a cheap unread hint and go out on a bounded broadcast
//!   channel (see [`HubClient::subscribe`]); nothing is buffered without bound.
//!
//! Bounds: [`OUTBOUND_QUEUE`] frames waiting to be written, [`PUSH_BUFFER`] pushed messages per
//! subscriber (older ones are dropped for a lagging subscriber; the hub keeps the mail), and the
//! pending-reply map holds at most one entry per in-flight tool call.
//!
//! State, one owner each: the connection task ([`link`]) is the only writer of the
//! [`LinkState`] watch, which tools read and wait on, and a `Connected` state carries the live
//! connection's queue, so "connected" and "where to send" can never disagree. Everything else
//! that changes — the name and its numbering, pending replies, the unread hint, the epoch seen,
//! the owner-secret memo — is one [`State`] behind one mutex, never held across an `.await`.
//! Registering on a fresh connection is [`register`].

mod link;
mod register;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use relay_proto::wire::{ClientFrame, Envelope, Meta, RequestId, ServerFrame};
use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    time::Instant,
};

use crate::{
    config::{BridgeConfig, Timeouts},
    dial::ClientAuth,
    owner::OwnerStore,
};

/// Frames queued for the connection task. Tool calls wait (bounded by the request timeout)
/// when it is full.
pub(crate) const OUTBOUND_QUEUE: usize = 64;
/// Pushed messages buffered per subscriber.
pub(crate) const PUSH_BUFFER: usize = 256;
/// Where the connection stands.
#[derive(Debug, Clone)]
pub(crate) enum LinkState {
    /// `start` was not called yet.
    NotStarted,
    /// Dialling or registering.
    Connecting {
        /// 1 for the first attempt after a working connection (or the very first).
        attempt: u32,
        /// Why the previous attempt failed, if one did.
        last_error: Option<String>,
        /// The previous attempt was refused (name, token, TLS), not lost on the link: this
        /// retry will most likely be refused too, so `relay_send` does not queue meanwhile.
        refused: bool,
        /// The refusal was of our name (so the text says "not registered", as while waiting).
        rejected: bool,
    },
    /// Registered and usable.
    Connected {
        /// When the registration succeeded (Unix ms).
        since_ms: i64,
        /// The live connection's queue.
        link: Link,
    },
    /// Waiting before the next attempt.
    Waiting {
        /// When the next attempt starts.
        retry_at: Instant,
        /// Why the last attempt or connection failed, in words.
        last_error: String,
        /// The hub refused our name (as opposed to being unreachable).
        rejected: bool,
        /// The last failure was the link's (unreachable, timed out, dropped, dead) — not a
        /// refusal of the name, the token or TLS. Only then does `relay_send` queue.
        transport: bool,
    },
    /// The bridge is shutting down.
    Stopped,
}

/// A copy of the client's state for tool output.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// Hub URL.
    pub url: String,
    /// The session id we register (or hold) now.
    pub id: String,
    /// Connection state.
    pub state: LinkState,
    /// Last known unread count (from the hub, plus pushes since), if any.
    pub unread: Option<u64>,
    /// The hub store's epoch as last seen.
    pub epoch: Option<String>,
}

impl Snapshot {
    /// True when requests can be sent now.
    pub(crate) fn is_connected(&self) -> bool {
        matches!(self.state, LinkState::Connected { .. })
    }

    /// True unless the hub or this bridge's setup refuses the connection (name, token, TLS):
    /// then a message queued now would wait for a human, and "the hub is unreachable" would
    /// be untrue, so `relay_send` says "NOT sent" instead.
    pub(crate) fn link_trouble_only(&self) -> bool {
        !matches!(
            self.state,
            LinkState::Waiting {
                transport: false,
                ..
            } | LinkState::Connecting { refused: true, .. }
                | LinkState::Stopped
        )
    }

    /// "not connected to the hub at URL (retrying in N s; last error: …)".
    pub(crate) fn not_connected_text(&self) -> String {
        match &self.state {
            LinkState::Connected { .. } => format!("connected to the hub at {}", self.url),
            LinkState::NotStarted => format!("not connected to the hub at {} yet", self.url),
            LinkState::Connecting {
                last_error: None, ..
            } => format!("not connected to the hub at {} (connecting now)", self.url),
            LinkState::Connecting {
                attempt,
                last_error: Some(e),
                rejected: true,
                ..
            } => format!(
                "not registered with the hub at {}: {e}; attempt {attempt} in progress",
                self.url
            ),
            LinkState::Connecting {
                attempt,
                last_error: Some(e),
                ..
            } => format!(
                "not connected to the hub at {} (attempt {attempt} in progress; last error: {e})",
                self.url
            ),
            LinkState::Waiting {
                retry_at,
                last_error,
                rejected,
                ..
            } => {
                let secs = retry_at
                    .saturating_duration_since(Instant::now())
                    .as_secs_f64()
                    .ceil() as u64;
                if *rejected {
                    format!(
                        "not registered with the hub at {}: {last_error}; retrying in {secs} s",
                        self.url
                    )
                } else {
                    format!(
                        "not connected to the hub at {} (retrying in {secs} s; last error: {last_error})",
                        self.url
                    )
                }
            }
            LinkState::Stopped => format!(
                "not connected to the hub at {} (the bridge is shutting down)",
                self.url
            ),
        }
    }
}

/// Why a request got no reply.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum RequestError {
    /// Nothing was sent: no usable connection. Carries the state text for the model.
    #[error("{0}")]
    NotConnected(String),
    /// The connection dropped while the request was queued (`written: false`) or after it was
    /// written, before the reply (`written: true`).
    #[error("{}", if *written {
        "the connection to the hub dropped after the request was sent, before the hub replied"
    } else {
        "the connection to the hub dropped before the request was sent"
    })]
    Lost {
        /// Whether the frame reached the socket.
        written: bool,
    },
    /// No reply within the request timeout.
    #[error("the hub did not reply within {secs} s")]
    Timeout {
        /// The timeout.
        secs: u64,
        /// Whether the frame reached the socket.
        written: bool,
    },
    /// The hub answered with something this bridge cannot read.
    #[error("the hub sent an unreadable reply: {0}")]
    BadReply(String),
}

impl RequestError {
    /// True when the hub may have acted on the request (it was written, and no reply came).
    pub(crate) fn maybe_delivered(&self) -> bool {
        matches!(
            self,
            Self::Lost { written: true } | Self::Timeout { written: true, .. } | Self::BadReply(_)
        )
    }
}

/// The reconnecting hub connection, shared by all tool calls. Cheap to clone.
#[derive(Clone)]
pub(crate) struct HubClient {
    inner: Arc<Inner>,
}

/// What the handle and the connection task share.
struct Inner {
    // Fixed for the client's life.
    url: String,
    timeouts: Timeouts,
    auth: ClientAuth,
    owners: Option<OwnerStore>,
    /// The name is made up for this process (see `IdentitySource::transient`).
    transient: bool,
    /// Pushed messages, to every subscriber (a channel, not state).
    pushes: broadcast::Sender<Envelope>,
    /// Pushed approval verdicts (`approval_verdict`), to every subscriber.
    verdicts: broadcast::Sender<relay_proto::wire_approvals::ApprovalView>,
    /// Set once to stop the connection task (a signal, not state).
    stop: watch::Sender<bool>,
    /// Where the connection stands; written only by the connection task.
    status: watch::Sender<LinkState>,
    /// Everything else that changes.
    state: Mutex<State>,
}

/// The client's changing bookkeeping (see the module doc).
struct State {
    /// `start` was called.
    started: bool,
    /// What `register` reports (see `meta.rs`); the MCP client's name is added at
    /// `initialize`, before the first connection.
    meta: Meta,
    ident: Ident,
    /// The name of the latest successful registration (kept across reconnects).
    granted: Option<String>,
    pending: HashMap<i64, Pending>,
    next_rid: i64,
    next_conn: u64,
    /// Last known unread count (from the hub, plus pushes since).
    unread: Option<u64>,
    /// Backlog pushes still expected after `registered` (already in its `unread`, so they
    /// must not be counted again).
    backlog_left: u64,
    epoch: EpochSeen,
    owner: OwnerMemo,
}

/// Owner-secret state that outlives one connection.
#[derive(Default)]
struct OwnerMemo {
    /// (name, secret) the hub minted and that lives in memory: not saved yet (saved again on
    /// the next registration), or, for a transient name, never saved. Presented from here.
    unsaved: Option<(String, String)>,
    /// Shown with every tool result while `unsaved` is set.
    warning: Option<String>,
}

/// The name we register and how it may change.
struct Ident {
    id: String,
    /// Base for auto-numbering; cleared after the first successful registration so a
    /// reconnect never renames a session.
    base: Option<String>,
    number: u32,
}

#[derive(Default)]
struct EpochSeen {
    current: Option<String>,
    notice: Option<String>,
}

/// The live connection's queue, tagged with the connection it feeds.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    conn: u64,
    tx: mpsc::Sender<Outgoing>,
}

#[derive(Debug)]
struct Outgoing {
    rid: Option<i64>,
    text: String,
}

struct Pending {
    conn: u64,
    written: bool,
    tx: oneshot::Sender<Result<ServerFrame, RequestError>>,
}

impl HubClient {
    /// A client for `config`'s hub and identity, reporting `meta` on register. Not started.
    pub(crate) fn new(config: &BridgeConfig, meta: Meta) -> Self {
        let identity = &config.identity;
        let base = identity.source.auto_number_base.clone();
        let number = base
            .as_deref()
            .and_then(|b| identity.id.strip_prefix(b))
            .and_then(|rest| rest.parse::<u32>().ok())
            .unwrap_or(1);
        let (pushes, _) = broadcast::channel(PUSH_BUFFER);
        let (verdicts, _) = broadcast::channel(crate::permission::MAX_OPEN);
        Self {
            inner: Arc::new(Inner {
                url: config.relay_url.clone(),
                timeouts: config.timeouts.clone(),
                auth: config.security.auth.clone(),
                owners: config.security.owners.clone(),
                transient: identity.source.transient,
                pushes,
                verdicts,
                stop: watch::Sender::new(false),
                status: watch::Sender::new(LinkState::NotStarted),
                state: Mutex::new(State {
                    started: false,
                    meta,
                    ident: Ident {
                        id: identity.id.clone(),
                        base,
                        number,
                    },
                    granted: None,
                    pending: HashMap::new(),
                    next_rid: 1,
                    next_conn: 1,
                    unread: None,
                    backlog_left: 0,
                    epoch: EpochSeen::default(),
                    owner: OwnerMemo::default(),
                }),
            }),
        }
    }

    /// Reports which MCP client this bridge serves (`clientInfo` of `initialize`: Claude
    /// Code, Codex, Gemini CLI, …) in the `client` field of the register metadata, so the
    /// hub's console can say which agent a session is. Call before [`start`](Self::start).
    pub(crate) fn set_client(&self, name: &str, version: &str) {
        let bounded = |s: &str, n: usize| s.chars().take(n).collect::<String>();
        self.inner.lock().meta.insert(
            "client".into(),
            serde_json::json!({"name": bounded(name, 64), "version": bounded(version, 32)}),
        );
    }

    /// Starts the connection task (once; later calls, and calls after [`Self::shutdown`], do
    /// nothing). Needs a tokio runtime.
    pub(crate) fn start(&self) {
        if self.inner.stopping() || std::mem::replace(&mut self.inner.lock().started, true) {
            return;
        }
        self.inner.status.send_replace(LinkState::Connecting {
            attempt: 1,
            last_error: None,
            refused: false,
            rejected: false,
        });
        tokio::spawn(link::run(self.inner.clone()));
    }

    /// Resolves once [`Self::start`] was called: true, or false when the client was shut down
    /// without ever starting (a probe that hung up before registering).
    pub(crate) async fn wait_started(&self) -> bool {
        let mut rx = self.inner.status.subscribe();
        match rx.wait_for(|s| !matches!(s, LinkState::NotStarted)).await {
            Ok(s) => !matches!(*s, LinkState::Stopped),
            Err(_) => false,
        }
    }

    /// How long after `initialized` the server starts the connection by itself.
    pub(crate) fn register_delay(&self) -> Duration {
        self.inner.timeouts.register_delay
    }

    /// How long a request waits for the hub's reply.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.timeouts.request
    }

    /// The session id registered (or to be registered) now.
    pub(crate) fn id(&self) -> String {
        self.inner.lock().ident.id.clone()
    }

    /// A copy of the connection state for display.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let state = self.inner.status.borrow().clone();
        let s = self.inner.lock();
        Snapshot {
            url: self.inner.url.clone(),
            id: s.ident.id.clone(),
            state,
            unread: s.unread,
            epoch: s.epoch.current.clone(),
        }
    }

    /// A receiver of the connection state; changes whenever the connection does.
    pub(crate) fn watch_state(&self) -> watch::Receiver<LinkState> {
        self.inner.status.subscribe()
    }

    /// The name of the latest successful registration, so the local registry can follow a
    /// name the hub gave us (read it after a change of [`Self::watch_state`]).
    pub(crate) fn granted(&self) -> Option<String> {
        self.inner.lock().granted.clone()
    }

    /// Messages the hub pushes to this session, as they arrive (bounded; see [`PUSH_BUFFER`]).
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Envelope> {
        self.inner.pushes.subscribe()
    }

    /// Approval verdicts the hub pushes for prompts this session filed.
    pub(crate) fn subscribe_verdicts(
        &self,
    ) -> broadcast::Receiver<relay_proto::wire_approvals::ApprovalView> {
        self.inner.verdicts.subscribe()
    }

    /// Records an unread count the hub reported.
    pub(crate) fn set_unread(&self, n: u64) {
        self.inner.lock().unread = Some(n);
    }

    /// Records the store epoch seen in a reply; a change from the last one seen leaves a
    /// notice for [`Self::take_reset_notice`].
    pub(crate) fn observe_epoch(&self, epoch: &str) {
        self.inner.lock().observe_epoch(epoch);
    }

    /// Notices the model must see with the next tool result: "the hub's history was reset"
    /// (once, after the store epoch changed) and, for as long as it lasts, a failure to save
    /// this session's owner secret (it could not be saved, so the name would be lost when the
    /// bridge exits).
    pub(crate) fn take_reset_notice(&self) -> Option<String> {
        let mut s = self.inner.lock();
        let reset = s.epoch.notice.take();
        match (s.owner.warning.clone(), reset) {
            (Some(w), Some(r)) => Some(format!("{w}\n\n{r}")),
            (w, r) => w.or(r),
        }
    }

    /// Sends `frame` with a fresh `rid` and returns the hub's reply to it (which may be an
    /// `error` frame). Answers at once when disconnected; waits at most
    /// `connecting_grace` for a connection attempt in progress, then `request` for the reply.
    pub(crate) async fn request(
        &self,
        mut frame: ClientFrame,
    ) -> Result<ServerFrame, RequestError> {
        self.start();
        let inner = &self.inner;
        let link = self.ready_link().await?;
        let (tx, rx) = oneshot::channel();
        let rid = {
            let mut s = inner.lock();
            let rid = s.next_rid;
            s.next_rid += 1;
            s.pending.insert(
                rid,
                Pending {
                    conn: link.conn,
                    written: false,
                    tx,
                },
            );
            rid
        };
        frame.set_rid(RequestId::Int(rid));
        let text = match serde_json::to_string(&frame) {
            Ok(t) => t,
            Err(e) => {
                inner.lock().pending.remove(&rid);
                return Err(RequestError::BadReply(e.to_string()));
            }
        };
        let deadline = Instant::now() + inner.timeouts.request;
        let queued = tokio::time::timeout_at(
            deadline,
            link.tx.send(Outgoing {
                rid: Some(rid),
                text,
            }),
        )
        .await;
        if !matches!(queued, Ok(Ok(()))) {
            inner.lock().pending.remove(&rid);
            return Err(match queued {
                Err(_) => RequestError::Timeout {
                    secs: inner.timeouts.request.as_secs(),
                    written: false,
                },
                _ => RequestError::Lost { written: false },
            });
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RequestError::Lost { written: true }),
            Err(_) => {
                let written = inner.lock().pending.remove(&rid).is_none_or(|p| p.written);
                Err(RequestError::Timeout {
                    secs: inner.timeouts.request.as_secs(),
                    written,
                })
            }
        }
    }

    /// Lets a connection attempt that is under way finish (at most `connecting_grace`), so a
    /// status report right after start does not say "connecting" needlessly.
    pub(crate) async fn settle(&self) {
        let mut rx = self.inner.status.subscribe();
        let waited = tokio::time::timeout(
            self.inner.timeouts.connecting_grace,
            rx.wait_for(|s| !matches!(s, LinkState::NotStarted | LinkState::Connecting { .. })),
        )
        .await;
        drop(waited);
    }

    /// Waits up to `timeout` for a registered connection (starting the client if needed).
    pub(crate) async fn wait_connected(&self, timeout: Duration) -> bool {
        self.start();
        let mut rx = self.inner.status.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| matches!(s, LinkState::Connected { .. })),
        )
        .await;
        matches!(waited, Ok(Ok(_)))
    }

    /// Stops the connection task: closes the WebSocket politely (bounded), fails pending
    /// requests, and waits (bounded) until it is done.
    pub(crate) async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        if !self.inner.lock().started {
            self.inner.status.send_replace(LinkState::Stopped);
            return;
        }
        let mut rx = self.inner.status.subscribe();
        let _ = tokio::time::timeout(
            Duration::from_millis(500),
            rx.wait_for(|s| matches!(s, LinkState::Stopped)),
        )
        .await;
    }

    /// The current connection's queue, waiting briefly for an attempt in progress.
    async fn ready_link(&self) -> Result<Link, RequestError> {
        let inner = &self.inner;
        let mut rx = inner.status.subscribe();
        let deadline = Instant::now() + inner.timeouts.connecting_grace;
        loop {
            match &*rx.borrow_and_update() {
                LinkState::Connected { link, .. } => return Ok(link.clone()),
                LinkState::NotStarted | LinkState::Connecting { .. } => {}
                LinkState::Waiting { .. } | LinkState::Stopped => {
                    return Err(RequestError::NotConnected(
                        self.snapshot().not_connected_text(),
                    ));
                }
            }
            if !matches!(
                tokio::time::timeout_at(deadline, rx.changed()).await,
                Ok(Ok(()))
            ) {
                return Err(RequestError::NotConnected(
                    self.snapshot().not_connected_text(),
                ));
            }
        }
    }
}

impl Inner {
    /// The bookkeeping; a poisoned lock is taken over (docs/ARCHITECTURE.md, "Rules").
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Fails every request waiting on connection `conn`.
    fn fail_pending(&self, conn: u64) {
        let failed: Vec<Pending> = {
            let mut s = self.lock();
            let rids: Vec<i64> = s
                .pending
                .iter()
                .filter(|(_, p)| p.conn == conn)
                .map(|(rid, _)| *rid)
                .collect();
            rids.iter()
                .filter_map(|rid| s.pending.remove(rid))
                .collect()
        };
        for p in failed {
            let _ = p.tx.send(Err(RequestError::Lost { written: p.written }));
        }
    }

    fn mark_written(&self, rid: i64) {
        if let Some(p) = self.lock().pending.get_mut(&rid) {
            p.written = true;
        }
    }

    /// Routes one text frame from the hub: a reply to its waiting request, or a push.
    fn dispatch(&self, text: &str) {
        let frame: ServerFrame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => return self.unreadable(text, &e),
        };
        if let Some(RequestId::Int(rid)) = frame.rid()
            && let Some(p) = self.lock().pending.remove(rid)
        {
            let _ = p.tx.send(Ok(frame));
            return;
        }
        match frame {
            ServerFrame::Message(envelope) => {
                {
                    let mut s = self.lock();
                    if s.backlog_left > 0 {
                        s.backlog_left -= 1;
                    } else if let Some(n) = s.unread.as_mut() {
                        *n += 1;
                    }
                }
                // No subscriber is fine: the hub keeps the mail; this is only a hint.
                let _ = self.pushes.send(envelope);
            }
            ServerFrame::ApprovalVerdict(v) => {
                let _ = self.verdicts.send(v.approval);
            }
            ServerFrame::Error(e) => {
                tracing::warn!("hub error not tied to a request: {}", e.message);
            }
            ServerFrame::PeerJoined(_)
            | ServerFrame::PeerLeft(_)
            | ServerFrame::Presence(_)
            | ServerFrame::Pong(_) => {}
            other => tracing::debug!("unsolicited frame from the hub: {other:?}"),
        }
    }

    /// A frame this bridge cannot read: fails the request it answers, if we can tell, instead
    /// of letting it time out.
    fn unreadable(&self, text: &str, e: &serde_json::Error) {
        let rid = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("rid").and_then(serde_json::Value::as_i64));
        let waiting = rid.and_then(|rid| self.lock().pending.remove(&rid));
        let snippet: String = text.chars().take(200).collect();
        match waiting {
            Some(p) => {
                let _ =
                    p.tx.send(Err(RequestError::BadReply(format!("{e}: {snippet}"))));
            }
            None => tracing::warn!("ignoring an unreadable frame from the hub ({e}): {snippet}"),
        }
    }
}

impl State {
    fn observe_epoch(&mut self, epoch: &str) {
        let e = &mut self.epoch;
        if let Some(old) = &e.current
            && old != epoch
        {
            e.notice = Some(format!(
                "Note: the hub's history was reset (store epoch {old} → {epoch}). Messages \
                 stored before the reset are gone; read positions start over."
            ));
        }
        e.current = Some(epoch.to_string());
    }
}

#[cfg(test)]
mod tests;
