//! What each tool does: the hub requests behind it and the honest sentence it answers with.
//!
//! The rules the wording keeps (docs/BRIDGE.md, "Tools"):
//! - `relay_send` claims success only from the hub's `sent` ack, and says which: delivered
//!   live, or stored for an offline session. With the offline outbox on (the default), a
//!   message the hub did not take — unreachable, or written with no ack — is queued on this
//!   machine and the answer says exactly that: "queued on this machine … not delivered yet"
//!   (see [`QUEUED_UNREACHABLE`]); a message sent while others wait in the queue goes behind
//!   them. With `RELAY_OUTBOX=off`, nothing written says "NOT sent" and written-but-no-ack
//!   says the outcome is unknown and how to check — never a guess.
//! - `relay_receive` shows unread inbound mail oldest first and marks read exactly what it
//!   showed; whatever did not fit stays unread and is counted in "N more".
//! - `relay_wait` is `relay_receive {count: 1}` that, when nothing is unread, waits for the
//!   hub to push a message (no polling) before it reads; one wait at a time per bridge.
//! - Disconnected, every hub-backed tool answers at once with the connection state.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt::Write as _,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use relay_local::display;
use relay_proto::wire::{
    ClientFrame, ErrorFrame, GetHistory, GetSessions, MarkRead, Receive, SendMessage, ServerFrame,
    SessionView,
};

use tokio::sync::broadcast;

use crate::{
    format::{self, BODY_CAP, RESULT_BUDGET, SINGLE_BODY_CAP},
    hub_client::{HubClient, LinkState, RequestError},
    offline::{Offline, Settled},
    tools::{ReceiveArgs, ToolCall, WaitArgs},
};

/// What `relay_send` says when it queued a message because the hub is unreachable. Words
/// chosen so the model cannot read it as sent or delivered (checked by a test).
pub(crate) const QUEUED_UNREACHABLE: &str = "Queued on this machine — the hub is unreachable; \
     it will be sent when the hub is back; not delivered yet.";
/// What `relay_send` says when it queued a message whose first attempt got no answer.
pub(crate) const QUEUED_IN_DOUBT: &str = "Queued on this machine — the hub did not confirm \
     it (it may already have it); it will be resent with the same key when the hub is back, \
     so it is stored once; not delivered yet.";
/// The rest of a queued answer: do not resend by hand.
const QUEUED_TAIL: &str = "Do not send it again; relay_status shows the outbox.";

/// A tool's answer: text for the model, whether it is an error result, and (for the task
/// tools) the record as `structuredContent`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    /// Plain text, short.
    pub text: String,
    /// Marks the result `isError` (the call did not do what was asked).
    pub is_error: bool,
    /// `structuredContent`, matching the tool's `outputSchema`.
    pub structured: Option<serde_json::Value>,
}

impl Reply {
    /// A normal result.
    pub(crate) fn ok(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            is_error: false,
            structured: None,
        }
    }

    /// An error result.
    pub(crate) fn error(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            is_error: true,
            structured: None,
        }
    }

    /// The same answer with `structuredContent`.
    pub(crate) fn with_structured(mut self, value: serde_json::Value) -> Self {
        self.structured = Some(value);
        self
    }
}

/// How long `relay_send` waits for a reconnect before resending a message whose ack was lost.
const RESEND_WAIT: Duration = Duration::from_secs(5);
/// How many sends with an unknown outcome keep their key for a safe retry.
const UNSETTLED_MAX: usize = 16;
/// How long such a key is kept.
const UNSETTLED_TTL: Duration = Duration::from_secs(600);

/// Idempotency keys for `relay_send`.
///
/// Every send carries a fresh key. When its outcome is unknown (written, no ack), the key is
/// remembered with the recipient and a hash of the text, so that the model's natural reaction
/// — sending the same message again — reuses it and the hub stores the message at most once.
/// Bounded: [`UNSETTLED_MAX`] entries, each forgotten after [`UNSETTLED_TTL`].
struct SendKeys {
    prefix: String,
    counter: std::sync::atomic::AtomicU64,
    unsettled: Mutex<VecDeque<Unsettled>>,
}

struct Unsettled {
    to: String,
    hash: u64,
    key: String,
    at: Instant,
    /// Whether the send this key belongs to is still in doubt (set by `remember`).
    doubtful: bool,
}

impl SendKeys {
    fn new() -> Self {
        Self {
            prefix: format!(
                "b{:x}-{:x}",
                std::process::id(),
                relay_proto::time::now_ms()
            ),
            counter: std::sync::atomic::AtomicU64::new(1),
            unsettled: Mutex::new(VecDeque::new()),
        }
    }

