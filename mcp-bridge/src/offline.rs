//! The offline send path: when `relay_send` queues a message on this machine instead of
//! sending it, and the one task that drains that queue to the hub (docs/BRIDGE.md, "Offline
//! outbox"). The queue itself — files, fsync, bounds, the drain lock — is [`crate::outbox`].
//!
//! Order: messages reach the hub in the order `relay_send` was called, whether they went
//! straight out or through the queue. One async lock ([`Offline::order`]) is held by a direct
//! send from its "is anything queued?" check to its outcome, and by the drainer for each
//! entry's round trip. A send that finds something queued appends behind it rather than
//! sending, so a new message never overtakes a queued one; the drain sends one entry at a
//! time, oldest first, so a transient refusal of one entry cannot let the next one pass it.
//!
//! Exactly once: an entry is (re)sent with the idempotency key its first attempt used; the
//! hub stores a (sender, key) pair once and answers a repeat with the original's ack
//! (docs/PROTOCOL.md, `message.key`). An entry leaves the queue only on that ack, or when
//! the hub refuses it for good (then the model is told, once).
//!
//! Bounds: the queue's own ([`crate::outbox::Limits`]); [`BATCH`] entries read per pass; one
//! waiter per in-flight `relay_send` in the waiter map (each removes itself).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use relay_local::display;
use relay_proto::{
    SessionId,
    wire::{ErrorFrame, Sent, ServerFrame, codes},
};
use tokio::sync::{Notify, oneshot};

use crate::{
    backoff::Backoff,
    hub_client::{HubClient, LinkState},
    outbox::{Drain, Entry, Limits, Outbox, OutboxError, Stats},
};

/// Entries read from disk per drain pass.
const BATCH: usize = 32;
/// How often a bridge that is not the drainer (another process of the session holds the
/// drain lock) tries again to become it.
const DRAIN_LOCK_RETRY: Duration = Duration::from_secs(2);
/// How often the drainer looks at the queue without being kicked (entries another process
/// of this session appended).
const RECHECK: Duration = Duration::from_secs(10);
/// First and largest pause after a failed attempt (before jitter).
const RETRY_START: Duration = Duration::from_millis(250);
const RETRY_CAP: Duration = Duration::from_secs(10);

/// A message to queue: exactly the `message` frame a resend needs.
pub(crate) struct ToQueue<'a> {
    /// The idempotency key of its first attempt.
    pub key: &'a str,
    /// A session id, or `all`.
    pub to: &'a str,
    /// The text.
    pub content: &'a str,
    /// The id of the message it answers, if it is a reply.
    pub reply_to: Option<&'a str>,
}

/// What became of a queued message.
#[derive(Debug)]
pub(crate) enum Settled {
    /// The hub acknowledged it (stored; maybe delivered).
    Sent(Sent),
    /// The hub refused it for good: the reason, in the hub's words.
    Refused(String),
}

/// The outbox as `relay_send` and `relay_status` use it, and its drainer.
pub(crate) struct Offline {
    hub: HubClient,
    session: String,
    /// Where the session's outbox lives (created by the first append, not before: a bridge
    /// that never queues — a probe, a made-up name that never lost its hub — leaves nothing).
    dir: PathBuf,
    /// Opened on first use.
    outbox: Mutex<Option<Outbox>>,
    /// Held across "is anything queued?" + send, and across each drained entry (module doc).
    order: tokio::sync::Mutex<()>,
    /// Something was appended: drain now.
    kick: Notify,
    /// Sends waiting to hear what became of their queued message, by key.
    waiters: Mutex<HashMap<String, oneshot::Sender<Settled>>>,
}

impl Offline {
    /// The outbox of session `session` (its directory under the relay home) over `hub`.
    pub(crate) fn new(hub: HubClient, session: &str) -> Arc<Self> {
        Arc::new(Self {
            hub,
            session: session.to_string(),
            dir: relay_local::paths::outbox_dir().join(session),
            outbox: Mutex::new(None),
            order: tokio::sync::Mutex::new(()),
            kick: Notify::new(),
            waiters: Mutex::new(HashMap::new()),
        })
    }

