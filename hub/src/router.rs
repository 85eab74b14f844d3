//! The router: which live connection holds which session id, and getting frames to them.
//!
//! A name is held by at most one connection at a time; a newcomer never takes it over
//! (see [`Router::claim`]). Delivery never waits: frames are pushed into the recipient's
//! bounded [`Outbox`], so a slow reader can only hurt itself. The router is also the store's
//! [`CommitSink`]: once a batch of messages is durable, it delivers them and acks senders.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use dashmap::{DashMap, mapref::entry::Entry};
use sessions::{
    SessionId,
    time::now_ms,
    wire::{ErrorFrame, Mail, PresenceBatch, PresenceMode, ServerFrame, codes},
};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::{
    feed::Feed,
    frames::{self, SentOut},
    metrics::Metrics,
    outbound::{Outbox, to_frame},
    store::{Append, Appended, CommitSink, Committed, StoreError, StoredMessage, message_id},
};

/// A live connection holding a session id.
pub struct Peer {
    /// Its outbound queue.
    pub outbox: Outbox,
    /// How it wants presence reported.
    pub presence: PresenceMode,
    /// Remote address (for reasons given to contenders and for logs).
    pub addr: SocketAddr,
    /// When it registered (Unix ms).
    pub connected_at: i64,
    /// False while registration is still in progress: messages are stored but not pushed,
    /// so `registered` is always the first frame a session sees.
    pub active: bool,
    /// Wakes the connection's heartbeat to probe the client now (used when someone else
    /// asks for the name: a dead holder is found in seconds, not at the next heartbeat).
    pub probe: Arc<Notify>,
}

/// Who holds a name a newcomer asked for.
#[derive(Debug, Clone)]
pub struct Holder {
    /// Remote address of the holder.
    pub addr: SocketAddr,
    /// When it registered (Unix ms).
    pub connected_at: i64,
}

/// Most connections that may watch one session's mail at once.
pub const MAX_WATCHERS: usize = 16;

/// The routing table.
#[derive(Default)]
pub struct Router {
    peers: DashMap<SessionId, Peer>,
    /// Active peers per presence mode, so a change costs nothing for modes nobody uses.
    full_peers: AtomicUsize,
    delta_peers: AtomicUsize,
    /// Presence changes waiting for the next batch to `presence: "delta"` peers, in order.
    pending_presence: Mutex<Vec<(SessionId, bool)>>,
    /// The active ids, kept sorted as they come and go, so listing them never sorts.
    online: Mutex<std::collections::BTreeSet<SessionId>>,
    /// How many ids are active (deliverable).
    active: AtomicUsize,
    /// `online` rendered as a JSON array, rebuilt after a change when first asked for.
    online_json: Mutex<Option<Arc<str>>>,
    /// Where committed batches go to be routed on the network runtime (set by
    /// [`run_routes`](Self::run_routes)); without it they are routed on the store thread.
    routes: OnceLock<mpsc::Sender<(Arc<str>, Vec<Committed>)>>,
    /// Delivery fixes for the store (see [`CommitSink::take_fixes`]).
    fixes: Mutex<Vec<(u64, Option<i64>)>>,
    /// Connections to ring (`mail` frames) when mail arrives for a session, without holding
    /// its name: `claude-relay wait` uses this to wake an idle agent.
    watchers: DashMap<SessionId, Vec<Outbox>>,
    /// Counts what is routed (shared with the hub's `/metrics`).
    metrics: Arc<Metrics>,
    /// Tells the operator feed what is routed and who comes and goes.
    feed: Arc<Feed>,
}

impl Router {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table that reports to `metrics` and `feed`.
    pub fn observed(metrics: Arc<Metrics>, feed: Arc<Feed>) -> Self {
        Self {
            metrics,
            feed,
            ..Self::default()
        }
    }

    /// Claims `id` for a connection. Fails, without disturbing the holder, if a live
    /// connection holds it; the holder is probed so that a dead one is dropped quickly.
    pub fn claim(&self, id: &SessionId, peer: Peer) -> Result<(), Holder> {
        match self.peers.entry(id.clone()) {
            Entry::Occupied(held) => {
                let h = held.get();
                h.probe.notify_one();
                Err(Holder {
                    addr: h.addr,
                    connected_at: h.connected_at,
                })
            }
            Entry::Vacant(v) => {
                v.insert(peer);
                Ok(())
            }
        }
    }

