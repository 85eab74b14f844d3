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
//!   new connection registers again.
//! - Liveness both ways: the hub pings us (tungstenite answers while we keep reading); we send
//!   an application `ping` every `ping_interval` and treat `idle` without any frame as a
//!   half-open connection, dropped and redialled.
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
//! - The hub token and `wss://` trust come with every dial ([`connect::connect_with`]).
//! - Pushed `message` frames bump a cheap unread hint and go out on a bounded broadcast
//!   channel (see [`HubClient::subscribe`]); nothing is buffered without bound.
//!
//! Bounds: [`OUTBOUND_QUEUE`] frames waiting to be written, [`PUSH_BUFFER`] pushed messages per
//! subscriber (older ones are dropped for a lagging subscriber; the hub keeps the mail), and the
//! pending-reply map holds at most one entry per in-flight tool call.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use sessions::wire::{
    ClientFrame, Envelope, Meta, PresenceMode, Register, RequestId, ServerFrame, codes,
};
use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    time::Instant,
};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    backoff::Backoff,
    config::{BridgeConfig, Timeouts},
    connect::{self, ClientAuth, HubSocket},
    owner::OwnerStore,
};

/// Frames queued for the connection task. Tool calls wait (bounded by the request timeout)
/// when it is full.
pub const OUTBOUND_QUEUE: usize = 64;
/// Pushed messages buffered per subscriber.
pub const PUSH_BUFFER: usize = 256;
/// The `rid` of `register` frames (replies to it are read before normal traffic starts).
const REGISTER_RID: &str = "register";

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkState {
    /// `start` was not called yet.
    NotStarted,
    /// Dialling or registering.
    Connecting {
        /// 1 for the first attempt after a working connection (or the very first).
        attempt: u32,
        /// Why the previous attempt failed, if one did.
        last_error: Option<String>,
    },
    /// Registered and usable.
    Connected {
        /// When the registration succeeded (Unix ms).
        since_ms: i64,
    },
    /// Waiting before the next attempt.
    Waiting {
        /// When the next attempt starts.
        retry_at: Instant,
        /// Why the last attempt or connection failed, in words.
        last_error: String,
        /// The hub refused our name (as opposed to being unreachable).
        rejected: bool,
    },
    /// The bridge is shutting down.
    Stopped,
}

/// A copy of the client's state for tool output.
#[derive(Debug, Clone)]
pub struct Snapshot {
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
    pub fn is_connected(&self) -> bool {
        matches!(self.state, LinkState::Connected { .. })
    }