    fn list(&self) -> std::sync::MutexGuard<'_, VecDeque<Unsettled>> {
        self.unsettled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The key for sending `content` to `to`: the one of an earlier doubtful identical send,
    /// else a new one (tracked until settled).
    fn key_for(&self, to: &str, content: &str) -> String {
        let mut h = DefaultHasher::new();
        content.hash(&mut h);
        let hash = h.finish();
        let mut list = self.list();
        list.retain(|u| u.at.elapsed() < UNSETTLED_TTL);
        if let Some(u) = list
            .iter()
            .find(|u| u.doubtful && u.to == to && u.hash == hash)
        {
            return u.key.clone();
        }
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!("{}-{n}", self.prefix);
        if list.len() >= UNSETTLED_MAX {
            // Forget the oldest entry that is not in doubt, else the oldest.
            let victim = list.iter().position(|u| !u.doubtful).unwrap_or(0);
            list.remove(victim);
        }
        list.push_back(Unsettled {
            to: to.to_string(),
            hash,
            key: key.clone(),
            at: Instant::now(),
            doubtful: false,
        });
        key
    }

    /// The send with `key` has an unknown outcome: keep its key for a retry.
    fn remember(&self, key: &str) {
        if let Some(u) = self.list().iter_mut().find(|u| u.key == key) {
            u.doubtful = true;
            u.at = Instant::now();
        }
    }

    /// Whether `key` belongs to an earlier send whose outcome is still unknown.
    fn is_unsettled(&self, key: &str) -> bool {
        self.list().iter().any(|u| u.key == key && u.doubtful)
    }

    /// The send with `key` has a definite outcome.
    fn settle(&self, key: &str) {
        self.list().retain(|u| u.key != key);
    }
}

/// One `relay_send`: the `message` frame it sends (or queues), under which key.
struct Draft {
    key: String,
    /// A session id, or `all`.
    target: String,
    content: String,
    broadcast: bool,
    /// The id of the message this one answers.
    reply_to: Option<String>,
}

impl Draft {
    fn frame(&self) -> ClientFrame {
        ClientFrame::Message(SendMessage {
            to: Some(self.target.clone()),
            content: self.content.clone(),
            key: Some(self.key.clone()),
            reply_to: self.reply_to.clone(),
            rid: None,
        })
    }

    /// What the outbox keeps of it: exactly what the resend needs.
    fn entry(&self) -> crate::offline::ToQueue<'_> {
        crate::offline::ToQueue {
            key: &self.key,
            to: &self.target,
            content: &self.content,
            reply_to: self.reply_to.as_deref(),
        }
    }
}

/// What `relay_send` says about a message the hub acknowledged: delivered live, or stored
/// for a session that is offline (or, for `all`, how many took it).
fn sent_text(s: &relay_proto::wire::Sent, d: &Draft) -> String {
    let target = &d.target;
    let mut text = if d.broadcast {
        let n = s.recipients.unwrap_or(u32::from(s.delivered));
        if n == 0 {
            format!(
                "Sent to all — stored; no other session is online right now. id {}",
                display::line(&s.id)
            )
        } else {
            format!(
                "Sent to all: {} online took it — id {}",
                format::plural(u64::from(n), "session", "sessions"),
                display::line(&s.id)
            )
        }
    } else if s.delivered {
        format!("Delivered to {target} (live) — id {}", display::line(&s.id))
    } else {
        format!(
            "Stored for {target} (offline); they get it when they connect — id {}",
            display::line(&s.id)
        )
    };
    if let Some(r) = &d.reply_to {
        let _ = write!(text, ", answering {}", display::line(r));
    }
    if s.duplicate {
        text.push_str(
            " (the hub already had this message from an earlier attempt; it was not stored \
             twice)",
        );
    }
    text
}

/// A session this machine's registry knows, for `relay_sessions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LocalSession {
    /// Session id.
    pub id: String,
    /// `running`, `named` or `ended`.
    pub state: String,
    /// Whether the agent process still runs (`None`: unknown or no process recorded).
    pub alive: Option<bool>,
    /// Agent pid, when recorded.
    pub pid: Option<u32>,
    /// Host name.
    pub host: String,
    /// Working directory.
    pub cwd: String,
    /// When it ended or started, Unix ms (for "last seen").
    pub last_seen_ms: Option<i64>,
}

/// Reads the local registry (injected, so the tools do not depend on where it lives).
pub(crate) type LocalSessions = Arc<dyn Fn() -> Result<Vec<LocalSession>, String> + Send + Sync>;

/// The tool implementations, over one hub client.
pub(crate) struct Relay {
    hub: HubClient,
    local: LocalSessions,
    id_source: String,
    keys: SendKeys,
    /// The offline outbox; `None` with `RELAY_OUTBOX=off`.
    offline: Option<Arc<Offline>>,
    /// One unread read at a time: two concurrent `relay_receive` calls would otherwise both
    /// be shown the same page before either marks it read.
    reading: tokio::sync::Mutex<()>,
    /// One `relay_wait` at a time: a second concurrent wait is refused rather than queued, so
    /// a harness that retries cannot stack up blocked calls.
    waiting: tokio::sync::Mutex<()>,
}