    /// Makes a claimed id deliverable.
    pub fn activate(&self, id: &SessionId, conn: u64) {
        if let Some(mut p) = self.peers.get_mut(id)
            && p.outbox.id() == conn
            && !p.active
        {
            p.active = true;
            if let Some(n) = self.mode_count(p.presence) {
                n.fetch_add(1, Ordering::Relaxed);
            }
            self.online.lock().expect("online lock").insert(id.clone());
            *self.online_json.lock().expect("online json lock") = None;
            self.active.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Frees `id` if connection `conn` holds it. Returns true if it did.
    pub fn release(&self, id: &SessionId, conn: u64) -> bool {
        match self.peers.remove_if(id, |_, p| p.outbox.id() == conn) {
            Some((_, p)) => {
                if p.active {
                    if let Some(n) = self.mode_count(p.presence) {
                        n.fetch_sub(1, Ordering::Relaxed);
                    }
                    self.online.lock().expect("online lock").remove(id);
                    *self.online_json.lock().expect("online json lock") = None;
                    self.active.fetch_sub(1, Ordering::Relaxed);
                }
                true
            }
            None => false,
        }
    }

    fn mode_count(&self, mode: PresenceMode) -> Option<&AtomicUsize> {
        match mode {
            PresenceMode::Full => Some(&self.full_peers),
            PresenceMode::Delta => Some(&self.delta_peers),
            PresenceMode::None => None,
        }
    }

    /// Pushes `frame` to the live holder of `to`. True if its connection took it.
    pub fn deliver(&self, to: &str, frame: &Utf8Bytes) -> bool {
        match self.peers.get(to) {
            Some(p) if p.active => p.outbox.push(frame.clone()).is_ok(),
            _ => false,
        }
    }

    /// Pushes `frame` to every live session except `except`. Returns how many took it.
    pub fn broadcast(&self, except: &str, frame: &Utf8Bytes) -> u32 {
        let mut n = 0;
        for p in self.peers.iter() {
            if p.active && p.key().as_str() != except && p.outbox.push(frame.clone()).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Reports that `subject` came online (`joined`) or went offline. `peer_joined` /
    /// `peer_left` frames (built once, with the whole list) go at once to every
    /// `presence: "full"` session but the subject; `presence: "delta"` sessions get the change
    /// in the next batch (see [`flush_presence`](Self::flush_presence)).
    pub fn announce(&self, subject: &SessionId, joined: bool) {
        self.feed.session(subject.as_str(), joined);
        if self.delta_peers.load(Ordering::Relaxed) > 0 {
            self.pending_presence
                .lock()
                .expect("presence lock")
                .push((subject.clone(), joined));
        }
        if self.full_peers.load(Ordering::Relaxed) == 0 {
            return;
        }
        // Collect first: building the list iterates the table again, and nested iteration
        // of a DashMap can deadlock against a concurrent writer.
        let targets: Vec<Outbox> = self
            .peers
            .iter()
            .filter(|p| p.active && p.key() != subject && p.presence == PresenceMode::Full)
            .map(|p| p.outbox.clone())
            .collect();
        if targets.is_empty() {
            return;
        }
        let frame = frames::presence_full(joined, subject.as_str(), &self.online_json());
        for outbox in targets {
            let _ = outbox.push(frame.clone());
        }
    }

    /// Sends the presence changes collected since the last call, as one `presence` frame
    /// (serialized once) to every `presence: "delta"` session. Each id is reported with its
    /// last change only.
    pub fn flush_presence(&self) {
        let changes = std::mem::take(&mut *self.pending_presence.lock().expect("presence lock"));
        if changes.is_empty() {
            return;
        }
        let mut last: std::collections::HashMap<&str, bool> = Default::default();
        let mut order: Vec<&str> = Vec::new();
        for (id, joined) in &changes {
            if last.insert(id.as_str(), *joined).is_none() {
                order.push(id.as_str());
            }
        }
        let mut batch = PresenceBatch::default();
        for id in order {
            if last[id] {
                batch.joined.push(id.to_string());
            } else {
                batch.left.push(id.to_string());
            }
        }
        let frame = to_frame(&ServerFrame::Presence(batch));
        for p in self.peers.iter() {
            if p.active && p.presence == PresenceMode::Delta {
                let _ = p.outbox.push(frame.clone());
            }
        }
    }

    /// Every session online now, sorted.
    pub fn online(&self) -> Vec<String> {
        self.online
            .lock()
            .expect("online lock")
            .iter()
            .map(|id| id.to_string())
            .collect()
    }

    /// Every session online now, sorted, as a JSON array — shared until the next change, so
    /// a storm of joins renders each list once instead of once per recipient.
    pub fn online_json(&self) -> Arc<str> {
        let mut cached = self.online_json.lock().expect("online json lock");
        if let Some(json) = &*cached {
            return json.clone();
        }
        let online = self.online.lock().expect("online lock");
        let json: Arc<str> = Arc::from(frames::id_array(online.iter().map(SessionId::as_str)));
        *cached = Some(json.clone());
        json
    }

    /// True if `id` is held by an active connection.
    pub fn is_online(&self, id: &str) -> bool {
        self.peers.get(id).is_some_and(|p| p.active)
    }

    /// True if a connection holds `id`, active or still registering.
    pub fn is_held(&self, id: &str) -> bool {
        self.peers.contains_key(id)
    }

    /// When the current holder of `id` registered.
    pub fn connected_at(&self, id: &str) -> Option<i64> {
        self.peers
            .get(id)
            .filter(|p| p.active)
            .map(|p| p.connected_at)
    }

    /// Adds `outbox` as a watcher of `id`'s mail. Fails when [`MAX_WATCHERS`] live watchers
    /// are already there.
    pub fn watch(&self, id: &SessionId, outbox: Outbox) -> Result<(), usize> {
        let mut list = self.watchers.entry(id.clone()).or_default();
        list.retain(|o| !o.is_closed() && o.id() != outbox.id());
        if list.len() >= MAX_WATCHERS {
            return Err(MAX_WATCHERS);
        }
        list.push(outbox);
        Ok(())
    }

    /// Removes connection `conn` from the watchers of `id`.
    pub fn unwatch(&self, id: &SessionId, conn: u64) {
        if let Some(mut list) = self.watchers.get_mut(id) {
            list.retain(|o| o.id() != conn);
        }
        self.watchers.remove_if(id, |_, l| l.is_empty());
    }

    /// Rings the watchers of whoever `to` reaches (one session, or everyone but the sender).
    fn ring(&self, to: &str, from: &str, seq: u64) {
        if self.watchers.is_empty() {
            return;
        }
        let ring_one = |id: &str, list: &Vec<Outbox>| {
            let frame = to_frame(&ServerFrame::Mail(Mail {
                client_id: id.to_string(),
                from: from.to_string(),
                seq,
            }));
            for o in list {
                let _ = o.push(frame.clone());
            }
        };
        if to == sessions::BROADCAST {
            for w in self.watchers.iter() {
                if w.key().as_str() != from {
                    ring_one(w.key().as_str(), w.value());
                }
            }
        } else if let Some(list) = self.watchers.get(to) {
            ring_one(to, &list);
        }
    }

    /// Pushes a committed message that did not come through the store's append path (task
    /// mail, see `crate::tasks`) to its recipient(s) and watchers, and records a delivery
    /// fix when the push went otherwise than `predicted` at the insert. It is counted and
    /// shown to the operator feed like any routed message.
    pub fn route_stored(&self, msg: &StoredMessage, frame: &Utf8Bytes, predicted: bool) {
        let (took, recipients) = if &*msg.to == sessions::BROADCAST {
            let n = self.broadcast(&msg.from, frame);
            (n > 0, Some(n))
        } else {
            (self.deliver(&msg.to, frame), None)
        };
        self.metrics.routed(took, recipients);
        self.feed.routed(msg, took, recipients);
        if took != predicted {
            self.fixes
                .lock()
                .expect("fixes lock")
                .push((msg.seq, took.then(now_ms)));
        }
        self.ring(&msg.to, &msg.from, msg.seq);
    }

    /// Closes every registered connection (used when the store was reset: clients must
    /// reconnect and learn the new epoch).
    pub fn close_all(&self, code: u16, reason: &str) {
        for p in self.peers.iter() {
            p.outbox.finish(code, reason);
        }
    }

    /// Number of held names.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// True when no name is held.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

impl CommitSink for Router {
    fn deliverable(&self, from: &str, to: &str) -> bool {
        if to == sessions::BROADCAST {
            let others = self.active.load(Ordering::Relaxed);
            others > usize::from(self.is_online(from))
        } else {
            self.peers
                .get(to)
                .is_some_and(|p| p.active && !p.outbox.is_closed())
        }
    }

    fn committed(&self, epoch: &str, batch: Vec<Committed>) {
        match self.routes.get() {
            // Hand the batch to the network runtime: the store thread is the serial stage
            // every message goes through, so it should only store.
            Some(tx) => {
                if let Err(mpsc::error::SendError((epoch, batch))) =
                    tx.blocking_send((Arc::from(epoch), batch))
                {
                    self.route(&epoch, batch);
                }
            }
            None => self.route(epoch, batch),
        }
    }

    fn take_fixes(&self, into: &mut Vec<(u64, Option<i64>)>) {
        into.append(&mut self.fixes.lock().expect("fixes lock"));
    }

    fn observed(&self, seconds: f64, messages: usize) {
        self.metrics.committed(seconds, messages);
    }

    fn failed(&self, batch: Vec<Append>, error: &StoreError) {
        for a in batch {
            let _ = a.ack.outbox.push_json(&ServerFrame::Error(ErrorFrame {
                message: format!("message NOT stored: {error}"),
                code: Some(codes::UNAVAILABLE.into()),
                retry_after_ms: None,
                rid: a.ack.rid,
            }));
        }
    }
}

impl Router {
    /// Routes committed batches on the calling runtime until the store stops sending them.
    /// Bound: 64 batches (each ≤ [`MAX_BATCH`](crate::store::actor::MAX_BATCH) messages) may
    /// wait; beyond that the store thread waits.
    pub async fn run_routes(self: Arc<Self>) {
        let (tx, mut rx) = mpsc::channel(64);
        if self.routes.set(tx).is_err() {
            return;
        }
        while let Some((epoch, batch)) = rx.recv().await {
            self.route(&epoch, batch);
            // Let the writers drain what this batch queued before the next one piles on.
            tokio::task::yield_now().await;
        }
    }

    /// Delivers a committed batch to live recipients and acks each sender, noting where the
    /// outcome differs from the delivery recorded with the insert.
    pub fn route(&self, epoch: &str, batch: Vec<Committed>) {
        let now = now_ms();
        let mut fixes = Vec::new();
        for Committed {
            msg,
            ack,
            outcome,
            predicted,
        } in batch
        {
            let seq = msg.seq;
            match outcome {
                Appended::New(_) => {}
                Appended::Duplicate { delivered, .. } => {
                    // Already stored (and routed) when first sent: ack only.
                    let _ = ack.outbox.push(frames::sent(&SentOut {
                        epoch,
                        seq,
                        to: &msg.to,
                        delivered,
                        ts: None,
                        recipients: None,
                        duplicate: true,
                        rid: ack.rid.as_ref(),
                    }));
                    continue;
                }
                Appended::KeyConflict { .. } => {
                    let _ = ack.outbox.push_json(&ServerFrame::Error(ErrorFrame {
                        message: format!(
                            "message NOT stored: its key was already used for a different \
                             message ({}, to another recipient or with other content); use a \
                             new key for a new message",
                            message_id(epoch, seq)
                        ),
                        code: Some(codes::KEY_CONFLICT.into()),
                        retry_after_ms: None,
                        rid: ack.rid,
                    }));
                    continue;
                }
            }
            let frame = frames::message(epoch, &msg);
            let (took, recipients) = if &*msg.to == sessions::BROADCAST {
                let n = self.broadcast(&msg.from, &frame);
                (n > 0, Some(n))
            } else {
                (self.deliver(&msg.to, &frame), None)
            };
            if took != predicted {
                fixes.push((seq, took.then_some(now)));
            }
            self.metrics.routed(took, recipients);
            self.feed.routed(&msg, took, recipients);
            self.ring(&msg.to, &msg.from, seq);
            let _ = ack.outbox.push(frames::sent(&SentOut {
                epoch,
                seq,
                to: &msg.to,
                delivered: took,
                ts: Some(msg.ts),
                recipients,
                duplicate: false,
                rid: ack.rid.as_ref(),
            }));
        }
        if !fixes.is_empty() {
            self.fixes.lock().expect("fixes lock").append(&mut fixes);
        }
    }
}