    /// "not connected to the hub at URL (retrying in N s; last error: …)".
    pub fn not_connected_text(&self) -> String {
        match &self.state {
            LinkState::Connected { .. } => format!("connected to the hub at {}", self.url),
            LinkState::NotStarted => format!("not connected to the hub at {} yet", self.url),
            LinkState::Connecting {
                last_error: None, ..
            } => format!("not connected to the hub at {} (connecting now)", self.url),
            LinkState::Connecting {
                attempt,
                last_error: Some(e),
            } => format!(
                "not connected to the hub at {} (attempt {attempt} in progress; last error: {e})",
                self.url
            ),
            LinkState::Waiting {
                retry_at,
                last_error,
                rejected,
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
pub enum RequestError {
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
    pub fn maybe_delivered(&self) -> bool {
        matches!(
            self,
            Self::Lost { written: true } | Self::Timeout { written: true, .. } | Self::BadReply(_)
        )
    }
}

/// The reconnecting hub connection, shared by all tool calls. Cheap to clone.
#[derive(Clone)]
pub struct HubClient {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    timeouts: Timeouts,
    /// What `register` reports (see `meta.rs`); the MCP client's name is added at
    /// `initialize`, before the first connection.
    meta: Mutex<Meta>,
    ident: Mutex<Ident>,
    state: watch::Sender<LinkState>,
    link: Mutex<Option<Link>>,
    pending: Mutex<HashMap<i64, Pending>>,
    next_rid: AtomicU64,
    next_conn: AtomicU64,
    unread: Mutex<Option<u64>>,
    /// Backlog pushes still expected after `registered` (already in its `unread`, so they
    /// must not be counted again).
    backlog_left: AtomicU64,
    epoch: Mutex<EpochSeen>,
    pushes: broadcast::Sender<Envelope>,
    started: AtomicBool,
    stop: watch::Sender<bool>,
    registered: watch::Sender<Option<String>>,
    auth: ClientAuth,
    owners: Option<OwnerStore>,
    owner: Mutex<OwnerMemo>,
    /// The name is made up for this process (see `IdentitySource::transient`).
    transient: bool,
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

/// What this bridge could present as the owner secret of a name.
enum Held {
    /// No owner store (this client keeps no secrets).
    NoStore,
    /// The store has no file for the name.
    Nothing(std::path::PathBuf),
    /// The secret from this file.
    File(std::path::PathBuf),
    /// The secret minted on an earlier connection, not saved yet.
    Memory,
    /// The file exists but could not be read.
    Unreadable(String),
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

#[derive(Clone)]
struct Link {
    conn: u64,
    tx: mpsc::Sender<Outgoing>,
}

struct Outgoing {
    rid: Option<i64>,
    text: String,
}

struct Pending {
    conn: u64,
    written: bool,
    tx: oneshot::Sender<Result<ServerFrame, RequestError>>,
}

/// How one connection ended.
enum Ended {
    /// Dial, register or traffic failed; retry with backoff.
    Failed(String),
    /// The hub refused our name; retry with backoff.
    Rejected(String),
    /// We are shutting down.
    Stopped,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl HubClient {
    /// A client for `config`'s hub and identity, reporting `meta` on register. Not started.
    pub fn new(config: &BridgeConfig, meta: Meta) -> Self {
        let identity = &config.identity;
        let base = identity.source.auto_number_base.clone();
        let number = base
            .as_deref()
            .and_then(|b| identity.id.strip_prefix(b))
            .and_then(|rest| rest.parse::<u32>().ok())
            .unwrap_or(1);
        let (pushes, _) = broadcast::channel(PUSH_BUFFER);
        Self {
            inner: Arc::new(Inner {
                url: config.relay_url.clone(),
                timeouts: config.timeouts.clone(),
                meta: Mutex::new(meta),
                ident: Mutex::new(Ident {
                    id: identity.id.clone(),
                    base,
                    number,
                }),
                state: watch::Sender::new(LinkState::NotStarted),
                link: Mutex::new(None),
                pending: Mutex::new(HashMap::new()),
                next_rid: AtomicU64::new(1),
                next_conn: AtomicU64::new(1),
                unread: Mutex::new(None),
                backlog_left: AtomicU64::new(0),
                epoch: Mutex::new(EpochSeen::default()),
                pushes,
                started: AtomicBool::new(false),
                stop: watch::Sender::new(false),
                registered: watch::Sender::new(None),
                auth: config.security.auth.clone(),
                owners: config.security.owners.clone(),
                owner: Mutex::new(OwnerMemo::default()),
                transient: identity.source.transient,
            }),
        }
    }

    /// Reports which MCP client this bridge serves (`clientInfo` of `initialize`: Claude
    /// Code, Codex, Gemini CLI, …) in the `client` field of the register metadata, so the
    /// hub's console can say which agent a session is. Call before [`start`](Self::start).
    pub fn set_client(&self, name: &str, version: &str) {
        let bounded = |s: &str, n: usize| s.chars().take(n).collect::<String>();
        lock(&self.inner.meta).insert(
            "client".into(),
            serde_json::json!({"name": bounded(name, 64), "version": bounded(version, 32)}),
        );
    }

    /// Starts the connection task (once; later calls, and calls after [`Self::shutdown`], do
    /// nothing). Needs a tokio runtime.
    pub fn start(&self) {
        if self.inner.stopping() || self.inner.started.swap(true, Ordering::SeqCst) {
            return;
        }
        self.inner.state.send_replace(LinkState::Connecting {
            attempt: 1,
            last_error: None,
        });
        tokio::spawn(run(self.inner.clone()));
    }

    /// Resolves once [`Self::start`] was called: true, or false when the client was shut down
    /// without ever starting (a probe that hung up before registering).
    pub async fn wait_started(&self) -> bool {
        let mut rx = self.inner.state.subscribe();
        match rx.wait_for(|s| !matches!(s, LinkState::NotStarted)).await {
            Ok(s) => !matches!(*s, LinkState::Stopped),
            Err(_) => false,
        }
    }

    /// How long after `initialized` the server starts the connection by itself.
    pub fn register_delay(&self) -> Duration {
        self.inner.timeouts.register_delay
    }

    /// The hub URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The session id registered (or to be registered) now.
    pub fn id(&self) -> String {
        lock(&self.inner.ident).id.clone()
    }

    /// A copy of the connection state for display.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            url: self.inner.url.clone(),
            id: self.id(),
            state: self.inner.state.borrow().clone(),
            unread: *lock(&self.inner.unread),
            epoch: lock(&self.inner.epoch).current.clone(),
        }
    }

    /// A receiver of the state; changes whenever the connection does (for waiting in tests
    /// and, later, for notifications).
    pub fn watch_state(&self) -> watch::Receiver<LinkState> {
        self.inner.state.subscribe()
    }

    /// The name of the latest successful registration (updated on every reconnect), so the
    /// local registry can follow a name the hub gave us.
    pub fn watch_registered(&self) -> watch::Receiver<Option<String>> {
        self.inner.registered.subscribe()
    }

    /// Messages the hub pushes to this session, as they arrive (bounded; see [`PUSH_BUFFER`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Envelope> {
        self.inner.pushes.subscribe()
    }

    /// Records an unread count the hub reported.
    pub fn set_unread(&self, n: u64) {
        *lock(&self.inner.unread) = Some(n);
    }

    /// Records the store epoch seen in a reply; a change from the last one seen leaves a
    /// notice for [`Self::take_reset_notice`].
    pub fn observe_epoch(&self, epoch: &str) {
        self.inner.observe_epoch(epoch);
    }

    /// Notices the model must see with the next tool result: "the hub's history was reset"
    /// (once, after the store epoch changed) and, for as long as it lasts, a failure to save
    /// this session's owner secret ([`Self::owner_warning`]).
    pub fn take_reset_notice(&self) -> Option<String> {
        let reset = lock(&self.inner.epoch).notice.take();
        match (self.owner_warning(), reset) {
            (Some(w), Some(r)) => Some(format!("{w}\n\n{r}")),
            (w, r) => w.or(r),
        }
    }

    /// The problem with this session's owner secret, while there is one (it could not be
    /// saved, so the name would be lost when the bridge exits).
    pub fn owner_warning(&self) -> Option<String> {
        lock(&self.inner.owner).warning.clone()
    }

    /// Sends `frame` with a fresh `rid` and returns the hub's reply to it (which may be an
    /// `error` frame). Answers at once when disconnected; waits at most
    /// `connecting_grace` for a connection attempt in progress, then `request` for the reply.
    pub async fn request(&self, mut frame: ClientFrame) -> Result<ServerFrame, RequestError> {
        self.start();
        let inner = &self.inner;
        let link = self.ready_link().await?;
        let rid = inner.next_rid.fetch_add(1, Ordering::Relaxed) as i64;
        set_rid(&mut frame, RequestId::Int(rid));
        let text =
            serde_json::to_string(&frame).map_err(|e| RequestError::BadReply(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        lock(&inner.pending).insert(
            rid,
            Pending {
                conn: link.conn,
                written: false,
                tx,
            },
        );
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
            lock(&inner.pending).remove(&rid);
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
                let written = lock(&inner.pending).remove(&rid).is_none_or(|p| p.written);
                Err(RequestError::Timeout {
                    secs: inner.timeouts.request.as_secs(),
                    written,
                })
            }
        }
    }

    /// Lets a connection attempt that is under way finish (at most `connecting_grace`), so a
    /// status report right after start does not say "connecting" needlessly.
    pub async fn settle(&self) {
        let mut rx = self.inner.state.subscribe();
        let waited = tokio::time::timeout(
            self.inner.timeouts.connecting_grace,
            rx.wait_for(|s| !matches!(s, LinkState::NotStarted | LinkState::Connecting { .. })),
        )
        .await;
        drop(waited);
    }

    /// Waits up to `timeout` for a registered connection (starting the client if needed).
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        self.start();
        let mut rx = self.inner.state.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| matches!(s, LinkState::Connected { .. })),
        )
        .await;
        matches!(waited, Ok(Ok(_)))
    }

    /// Stops the connection task: closes the WebSocket politely (bounded), fails pending
    /// requests, and waits (bounded) until it is done.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        if !self.inner.started.load(Ordering::SeqCst) {
            self.inner.state.send_replace(LinkState::Stopped);
            return;
        }
        let mut rx = self.inner.state.subscribe();
        let _ = tokio::time::timeout(
            Duration::from_millis(500),
            rx.wait_for(|s| *s == LinkState::Stopped),
        )
        .await;
    }

    /// The current connection's queue, waiting briefly for an attempt in progress.
    async fn ready_link(&self) -> Result<Link, RequestError> {
        let inner = &self.inner;
        let mut rx = inner.state.subscribe();
        let deadline = Instant::now() + inner.timeouts.connecting_grace;
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                LinkState::Connected { .. } => {
                    if let Some(link) = lock(&inner.link).clone() {
                        return Ok(link);
                    }
                }
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
    fn observe_epoch(&self, epoch: &str) {
        let mut e = lock(&self.epoch);
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

    fn register_frame(&self, id: &str, owner_secret: Option<String>) -> ClientFrame {
        ClientFrame::Register(Register {
            client_id: Some(id.to_string()),
            meta: Some(lock(&self.meta).clone()),
            presence: Some(PresenceMode::None),
            // Keep owner secrets: a first claim makes the name ours.
            ownership: self.owners.is_some().then_some(true),
            owner_secret,
            // Unread mail is pushed right after `registered` (and again after a reconnect),
            // so the channel push announces what arrived while the session was away.
            backlog: Some(true),
            transient: self.transient.then_some(true),
            rid: Some(RequestId::Str(REGISTER_RID.into())),
            ..Default::default()
        })
    }

    /// The owner secret to present for `id`: one minted earlier and not saved yet, else the
    /// owner file (read on the blocking pool).
    async fn owner_secret(&self, id: &str) -> (Option<String>, Held) {
        if let Some((name, secret)) = &lock(&self.owner).unsaved
            && name == id
        {
            return (Some(secret.clone()), Held::Memory);
        }
        let Some(store) = self.owners.clone() else {
            return (None, Held::NoStore);
        };
        let name = id.to_string();
        let loaded =
            tokio::task::spawn_blocking(move || (store.path(&name), store.load(&name))).await;
        match loaded {
            Ok((Ok(path), Ok(Some(secret)))) => (Some(secret), Held::File(path)),
            Ok((Ok(path), Ok(None))) => (None, Held::Nothing(path)),
            Ok((_, Err(e))) => {
                tracing::warn!("{e}");
                (None, Held::Unreadable(e.to_string()))
            }
            Ok((Err(e), _)) => (None, Held::Unreadable(e.to_string())),
            Err(e) => (None, Held::Unreadable(e.to_string())),
        }
    }

    /// Saves the owner secret of `id` — one the hub just minted, or one kept in memory
    /// because saving failed before. On failure the secret stays in memory and a warning
    /// goes to stderr and to every tool result.
    async fn keep_owner_secret(&self, id: &str, minted: Option<String>) {
        if self.transient {
            // Memory only: this name dies with the process (see the module docs).
            if let Some(secret) = minted {
                lock(&self.owner).unsaved = Some((id.to_string(), secret));
            }
            return;
        }
        let secret = match minted {
            Some(s) => s,
            None => match &lock(&self.owner).unsaved {
                Some((name, s)) if name == id => s.clone(),
                _ => return,
            },
        };
        let Some(store) = self.owners.clone() else {
            return;
        };
        let (name, value) = (id.to_string(), secret.clone());
        let saved = tokio::task::spawn_blocking(move || store.save(&name, &value))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let mut memo = lock(&self.owner);
        match saved {
            Ok(path) => {
                tracing::info!("owner secret for {id} saved in {}", path.display());
                memo.unsaved = None;
                memo.warning = None;
            }
            Err(e) => {
                let warning = format!(
                    "WARNING: the hub made {id} an owned name, but its owner secret could not be \
                     saved ({e}). This bridge keeps it in memory and retries on every reconnect; \
                     if it exits first, {id} cannot be claimed again until the hub operator runs \
                     `claude-relay sessions release {id} --local` on the hub host. Make the \
                     owners directory writable to fix this."
                );
                tracing::error!("{warning}");
                memo.unsaved = Some((id.to_string(), secret));
                memo.warning = Some(warning);
            }
        }
    }

    /// After `name_in_use` or `not_owner`: the next numbered name, if this identity
    /// auto-numbers.
    fn next_number(&self) -> Option<String> {
        let mut ident = lock(&self.ident);
        let base = ident.base.clone()?;
        let next = ident.number.max(1) + 1;
        if next > sessions::identity::MAX_NUMBER {
            return None;
        }
        let id = sessions::identity::numbered(&base, next).ok()?;
        ident.number = next;
        ident.id = id.to_string();
        Some(ident.id.clone())
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Fails every request waiting on connection `conn`.
    fn fail_pending(&self, conn: u64) {
        let failed: Vec<Pending> = {
            let mut pending = lock(&self.pending);
            let rids: Vec<i64> = pending
                .iter()
                .filter(|(_, p)| p.conn == conn)
                .map(|(rid, _)| *rid)
                .collect();
            rids.iter().filter_map(|rid| pending.remove(rid)).collect()
        };
        for p in failed {
            let _ = p.tx.send(Err(RequestError::Lost { written: p.written }));
        }
    }

    fn mark_written(&self, rid: i64) {
        if let Some(p) = lock(&self.pending).get_mut(&rid) {
            p.written = true;
        }
    }

    /// Routes one text frame from the hub: a reply to its waiting request, or a push.
    fn dispatch(&self, text: &str) {
        let frame: ServerFrame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                // Fail the request it answers, if we can tell, instead of letting it time out.
                let rid = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v.get("rid").and_then(serde_json::Value::as_i64));
                let waiting = rid.and_then(|rid| lock(&self.pending).remove(&rid));
                let snippet: String = text.chars().take(200).collect();
                match waiting {
                    Some(p) => {
                        let _ =
                            p.tx.send(Err(RequestError::BadReply(format!("{e}: {snippet}"))));
                    }
                    None => {
                        tracing::warn!("ignoring an unreadable frame from the hub ({e}): {snippet}")
                    }
                }
                return;
            }
        };
        if let Some(RequestId::Int(rid)) = frame.rid()
            && let Some(p) = lock(&self.pending).remove(rid)
        {
            let _ = p.tx.send(Ok(frame));
            return;
        }
        match frame {
            ServerFrame::Message(envelope) => {
                let backlog = self
                    .backlog_left
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok();
                if !backlog && let Some(n) = lock(&self.unread).as_mut() {
                    *n += 1;
                }
                // No subscriber is fine: the hub keeps the mail; this is only a hint.
                let _ = self.pushes.send(envelope);
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
}

/// Resolves once shutdown was requested (the guard `wait_for` returns is not `Send`, so it is
/// dropped here rather than held in a `select!`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The connection task: dial, register, serve, and on failure wait and redial.
async fn run(inner: Arc<Inner>) {
    let t = inner.timeouts.clone();
    let mut backoff = Backoff::new(t.backoff_start, t.backoff_cap);
    let mut previous_error: Option<String> = None;
    let mut stop = inner.stop.subscribe();
    loop {
        if inner.stopping() {
            break;
        }
        inner.state.send_replace(LinkState::Connecting {
            attempt: backoff.attempts() + 1,
            last_error: previous_error.clone(),
        });
        let ended = tokio::select! {
            ended = connect_and_serve(&inner, &mut backoff) => ended,
            _ = stopped(&mut stop) => Ended::Stopped,
        };
        let (last_error, rejected) = match ended {
            Ended::Stopped => break,
            Ended::Failed(e) => (e, false),
            Ended::Rejected(e) => (e, true),
        };
        let delay = backoff.next_delay();
        tracing::info!("hub connection: {last_error}; retrying in {delay:?}");
        previous_error = Some(last_error.clone());
        inner.state.send_replace(LinkState::Waiting {
            retry_at: Instant::now() + delay,
            last_error,
            rejected,
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    *lock(&inner.link) = None;
    inner.state.send_replace(LinkState::Stopped);
}

async fn connect_and_serve(inner: &Arc<Inner>, backoff: &mut Backoff) -> Ended {
    let t = &inner.timeouts;
    let ws = match connect::connect_with(&inner.url, &inner.auth, t.connect).await {
        Ok(ws) => ws,
        Err(e) => return Ended::Failed(e.to_string()),
    };
    let conn = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = ws.split();
    if let Err(ended) = register(inner, &mut sink, &mut stream).await {
        let _ =
            tokio::time::timeout(Duration::from_millis(200), sink.send(Message::Close(None))).await;
        return ended;
    }
    backoff.reset();
    let (tx, mut rx) = mpsc::channel::<Outgoing>(OUTBOUND_QUEUE);
    *lock(&inner.link) = Some(Link { conn, tx });
    inner.state.send_replace(LinkState::Connected {
        since_ms: sessions::time::now_ms(),
    });

    let mut stop = inner.stop.subscribe();
    let mut ping = tokio::time::interval_at(Instant::now() + t.ping_interval, t.ping_interval);
    let mut last_frame = Instant::now();
    let ended = loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(out) = out else { break Ended::Failed("outbound queue closed".into()) };
                match tokio::time::timeout(t.request, sink.send(Message::text(out.text))).await {
                    Ok(Ok(())) => {
                        if let Some(rid) = out.rid {
                            inner.mark_written(rid);
                        }
                    }
                    Ok(Err(e)) => break Ended::Failed(format!("writing to the hub failed: {e}")),
                    Err(_) => break Ended::Failed("writing to the hub timed out".into()),
                }
            }
            msg = stream.next() => {
                match msg {
                    None => break Ended::Failed("the hub closed the connection".into()),
                    Some(Err(e)) => break Ended::Failed(format!("connection error: {e}")),
                    Some(Ok(m)) => {
                        last_frame = Instant::now();
                        match m {
                            Message::Text(text) => inner.dispatch(&text),
                            Message::Close(frame) => {
                                let why = frame
                                    .map(|f| format!(" ({})", f.reason))
                                    .filter(|s| s != " ()")
                                    .unwrap_or_default();
                                break Ended::Failed(format!("the hub closed the connection{why}"));
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ = ping.tick() => {
                let text = serde_json::to_string(&ClientFrame::Ping(Default::default()))
                    .unwrap_or_default();
                match tokio::time::timeout(t.request, sink.send(Message::text(text))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Ended::Failed(format!("writing to the hub failed: {e}")),
                    Err(_) => break Ended::Failed("writing to the hub timed out".into()),
                }
            }
            _ = tokio::time::sleep_until(last_frame + t.idle) => {
                break Ended::Failed(format!(
                    "no traffic from the hub for {} s; the connection looked dead",
                    t.idle.as_secs()
                ));
            }
            _ = stopped(&mut stop) => {
                let _ = tokio::time::timeout(Duration::from_millis(200), sink.send(Message::Close(None))).await;
                break Ended::Stopped;
            }
        }
    };
    // Close the queue first: a request racing this teardown then fails to enqueue (and says
    // "not sent") instead of waiting for a reply that can no longer come.
    rx.close();
    {
        let mut link = lock(&inner.link);
        if link.as_ref().is_some_and(|l| l.conn == conn) {
            *link = None;
        }
    }
    inner.fail_pending(conn);
    ended
}

type Sink = futures_util::stream::SplitSink<HubSocket, Message>;
type Stream = futures_util::stream::SplitStream<HubSocket>;

/// Claims our name on a fresh connection, moving to the next number on `name_in_use` or
/// `not_owner` when the identity allows it. A minted owner secret is saved before the name
/// is used.
async fn register(inner: &Inner, sink: &mut Sink, stream: &mut Stream) -> Result<(), Ended> {
    let t = &inner.timeouts;
    loop {
        let id = lock(&inner.ident).id.clone();
        let (secret, held) = inner.owner_secret(&id).await;
        let frame = inner.register_frame(&id, secret);
        let text = serde_json::to_string(&frame).unwrap_or_default();
        match tokio::time::timeout(t.request, sink.send(Message::text(text))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Ended::Failed(format!("writing to the hub failed: {e}"))),
            Err(_) => return Err(Ended::Failed("writing to the hub timed out".into())),
        }
        let reply = tokio::time::timeout(t.request, async {
            while let Some(msg) = stream.next().await {
                let text = match msg {
                    Ok(Message::Text(text)) => text,
                    Ok(Message::Close(_)) => break,
                    Ok(_) => continue,
                    Err(e) => return Err(format!("connection error: {e}")),
                };
                match serde_json::from_str::<ServerFrame>(&text) {
                    Ok(f @ (ServerFrame::Registered(_) | ServerFrame::RegisterRejected(_))) => {
                        return Ok(f);
                    }
                    Ok(ServerFrame::Error(e))
                        if e.rid == Some(RequestId::Str(REGISTER_RID.into())) =>
                    {
                        if e.code.as_deref() == Some(codes::UNAUTHORIZED) {
                            return Err(format!(
                                "the hub at {} requires a token and {}: set {} or {} in this \
                                 MCP server's env",
                                inner.url,
                                inner.auth.token_origin(),
                                connect::RELAY_TOKEN_ENV,
                                connect::RELAY_TOKEN_FILE_ENV
                            ));
                        }
                        return Err(format!(
                            "the hub refused to register {id}: {}",
                            sessions::display::line(&e.message)
                        ));
                    }
                    _ => inner.dispatch(&text),
                }
            }
            Err("the hub closed the connection during registration".to_string())
        })
        .await;
        let frame = match reply {
            Err(_) => {
                return Err(Ended::Failed(format!(
                    "the hub did not answer register within {} s",
                    t.request.as_secs()
                )));
            }
            Ok(Err(e)) => return Err(Ended::Failed(e)),
            Ok(Ok(frame)) => frame,
        };
        match frame {
            ServerFrame::Registered(r) => {
                // Only the name asked for (auto-numbering happens here, by asking for the
                // next number): never keep a secret for, or act under, a name we did not ask.
                if r.client_id != id || sessions::id::validate(&r.client_id).is_err() {
                    return Err(Ended::Rejected(format!(
                        "the server at {} answered register {id} with the name \"{}\", not the \
                         one asked for; not using it (is RELAY_URL a claude-relay hub?)",
                        inner.url,
                        sessions::display::line(&r.client_id.chars().take(80).collect::<String>())
                    )));
                }
                // Before the name is used: a secret the hub sends exactly once.
                inner
                    .keep_owner_secret(&r.client_id, r.owner_secret.clone())
                    .await;
                let mut ident = lock(&inner.ident);
                // From now on the name is ours; a reconnect must come home to the same one.
                ident.base = None;
                drop(ident);
                if let Some(epoch) = &r.epoch {
                    inner.observe_epoch(epoch);
                }
                if let Some(n) = r.unread {
                    *lock(&inner.unread) = Some(n);
                    // The hub pushes up to BACKLOG_MAX of them right after `registered`.
                    inner
                        .backlog_left
                        .store(n.min(sessions::wire::BACKLOG_MAX), Ordering::Release);
                }
                tracing::info!("registered as {} at {}", r.client_id, inner.url);
                inner.registered.send_replace(Some(r.client_id.clone()));
                return Ok(());
            }
            ServerFrame::RegisterRejected(r) => {
                let code = r.code.as_deref();
                let taken = code == Some(codes::NAME_IN_USE) || code == Some(codes::NOT_OWNER);
                if taken && let Some(next) = inner.next_number() {
                    tracing::info!("{id} is taken; trying {next}");
                    continue;
                }
                let why = match code {
                    Some(codes::NAME_IN_USE) => {
                        format!("the name {id} is held by another live connection")
                    }
                    Some(codes::NOT_OWNER) => not_owner_text(&id, &held),
                    Some(codes::UNAUTHORIZED) => format!(
                        "the hub at {} refused this bridge's token ({}); check {} / {}",
                        inner.url,
                        inner.auth.token_origin(),
                        connect::RELAY_TOKEN_ENV,
                        connect::RELAY_TOKEN_FILE_ENV
                    ),
                    _ => format!(
                        "the hub rejected the name {id}: {}",
                        sessions::display::line(&r.reason)
                    ),
                };
                return Err(Ended::Rejected(why));
            }
            _ => unreachable!("only registration replies leave the read loop"),
        }
    }
}

/// Why an owned name was refused, and how to move it here, for the tools and the log.
fn not_owner_text(id: &str, held: &Held) -> String {
    let how = format!(
        "To use {id} here, copy ~/.claude-relay/owners/{id} from the machine that claimed it \
         into this machine's owners directory (mode 0600), or run `claude-relay sessions \
         release {id}` there; or pick another name"
    );
    match held {
        Held::Nothing(path) => format!(
            "the name {id} is owned by a session elsewhere (another machine or \
             CLAUDE_RELAY_HOME) and there is no owner secret for it here ({}). {how}",
            path.display()
        ),
        Held::File(path) => format!(
            "the name {id} is owned, and the owner secret in {} is not its current one (it was \
             released and claimed again elsewhere?). {how}",
            path.display()
        ),
        Held::Memory => format!(
            "the name {id} is owned, and the hub refused the owner secret this bridge kept in \
             memory (the name was released and claimed again elsewhere?). {how}"
        ),
        Held::Unreadable(e) => {
            format!("the name {id} is owned, and its owner secret could not be read: {e}")
        }
        Held::NoStore => format!("the name {id} is owned and this client keeps no owner secrets"),
    }
}

/// Puts `rid` on any client frame.
fn set_rid(frame: &mut ClientFrame, rid: RequestId) {
    frame.set_rid(rid);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rid_is_set_on_every_frame_kind() {
        let mut f = ClientFrame::GetStatus(Default::default());
        set_rid(&mut f, RequestId::Int(9));
        assert_eq!(f.rid(), Some(&RequestId::Int(9)));
    }
}