/// What one unread read produced.
enum Unread {
    /// Messages were shown (and marked read): the reply.
    Shown(Reply),
    /// Nothing unread: the "No unread messages" reply.
    Empty(Reply),
    /// The read failed; `disconnected` when it failed only because there is no connection
    /// (worth waiting for a reconnect).
    Failed { reply: Reply, disconnected: bool },
}

impl Unread {
    fn into_reply(self) -> Reply {
        match self {
            Self::Shown(r) | Self::Empty(r) | Self::Failed { reply: r, .. } => r,
        }
    }
}

impl Relay {
    /// Tools backed by `hub`; `id_source` says where the session id came from (for status).
    pub(crate) fn new(hub: HubClient, local: LocalSessions, id_source: String) -> Self {
        Self {
            hub,
            local,
            id_source,
            keys: SendKeys::new(),
            offline: None,
            reading: tokio::sync::Mutex::new(()),
            waiting: tokio::sync::Mutex::new(()),
        }
    }

    /// The same tools with the offline outbox: `relay_send` queues what the hub does not
    /// take, `relay_status` shows the queue.
    pub(crate) fn with_outbox(mut self, offline: Arc<Offline>) -> Self {
        self.offline = Some(offline);
        self
    }

    /// The hub client.
    pub(crate) fn hub(&self) -> &HubClient {
        &self.hub
    }

    /// Runs one parsed tool call.
    pub(crate) async fn call(&self, call: ToolCall) -> Reply {
        let mut reply = match call {
            ToolCall::Send {
                message,
                to,
                reply_to,
            } => self.send(message, to, reply_to).await,
            ToolCall::Receive(args) if args.search.is_some() => self.search(args).await,
            ToolCall::Receive(args) if args.is_history() => self.history(args).await,
            ToolCall::Receive(args) => self.read_unread(args).await.into_reply(),
            ToolCall::Wait(args) => self.wait(args).await,
            ToolCall::Peers => self.peers().await,
            ToolCall::Status => self.status().await,
            ToolCall::Sessions => self.sessions().await,
            ToolCall::Task(call) => self.task(call).await,
        };
        if let Some(notice) = self.hub.take_reset_notice() {
            reply.text = format!("{notice}\n\n{}", reply.text);
        }
        if let Some(offline) = &self.offline
            && let Some(notice) = offline.rejected_notice().await
        {
            reply.text = format!("{notice}\n\n{}", reply.text);
        }
        reply
    }

    async fn send(&self, content: String, to: Option<String>, reply_to: Option<String>) -> Reply {
        let target = to.unwrap_or_else(|| relay_proto::BROADCAST.to_string());
        let draft = Draft {
            key: self.keys.key_for(&target, &content),
            broadcast: target == relay_proto::BROADCAST,
            target,
            content,
            reply_to,
        };
        let Some(offline) = &self.offline else {
            return self.send_now(&draft, None).await;
        };
        // Held until the outcome is known: nothing overtakes a queued message (offline.rs).
        let order = offline.order().await;
        match offline.queued().await {
            Ok(0) => {}
            Ok(ahead) => return self.queue_behind(offline, order, &draft, ahead).await,
            // An outbox that cannot be read must not block sending: try the hub.
            Err(e) => tracing::warn!("outbox unreadable, sending directly: {e}"),
        }
        let reply = self.send_now(&draft, Some(offline)).await;
        drop(order);
        reply
    }

    /// Queues `d` behind `ahead` earlier messages, then — if the hub is reachable — waits (at
    /// most the request timeout) for the drain to reach it, to say what became of it.
    async fn queue_behind(
        &self,
        offline: &Offline,
        order: tokio::sync::MutexGuard<'_, ()>,
        d: &Draft,
        ahead: usize,
    ) -> Reply {
        let queued = offline.append(d.entry()).await;
        drop(order);
        self.keys.settle(&d.key);
        let settled = match queued {
            Ok((_, settled)) => settled,
            Err(e) => return Reply::error(format!("NOT sent: {e}")),
        };
        let snap = self.hub.snapshot();
        if !snap.is_connected() {
            offline.forget_waiter(&d.key);
            let ahead = format::plural(ahead as u64, "message", "messages");
            return Reply::ok(if snap.link_trouble_only() {
                format!("{QUEUED_UNREACHABLE} ({ahead} ahead of it.) {QUEUED_TAIL}")
            } else {
                // Queued to keep the order, though the hub is refusing this bridge itself.
                format!(
                    "Queued on this machine behind {ahead} — the hub does not accept this \
                     bridge right now ({}); it will be sent once it does; not delivered yet. \
                     {QUEUED_TAIL}",
                    snap.not_connected_text()
                )
            });
        }
        match tokio::time::timeout(self.hub.request_timeout(), settled).await {
            Ok(Ok(Settled::Sent(s))) => Reply::ok(sent_text(&s, d)),
            Ok(Ok(Settled::Refused(why))) => Reply::error(format!(
                "NOT sent — the hub refused it: {why} (it was queued behind earlier messages \
                 and is not queued any more)"
            )),
            Ok(Err(_)) | Err(_) => {
                offline.forget_waiter(&d.key);
                Reply::ok(format!(
                    "Queued on this machine behind {} not sent yet — it will be sent after \
                     them; not delivered yet. {QUEUED_TAIL}",
                    format::plural(ahead as u64, "earlier message", "earlier messages")
                ))
            }
        }
    }