    /// Starts the drainer: once the hub connection has started (a probe that hangs up first
    /// never touches the outbox), until the bridge stops.
    pub(crate) fn start(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            if me.hub.wait_started().await {
                me.drain_loop().await;
            }
        });
    }

    /// The send-order lock (module doc).
    pub(crate) async fn order(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.order.lock().await
    }

    /// Messages waiting in the queue now.
    pub(crate) async fn queued(&self) -> Result<usize, OutboxError> {
        Ok(self.stats().await?.queued)
    }

    /// The queue's size, age and last error (empty when it was never created).
    pub(crate) async fn stats(&self) -> Result<Stats, OutboxError> {
        if !self.exists() {
            return Ok(Stats {
                limits: Limits::default(),
                ..Stats::default()
            });
        }
        let outbox = self.outbox()?;
        blocking(move || outbox.stats()).await
    }

    /// Queues `m` (durable when this returns) and wakes the drainer. The receiver hears what
    /// became of it, if the caller wants to wait.
    pub(crate) async fn append(
        &self,
        m: ToQueue<'_>,
    ) -> Result<(Entry, oneshot::Receiver<Settled>), OutboxError> {
        let outbox = self.outbox()?;
        let key = m.key;
        let (k, t, c) = (key.to_string(), m.to.to_string(), m.content.to_string());
        let r = m.reply_to.map(str::to_string);
        let (tx, rx) = oneshot::channel();
        self.lock_waiters().insert(key.to_string(), tx);
        match blocking(move || outbox.append_reply(&k, &t, &c, r.as_deref())).await {
            Ok(entry) => {
                self.kick.notify_one();
                Ok((entry, rx))
            }
            Err(e) => {
                self.lock_waiters().remove(key);
                Err(e)
            }
        }
    }

    /// The caller no longer waits for `key`'s outcome.
    pub(crate) fn forget_waiter(&self, key: &str) {
        self.lock_waiters().remove(key);
    }

    /// Queued messages the hub refused for good and nobody was told of yet, as one notice for
    /// the model (then forgotten), or `None`.
    pub(crate) async fn rejected_notice(&self) -> Option<String> {
        if !self.exists() {
            return None;
        }
        let outbox = self.outbox().ok()?;
        let rejected = match blocking(move || outbox.take_rejected()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("outbox: could not read refused messages: {e}");
                return None;
            }
        };
        if rejected.is_empty() {
            return None;
        }
        let lines: Vec<String> = rejected.iter().map(refused_line).collect();
        Some(format!(
            "The hub refused {} queued on this machine — NOT delivered, and not queued any \
             more:\n{}",
            crate::format::plural(rejected.len() as u64, "message", "messages"),
            lines.join("\n")
        ))
    }

    /// Whether the outbox directory exists (opened here, or left by an earlier bridge).
    fn exists(&self) -> bool {
        self.outbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
            || self.dir.is_dir()
    }

    fn outbox(&self) -> Result<Outbox, OutboxError> {
        let mut slot = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(o) = &*slot {
            return Ok(o.clone());
        }
        if let Err(e) = SessionId::parse(&self.session) {
            return Err(OutboxError::Invalid(format!(
                "session id {:?}: {e}",
                self.session
            )));
        }
        let opened = Outbox::open(self.dir.clone(), Limits::default())?;
        *slot = Some(opened.clone());
        Ok(opened)
    }

    fn lock_waiters(&self) -> MutexGuard<'_, HashMap<String, oneshot::Sender<Settled>>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells whoever waits for `key`; false when nobody does (or they stopped listening).
    fn settle(&self, key: &str, outcome: Settled) -> bool {
        match self.lock_waiters().remove(key) {
            Some(tx) => tx.send(outcome).is_ok(),
            None => false,
        }
    }

    /// Whether someone still waits for `key`'s outcome.
    fn has_waiter(&self, key: &str) -> bool {
        self.lock_waiters()
            .get(key)
            .is_some_and(|tx| !tx.is_closed())
    }

    /// Becomes the drainer (retrying while another process of this session is), then drains
    /// whenever connected, until the bridge stops.
    async fn drain_loop(&self) {
        let mut state = self.hub.watch_state();
        // Nothing was ever queued for this session here: wait for the first append (ours, or
        // another process's).
        while !self.exists() {
            tokio::select! {
                _ = self.kick.notified() => {}
                _ = tokio::time::sleep(RECHECK) => {}
                _ = state.wait_for(|s| matches!(s, LinkState::Stopped)) => return,
            }
        }
        let mut told = false;
        let drain = loop {
            let attempt = self.outbox().map(|o| blocking(move || o.try_drain()));
            let result = match attempt {
                Ok(fut) => fut.await,
                Err(e) => Err(e),
            };
            match result {
                Ok(Some(d)) => break Arc::new(d),
                Ok(None) if !told => {
                    told = true;
                    tracing::info!(
                        "outbox: another bridge of {} drains its outbox; waiting",
                        self.session
                    );
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("outbox: cannot drain: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(DRAIN_LOCK_RETRY) => {}
                _ = state.wait_for(|s| matches!(s, LinkState::Stopped)) => return,
            }
        };
        let mut retry = Backoff::new(RETRY_START, RETRY_CAP);
        loop {
            let connected = state
                .wait_for(|s| matches!(s, LinkState::Connected { .. } | LinkState::Stopped))
                .await
                .map(|s| matches!(*s, LinkState::Connected { .. }));
            if !matches!(connected, Ok(true)) {
                return;
            }
            let batch = {
                let d = drain.clone();
                blocking(move || d.pending(BATCH)).await
            };
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("outbox: cannot read the queue: {e}");
                    tokio::time::sleep(retry.next_delay()).await;
                    continue;
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = self.kick.notified() => {}
                    _ = state.changed() => {}
                    _ = tokio::time::sleep(RECHECK) => {}
                }
                continue;
            }
            for entry in batch {
                let _order = self.order.lock().await;
                match self.send_entry(&drain, entry).await {
                    None => retry.reset(),
                    Some(pause) => {
                        let pause = pause.unwrap_or_else(|| retry.next_delay());
                        drop(_order);
                        tokio::time::sleep(pause).await;
                        break;
                    }
                }
            }
        }
    }

    /// Sends one entry with its own key. `None`: it left the queue (acked or refused for
    /// good); `Some(pause)`: it stays, try again after `pause` (or the backoff's delay).
    async fn send_entry(&self, drain: &Arc<Drain>, entry: Entry) -> Option<Option<Duration>> {
        let reply = self.hub.request(entry.frame()).await;
        let d = drain.clone();
        let e2 = entry.clone();
        match reply {
            Ok(ServerFrame::Sent(sent)) => {
                if let Err(e) = blocking(move || d.ack(&e2)).await {
                    // Still queued on disk: it is resent with the same key, and the hub
                    // answers that resend as a duplicate — stored once either way.
                    tracing::warn!("outbox: could not remove an acknowledged message: {e}");
                    return Some(None);
                }
                tracing::info!(
                    "outbox: sent a queued message to {} ({})",
                    entry.to,
                    sent.id
                );
                self.settle(&entry.key, Settled::Sent(sent));
                None
            }
            Ok(ServerFrame::Error(err)) if transient(&err) => {
                let why = format!("the hub said: {}", display::line(&err.message));
                self.failed(drain, &entry, why).await;
                Some(err.retry_after_ms.map(Duration::from_millis))
            }
            Ok(ServerFrame::Error(err)) => {
                let why = display::line(&err.message).into_owned();
                tracing::warn!(
                    "outbox: the hub refused a queued message to {}: {why}",
                    entry.to
                );
                let removed = if self.has_waiter(&entry.key) {
                    // Its sender is still waiting: the answer tells the model.
                    blocking(move || d.ack(&e2)).await.map(|_| ())
                } else {
                    let w = why.clone();
                    blocking(move || d.reject(&e2, &w)).await.map(|_| ())
                };
                if let Err(e) = removed {
                    tracing::warn!("outbox: could not set a refused message aside: {e}");
                    return Some(None);
                }
                self.settle(&entry.key, Settled::Refused(why));
                None
            }
            Ok(other) => {
                let why = format!(
                    "the hub answered with an unexpected frame ({})",
                    crate::actions::frame_type(&other)
                );
                self.failed(drain, &entry, why).await;
                Some(None)
            }
            Err(e) => {
                self.failed(drain, &entry, e.to_string()).await;
                Some(None)
            }
        }
    }

    /// Records a failed attempt (for `relay_status`); the entry stays queued.
    async fn failed(&self, drain: &Arc<Drain>, entry: &Entry, why: String) {
        tracing::info!("outbox: sending a queued message failed: {why}");
        let (d, e) = (drain.clone(), entry.clone());
        if let Err(err) = blocking(move || d.record_failure(&e, &why)).await {
            tracing::warn!("outbox: could not record a failed attempt: {err}");
        }
    }
}

/// Refusals worth retrying: the hub could not take it now, not "never".
fn transient(e: &ErrorFrame) -> bool {
    matches!(
        e.code.as_deref(),
        Some(codes::RATE_LIMITED | codes::UNAVAILABLE | codes::NOT_REGISTERED)
    )
}

/// "  →CC-2 "first words…" — reason" for the refusal notice.
fn refused_line(e: &Entry) -> String {
    let preview: String = e.content.chars().take(40).collect();
    let cut = if e.content.chars().count() > 40 {
        "…"
    } else {
        ""
    };
    format!(
        "  →{} \"{}{cut}\" — {}",
        display::line(&e.to),
        display::line(&preview.replace('\n', " ")),
        display::line(e.last_error.as_deref().unwrap_or("refused"))
    )
}

/// Runs blocking outbox work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OutboxError> + Send + 'static,
) -> Result<T, OutboxError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(OutboxError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}