    /// Sends `d` now; with the outbox, queues what the hub did not take.
    async fn send_now(&self, d: &Draft, offline: Option<&Offline>) -> Reply {
        let key = d.key.clone();
        let frame = d.frame();
        // In doubt: an earlier call with this key, or this attempt, may have reached the hub.
        let mut in_doubt = self.keys.is_unsettled(&key);
        let mut result = self.hub.request(frame.clone()).await;
        in_doubt |= matches!(&result, Err(e) if e.maybe_delivered());
        if matches!(&result, Err(e) if e.maybe_delivered())
            && self.hub.wait_connected(RESEND_WAIT).await
        {
            // The same key makes the resend safe: the hub stores the message at most once and
            // answers with the original's ack if the first attempt got through.
            result = self.hub.request(frame).await;
        }
        match result {
            Ok(ServerFrame::Sent(s)) => {
                self.keys.settle(&key);
                Reply::ok(sent_text(&s, d))
            }
            Ok(ServerFrame::Error(e)) if in_doubt => {
                // This attempt was refused, but an earlier one with the same key may have
                // been stored: keep the key so a retry cannot duplicate it.
                self.keys.remember(&key);
                Reply::error(format!(
                    "The hub refused this attempt: {}. An earlier attempt of this message may \
                     have been stored; sending it again is safe (the bridge reuses its key).",
                    said(&e)
                ))
            }
            Ok(ServerFrame::Error(e)) => {
                self.keys.settle(&key);
                Reply::error(format!("NOT sent — the hub refused it: {}", e.message))
            }
            Ok(other) => {
                self.keys.remember(&key);
                Reply::error(format!(
                    "Outcome unknown: the hub answered with an unexpected frame ({}). Check \
                     relay_status (recent sends) before sending again.",
                    frame_type(&other)
                ))
            }
            Err(e)
                if offline.is_some() && (in_doubt || self.hub.snapshot().link_trouble_only()) =>
            {
                // The outbox takes it: from here on the drainer sends it, with this key.
                self.keys.settle(&key);
                let Some(offline) = offline else {
                    unreachable!("checked by the guard")
                };
                let words = if in_doubt {
                    QUEUED_IN_DOUBT
                } else {
                    QUEUED_UNREACHABLE
                };
                match offline.append(d.entry()).await {
                    Ok(_) => {
                        offline.forget_waiter(&key);
                        Reply::ok(format!("{words} {QUEUED_TAIL} (Hub: {e}.)"))
                    }
                    Err(q) if in_doubt => Reply::error(format!(
                        "Outcome unknown: {e}. It could not be queued either: {q}. Sending the \
                         same message to the same recipient again is safe: the bridge reuses \
                         its key, so the hub stores it at most once."
                    )),
                    Err(q) => Reply::error(format!("NOT sent: {e}. {q}")),
                }
            }
            Err(RequestError::NotConnected(state)) if !in_doubt => {
                self.keys.settle(&key);
                Reply::error(format!(
                    "NOT sent: {state}. The bridge reconnects by itself; try again then \
                     (relay_status shows the connection)."
                ))
            }
            Err(e) if !e.maybe_delivered() && !in_doubt => {
                self.keys.settle(&key);
                Reply::error(format!(
                    "NOT sent: {e}. The bridge reconnects by itself; try again shortly."
                ))
            }
            Err(e) => {
                self.keys.remember(&key);
                Reply::error(format!(
                    "Outcome unknown: {e}. The hub may or may not have stored the message. \
                     Sending the same message to the same recipient again is safe: the bridge \
                     reuses its key, so the hub stores it at most once. relay_status lists \
                     recent sends."
                ))
            }
        }
    }

    /// `relay_receive` in unread mode: one page of unread mail, marked read.
    async fn read_unread(&self, args: ReceiveArgs) -> Unread {
        let _one_reader = self.reading.lock().await;
        let me = self.hub.id();
        let frame = ClientFrame::Receive(Receive {
            count: Some(args.count),
            from: args.from.clone(),
            rid: None,
        });
        let failed = |reply| Unread::Failed {
            reply,
            disconnected: false,
        };
        let inbox = match self.hub.request(frame).await {
            Ok(ServerFrame::Inbox(inbox)) => inbox,
            Ok(ServerFrame::Error(e)) => {
                return failed(Reply::error(format!(
                    "The hub refused to list unread mail: {}",
                    said(&e)
                )));
            }
            Ok(other) => return failed(unexpected(&other)),
            Err(e) => {
                return Unread::Failed {
                    reply: request_failed(&e),
                    disconnected: matches!(e, RequestError::NotConnected(_)),
                };
            }
        };
        if let Some(epoch) = &inbox.epoch {
            self.hub.observe_epoch(epoch);
        }
        let from = args
            .from
            .as_deref()
            .map(|f| format!(" from {f}"))
            .unwrap_or_default();
        if inbox.messages.is_empty() {
            self.hub.set_unread(0);
            let mut text = format!("No unread messages{from}.");
            if inbox.remaining > 0 {
                text.push_str(&format!(
                    " ({} more reported; call again.)",
                    inbox.remaining
                ));
            }
            return Unread::Empty(Reply::ok(text));
        }
        let now = relay_proto::time::now_ms();
        let cap = if args.count == 1 {
            SINGLE_BODY_CAP
        } else {
            BODY_CAP
        };
        let page = format::page(&inbox.messages, &me, cap, RESULT_BUDGET, now);
        let shown = &inbox.messages[..page.shown];
        let left = inbox.remaining + (inbox.messages.len() - page.shown) as u64;

        // Mark read exactly what is shown; nothing else.
        let seqs: Vec<u64> = shown.iter().map(|m| m.seq).filter(|s| *s > 0).collect();
        let mark_problem = if seqs.len() < shown.len() {
            Some("the hub gave some messages no sequence number".to_string())
        } else {
            match self
                .hub
                .request(ClientFrame::MarkRead(MarkRead { seqs, rid: None }))
                .await
            {
                Ok(ServerFrame::Marked(m)) => {
                    self.hub.set_unread(m.unread);
                    None
                }
                Ok(ServerFrame::Error(e)) => Some(said(&e)),
                Ok(other) => Some(format!("unexpected reply {}", frame_type(&other))),
                Err(e) => Some(e.to_string()),
            }
        };

        let mut text = format!(
            "{}{from}, oldest first{}:\n\n{}",
            format::plural(page.shown as u64, "unread message", "unread messages"),
            if mark_problem.is_none() {
                " (now marked read)"
            } else {
                ""
            },
            page.text
        );
        if left > 0 {
            text.push_str(&format!(
                "\n\n{left} more unread{from} — call relay_receive again."
            ));
        }
        if args.count_capped {
            text.push_str("\n(count is capped at 50 per call.)");
        }
        if let Some(problem) = mark_problem {
            text.push_str(&format!(
                "\n\nWarning: could not mark these read ({problem}); they may be shown again."
            ));
        }
        Unread::Shown(Reply::ok(text))
    }

    /// `relay_wait`: the next unread message (marked read), waiting for the hub to push one
    /// when none is unread, up to the timeout. The subscription to pushes is taken before the
    /// first read, so a message arriving between the read and the wait is never missed. A
    /// lost connection is waited out (the hub pushes the unread backlog on reconnect).
    /// Cancelling the call drops this future: nothing is marked read that was not returned,
    /// except when the cancel lands between `mark_read` and the reply.
    async fn wait(&self, args: WaitArgs) -> Reply {
        let Ok(_one_waiter) = self.waiting.try_lock() else {
            return Reply::error(
                "relay_wait: another relay_wait is already waiting in this session; only one \
                 can wait at a time. Let it return (or cancel it), then call again.",
            );
        };
        let timeout = Duration::from_secs(args.timeout_secs);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pushes = self.hub.subscribe();
        let read = ReceiveArgs {
            count: 1,
            count_capped: false,
            from: args.from.clone(),
            after: None,
            replay: false,
            thread: None,
            search: None,
        };
        let from = args
            .from
            .as_deref()
            .map(|f| format!(" from {f}"))
            .unwrap_or_default();
        let mut note = String::new();
        if args.timeout_capped {
            note = format!(
                "\n(timeout_seconds is capped at {} s.)",
                crate::tools::MAX_WAIT_SECS
            );
        }
        loop {
            match self.read_unread(read.clone()).await {
                Unread::Shown(mut reply) => {
                    reply.text.push_str(&note);
                    return reply;
                }
                Unread::Failed {
                    disconnected: true,
                    reply,
                } => {
                    // Wait out the reconnect within the deadline; the next read decides.
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() || !self.hub.wait_connected(left).await {
                        return reply;
                    }
                    continue;
                }
                Unread::Failed { reply, .. } => return reply,
                Unread::Empty(_) => {}
            }
            let me = self.hub.id();
            tracing::info!(
                "relay_wait: nothing unread{from}; waiting up to {} s",
                args.timeout_secs
            );
            let arrived = tokio::time::timeout_at(deadline, async {
                loop {
                    match pushes.recv().await {
                        Ok(e) if e.from == me => {}
                        Ok(e) if args.from.as_ref().is_some_and(|f| *f != e.from) => {}
                        // Something arrived (or we fell behind and cannot tell): read.
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => return true,
                        Err(broadcast::error::RecvError::Closed) => return false,
                    }
                }
            })
            .await;
            match arrived {
                Ok(true) => {}
                Ok(false) => {
                    return Reply::error("relay_wait: the bridge is shutting down.");
                }
                Err(_) => {
                    return Reply::ok(format!(
                        "No new message{from} within {} s (timed out). Call relay_wait again \
                         to keep waiting.{note}",
                        args.timeout_secs
                    ));
                }
            }
        }
    }

    async fn history(&self, args: ReceiveArgs) -> Reply {
        let me = self.hub.id();
        // A thread is read whole, from its root on, own sends included (they are half of
        // the conversation); plain history leaves them out.
        let cursor = args
            .after
            .clone()
            .or_else(|| args.thread.as_deref().and_then(before_id));
        let frame = ClientFrame::GetHistory(GetHistory {
            count: Some(args.count),
            from: args.from.clone(),
            to: None,
            after: cursor.clone(),
            inbound_only: Some(args.thread.is_none()),
            thread: args.thread.clone(),
            rid: None,
        });
        let history = match self.hub.request(frame).await {
            Ok(ServerFrame::History(h)) => h,
            Ok(ServerFrame::Error(e)) => {
                return Reply::error(format!("The hub refused to read history: {}", e.message));
            }
            Ok(other) => return unexpected(&other),
            Err(e) => return request_failed(&e),
        };
        let after = args.after.as_deref().unwrap_or_default();
        if history.unknown_cursor {
            return Reply::error(format!(
                "The hub does not know the position {after:?} (an unknown message id, a time it \
                 cannot read, or history was reset). Nothing was replayed. relay_receive \
                 {{\"replay\":true}} shows the most recent messages."
            ));
        }
        // The hub leaves out our own sends (inboundOnly); outside a thread, never show one
        // regardless.
        let messages: Vec<_> = history
            .messages
            .into_iter()
            .filter(|m| args.thread.is_some() || m.from != me)
            .collect();
        let mut filter = match (&args.from, &args.after) {
            (Some(f), Some(a)) => format!(" from {f} after {a}"),
            (Some(f), None) => format!(" from {f}"),
            (None, Some(a)) => format!(" after {a}"),
            (None, None) => String::new(),
        };
        if let Some(t) = &args.thread {
            filter = format!(" of thread {t}{filter}");
        }
        if messages.is_empty() {
            return Reply::ok(format!("No messages in history{filter}."));
        }
        let now = relay_proto::time::now_ms();
        let cap = if args.count == 1 {
            SINGLE_BODY_CAP
        } else {
            BODY_CAP
        };
        let page = format::page(&messages, &me, cap, RESULT_BUDGET, now);
        let mut text = format!(
            "History{filter} ({}read state unchanged), {}, oldest first:\n\n{}",
            if args.thread.is_some() {
                ""
            } else {
                "inbound; "
            },
            format::plural(page.shown as u64, "message", "messages"),
            page.text
        );
        let cut_short = page.shown < messages.len();
        if cut_short || (cursor.is_some() && history.more) {
            let last = display::line(&messages[page.shown - 1].id);
            let mut from = args
                .from
                .as_deref()
                .map(|f| format!(",\"from\":\"{f}\""))
                .unwrap_or_default();
            if let Some(t) = &args.thread {
                let _ = write!(from, ",\"thread\":\"{t}\"");
            }
            text.push_str(&format!(
                "\n\nMore follow — relay_receive {{\"replay\":true,\"after\":\"{last}\"{from}}}"
            ));
        }
        if args.count_capped {
            text.push_str("\n(count is capped at 50 per call.)");
        }
        Reply::ok(text)
    }

    /// One page of the hub's session list: online sessions first, then the most recently
    /// seen, at most a screenful ([`format::LIST_MAX_LINES`]); the hub says how many exist.
    async fn session_page(&self) -> Result<relay_proto::wire::Sessions, String> {
        let frame = ClientFrame::GetSessions(GetSessions {
            limit: Some(format::LIST_MAX_LINES as u32),
            ..Default::default()
        });
        match self.hub.request(frame).await {
            Ok(ServerFrame::Sessions(s)) => Ok(s),
            Ok(ServerFrame::Error(e)) => Err(format!("the hub said {}", said(&e))),
            Ok(other) => Err(format!("unexpected reply {}", frame_type(&other))),
            Err(RequestError::NotConnected(state)) => {
                Err(format!("{state}. The bridge reconnects by itself"))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn peers(&self) -> Reply {
        let me = self.hub.id();
        let s = match self.session_page().await {
            Ok(s) => s,
            Err(problem) => {
                return Reply::error(format!(
                    "Could not list sessions: {}.",
                    capitalize(&problem)
                ));
            }
        };
        let now = relay_proto::time::now_ms();
        let online: Vec<(&String, &SessionView)> =
            s.sessions.iter().filter(|(_, v)| v.online).collect();
        let total = s
            .online
            .unwrap_or(online.len() as u64)
            .max(online.len() as u64);
        if online.iter().all(|(id, _)| **id == me) && total <= online.len() as u64 {
            return Reply::ok(format!("No other session is online (you are {me})."));
        }
        let lines: Vec<String> = online
            .iter()
            .map(|(id, v)| format::session_line(id, v, &me, now))
            .collect();
        Reply::ok(format!(
            "{} online:\n{}",
            format::plural(total, "session", "sessions"),
            format::capped_lines(&lines, total, " online")
        ))
    }

    async fn status(&self) -> Reply {
        self.hub.start();
        self.hub.settle().await;
        let snap = self.hub.snapshot();
        let now = relay_proto::time::now_ms();
        let mut lines = Vec::new();
        match &snap.state {
            LinkState::Connected { since_ms, .. } => lines.push(format!(
                "Hub: {} — connected for {}",
                snap.url,
                relay_proto::time::ago(*since_ms, now)
            )),
            _ => lines.push(format!("Hub: {}", snap.not_connected_text())),
        }
        lines.push(format!("You: {} (from {})", snap.id, self.id_source));
        if snap.is_connected() {
            match self
                .hub
                .request(ClientFrame::GetStatus(Default::default()))
                .await
            {
                Ok(ServerFrame::Status(st)) => {
                    self.hub.observe_epoch(&st.epoch);
                    self.hub.set_unread(st.unread);
                    lines.push(if st.unread > 0 {
                        format!("Unread: {} — call relay_receive", st.unread)
                    } else {
                        "Unread: 0".to_string()
                    });
                    lines.push(format!("Hub epoch: {}", display::line(&st.epoch)));
                    if st.sends.is_empty() {
                        lines.push("Recent sends: none".to_string());
                    } else {
                        lines.push(format!(
                            "Recent sends (newest first):\n{}",
                            format::sends(&st.sends, now).trim_end()
                        ));
                    }
                }
                Ok(ServerFrame::Error(e)) => {
                    lines.push(format!("Status unavailable: the hub said {}", e.message));
                }
                Ok(other) => lines.push(format!("Status unavailable: {}", frame_type(&other))),
                Err(e) => lines.push(format!("Status unavailable: {e}")),
            }
        } else {
            lines.push(match snap.unread {
                Some(n) => format!("Unread: unknown while disconnected (last known {n})"),
                None => "Unread: unknown while disconnected".to_string(),
            });
            if let Some(epoch) = &snap.epoch {
                lines.push(format!("Hub epoch (last seen): {}", display::line(epoch)));
            }
        }
        lines.push(self.outbox_line().await);
        Reply::ok(lines.join("\n"))
    }

    /// `relay_status`'s line about the offline outbox: how many wait, since when, and why the
    /// oldest has not gone out yet.
    async fn outbox_line(&self) -> String {
        let Some(offline) = &self.offline else {
            return "Outbox: off (RELAY_OUTBOX=off) — a send without the hub is NOT sent"
                .to_string();
        };
        let st = match offline.stats().await {
            Ok(st) => st,
            Err(e) => return format!("Outbox: unreadable ({e})"),
        };
        let mut line = if st.queued == 0 {
            "Outbox: empty (nothing waiting on this machine)".to_string()
        } else {
            let mut l = format!(
                "Outbox: {} queued on this machine, not sent yet",
                format::plural(st.queued as u64, "message", "messages")
            );
            if let Some(age) = st.oldest_age {
                l.push_str(&format!(
                    "; oldest queued {} ago",
                    relay_proto::time::ago(0, age.as_millis() as i64)
                ));
            }
            if st.head_attempts > 0 {
                l.push_str(&format!(
                    "; {} failed",
                    format::plural(u64::from(st.head_attempts), "attempt", "attempts")
                ));
            }
            if let Some(e) = &st.last_error {
                l.push_str(&format!("; last error: {}", display::line(e)));
            }
            l
        };
        if st.rejected > 0 {
            line.push_str(&format!(
                "; {} refused by the hub (told with the next result)",
                st.rejected
            ));
        }
        if st.corrupt > 0 {
            line.push_str(&format!("; {} unreadable files kept aside", st.corrupt));
        }
        line
    }

    async fn sessions(&self) -> Reply {
        let me = self.hub.id();
        let now = relay_proto::time::now_ms();
        let (page, hub_problem) = match self.session_page().await {
            Ok(p) => (Some(p), None),
            Err(problem) => (None, Some(problem)),
        };
        // Registry reads and process probes are blocking work.
        let reader = self.local.clone();
        let (local, local_problem) = match tokio::task::spawn_blocking(move || reader()).await {
            Ok(Ok(l)) => (l, None),
            Ok(Err(e)) => (Vec::new(), Some(e)),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let (hub_view, total, online_total, complete) = match page {
            Some(p) => {
                let shown = p.sessions.len() as u64;
                let total = p.total.unwrap_or(shown).max(shown);
                let online = p.sessions.values().filter(|v| v.online).count() as u64;
                let complete = p.next.is_none();
                (p.sessions, total, p.online.unwrap_or(online), complete)
            }
            None => (Default::default(), 0, 0, true),
        };
        let mut lines = Vec::new();
        let mut ordered: Vec<(&String, &SessionView)> = hub_view.iter().collect();
        // Online first (by id), then offline, most recently seen first.
        ordered.sort_by(|a, b| {
            b.1.online.cmp(&a.1.online).then_with(|| {
                if a.1.online {
                    a.0.cmp(b.0)
                } else {
                    b.1.last_seen.cmp(&a.1.last_seen)
                }
            })
        });
        for (id, v) in &ordered {
            lines.push(format::session_line(id, v, &me, now));
        }
        // This machine's entries the hub does not know — only decidable when the hub's whole
        // list is here (or the hub is down and the registry is all there is).
        let mut local_only: BTreeMap<&str, &LocalSession> = BTreeMap::new();
        if complete {
            for l in &local {
                if !hub_view.contains_key(&l.id) {
                    local_only.insert(&l.id, l);
                }
            }
        }
        for l in local_only.values() {
            lines.push(local_line(l, hub_problem.is_none(), now));
        }
        let mut text = String::new();
        if let Some(problem) = &hub_problem {
            text.push_str(&format!(
                "Hub unavailable — {problem}. Showing this machine's registry only:\n"
            ));
        }
        if lines.is_empty() {
            text.push_str("No sessions known.");
        } else {
            let known = total + local_only.len() as u64;
            if hub_problem.is_none() {
                text.push_str(&format!(
                    "{} known ({online_total} online):\n",
                    format::plural(known, "session", "sessions")
                ));
            }
            text.push_str(&format::capped_lines(
                &lines,
                known,
                ", seen longer ago (`claude-relay sessions` lists them all)",
            ));
        }
        if let Some(problem) = local_problem {
            text.push_str(&format!(
                "\n(local registry unreadable: {})",
                display::line(&problem)
            ));
        }
        Reply::ok(text)
    }
}

/// A registry entry the hub does not know (or, with the hub down, any entry).
fn local_line(l: &LocalSession, hub_up: bool, now: i64) -> String {
    let mut line = display::line(&l.id).into_owned();
    let state = match (l.state.as_str(), l.alive) {
        ("running", Some(true)) => match l.pid {
            Some(pid) => format!("running (pid {pid})"),
            None => "running".to_string(),
        },
        ("running", Some(false)) => "gone (process died)".to_string(),
        (s, _) => s.to_string(),
    };
    line.push_str(&format!(" · {state}"));
    if let Some(ms) = l.last_seen_ms.filter(|_| l.state != "running") {
        line.push_str(&format!(
            ", last seen {} ago",
            relay_proto::time::ago(ms, now)
        ));
    }
    if !l.host.is_empty() {
        line.push_str(&format!(" · {}", display::line(&l.host)));
    }
    if !l.cwd.is_empty() {
        line.push_str(&format!(" · {}", format::short_path(&l.cwd)));
    }
    if hub_up {
        line.push_str(" · local registry only");
    }
    line
}

/// The hub's error text, made safe to show.
/// The id just before `id` (`<epoch>-<seq - 1>`): as an `after` cursor, it starts a page at
/// `id` itself.
fn before_id(id: &str) -> Option<String> {
    let (epoch, seq) = id.rsplit_once('-')?;
    let seq: u64 = seq.parse().ok()?;
    Some(format!("{epoch}-{}", seq.checked_sub(1)?))
}

pub(crate) fn said(e: &ErrorFrame) -> String {
    display::line(&e.message).into_owned()
}

pub(crate) fn frame_type(f: &ServerFrame) -> String {
    serde_json::to_value(f)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

pub(crate) fn unexpected(f: &ServerFrame) -> Reply {
    Reply::error(format!(
        "The hub answered with an unexpected frame ({}); nothing changed.",
        frame_type(f)
    ))
}

pub(crate) fn request_failed(e: &RequestError) -> Reply {
    match e {
        RequestError::NotConnected(state) => Reply::error(format!(
            "{}. The bridge reconnects by itself.",
            capitalize(state)
        )),
        other => Reply::error(format!("{}.", capitalize(&other.to_string()))),
    }
}

pub(crate) fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_lines() {
        let l = LocalSession {
            id: "CC-4".into(),
            state: "ended".into(),
            host: "laptop".into(),
            cwd: "/work/z".into(),
            last_seen_ms: Some(0),
            ..Default::default()
        };
        assert_eq!(
            local_line(&l, true, 7_200_000),
            "CC-4 · ended, last seen 2h ago · laptop · /work/z · local registry only"
        );
        let l = LocalSession {
            id: "CC-5".into(),
            state: "running".into(),
            alive: Some(true),
            pid: Some(42),
            ..Default::default()
        };
        assert_eq!(local_line(&l, false, 0), "CC-5 · running (pid 42)");
    }
}
