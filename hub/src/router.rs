//! The router: which live connection holds which session id, and getting frames to them.
//!
//! A name is held by at most one connection at a time; a newcomer never takes it over
//! (see [`Router::claim`]). Delivery never waits: frames are pushed into the recipient's
//! bounded [`Outbox`], so a slow reader can only hurt itself. The router is also the store's
//! [`CommitSink`]: once a batch of messages is durable, it delivers them and acks senders.
//!
//! One owner for its state: everything that changes — who holds which name, which of them are
//! online, the rendered online list (and its first page), who wants which presence, presence changes not sent yet,
//! the delivery fixes for the store, the mail watchers — is one [`State`] behind one mutex.
//! The invariants between those parts (the online set is exactly the active holders, the
//! per-mode counts match them, the rendered list is the online set or not yet rendered) are
//! kept by [`State`]'s methods, in one place. The lock is held only for map work and
//! non-blocking queue pushes, never across an `.await`; a batch of committed messages is
//! routed under one acquisition.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError},
};

use relay_proto::{
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
pub(crate) struct Peer {
    /// Its outbound queue.
    pub(crate) outbox: Outbox,
    /// How it wants presence reported.
    pub(crate) presence: PresenceMode,
    /// Remote address (for reasons given to contenders and for logs).
    pub(crate) addr: SocketAddr,
    /// When it registered (Unix ms).
    pub(crate) connected_at: i64,
    /// False while registration is still in progress: messages are stored but not pushed,
    /// so `registered` is always the first frame a session sees.
    pub(crate) active: bool,
    /// Wakes the connection's heartbeat to probe the client now (used when someone else
    /// asks for the name: a dead holder is found in seconds, not at the next heartbeat).
    pub(crate) probe: Arc<Notify>,
    /// The first presence announcement it is sent (set when it goes active: it learns of
    /// the earlier ones from its `registered` list).
    pub(crate) presence_from: u64,
    /// A `presence: "delta"` client whose list is known to be incomplete — its `registered`
    /// held only the first page, or it was sent a `resync` — is sent no batches until it
    /// reads the list again (`get_peers`, a first page of `get_sessions`:
    /// [`Router::online_listed`]). Batches applied to a list it does not have would tell it
    /// nothing, and in a storm they are most of what presence costs the hub
    /// (docs/PROTOCOL.md, "Presence").
    pub(crate) stale: bool,
}

/// Who holds a name a newcomer asked for.
#[derive(Debug, Clone)]
pub(crate) struct Holder {
    /// Remote address of the holder.
    pub(crate) addr: SocketAddr,
    /// When it registered (Unix ms).
    pub(crate) connected_at: i64,
}

/// Most connections that may watch one session's mail at once.
pub(crate) const MAX_WATCHERS: usize = 16;

/// Most bytes of `peer_joined`/`peer_left` frames held back for the next presence batch
/// (see [`Router::announce`]); past it they go out at once. Bounds what holding them costs
/// (the frames are shared by every recipient, so this is the memory, whatever the number of
/// sessions) and what one release queues for each old client: about one full loopback
/// segment (the frame that passes the bound goes with the rest).
/// Measured for 1,000 Node-protocol clients registering (docs/BENCHMARKS.md): 128 KiB cost
/// ~25 % less CPU and 256 KiB ~30 % less, but each left the debug hub's idle connections
/// ~1 and ~3 KiB more afterwards (more writers mid-flush at once leave more holes in the
/// heap; `tests/conn_memory.rs`).
const HELD_FULL_BYTES: usize = 64 << 10;

/// Most `peer_joined`/`peer_left` frames held back: a churn of one-shot sessions makes
/// frames of a few dozen bytes, and one release must not fill an old client's outbound
/// queue (`MIN_OUTBOUND_FRAMES`, 1,024 at the least) with them.
const HELD_FULL_FRAMES: usize = 256;

/// Committed batches that may wait for the network runtime (see [`Router::run_routes`]);
/// beyond that the store thread waits.
const ROUTE_QUEUE: usize = 64;

/// The routing table.
#[derive(Default)]
pub(crate) struct Router {
    state: Mutex<State>,
    /// Where committed batches go to be routed on the network runtime (set by
    /// [`run_routes`](Self::run_routes)); without it they are routed on the store thread.
    routes: OnceLock<mpsc::Sender<(Arc<str>, Vec<Committed>)>>,
    /// Counts what is routed (shared with the hub's `/metrics`; an observer, not state).
    metrics: Arc<Metrics>,
    /// Tells the operator feed what is routed and who comes and goes (an observer too).
    feed: Arc<Feed>,
    /// Woken whenever a name is released, for a claim waiting on a holder that did not
    /// answer its probe (a signal, not state; see `dispatch/register.rs`).
    released: Notify,
}

/// The first page of the online ids as a JSON array, as a delta client's `registered` carries
/// it. A join or leave of an id after `last` leaves the page as it was, so a fleet joining
/// past the first page does not rebuild it for every registration (it was 4.8 % of the hub's
/// CPU in the 5,000-registration storm, docs/BENCHMARKS.md).
struct FirstPage {
    /// The page size it was built for.
    limit: usize,
    /// Its last id: changes that sort after it do not touch it.
    last: SessionId,
    json: Arc<str>,
}

/// Everything the router knows, kept consistent by the methods below.
#[derive(Default)]
struct State {
    /// Every held name and its connection, active or still registering.
    peers: HashMap<SessionId, Peer>,
    /// The active ids, sorted as they come and go, so listing them never sorts.
    online: BTreeSet<SessionId>,
    /// `online` rendered as a JSON array, rebuilt after a change when first asked for.
    online_json: Option<Arc<str>>,
    /// The first page of `online`, kept across changes after its last id (see
    /// [`FirstPage`]).
    online_page: Option<FirstPage>,
    /// Active peers per presence mode, so a change costs nothing for modes nobody uses.
    full_peers: usize,
    delta_peers: usize,
    /// Presence changes waiting for the next batch to `presence: "delta"` peers, in order.
    pending_presence: Vec<(SessionId, bool)>,
    /// `peer_joined`/`peer_left` frames for `presence: "full"` peers not sent yet, in order:
    /// (announcement number, subject, frame). Bounds: [`HELD_FULL_BYTES`] (plus the frame
    /// that passes it) and [`HELD_FULL_FRAMES`].
    held_full: Vec<(u64, SessionId, Utf8Bytes)>,
    /// Presence announcements so far (numbers the held frames; see [`Peer::presence_from`]).
    announced: u64,
    /// Delivery fixes for the store (see [`CommitSink::take_fixes`]).
    fixes: Vec<(u64, Option<i64>)>,
    /// Connections to ring (`mail` frames) when mail arrives for a session, without holding
    /// its name: `claude-relay wait` uses this to wake an idle agent.
    watchers: HashMap<SessionId, Vec<Outbox>>,
}

impl State {
    /// The active holder of `id`.
    fn active(&self, id: &str) -> Option<&Peer> {
        self.peers.get(id).filter(|p| p.active)
    }

    fn mode_count(&mut self, mode: PresenceMode) -> Option<&mut usize> {
        match mode {
            PresenceMode::Full => Some(&mut self.full_peers),
            PresenceMode::Delta => Some(&mut self.delta_peers),
            PresenceMode::None => None,
        }
    }

    /// Adds `id` to the online set (and its mode's count).
    fn went_online(&mut self, id: &SessionId, mode: PresenceMode) {
        if let Some(n) = self.mode_count(mode) {
            *n += 1;
        }
        self.online.insert(id.clone());
        self.online_changed(id);
    }

    /// Makes a claimed id deliverable (see [`Router::welcome`]).
    fn activate(&mut self, id: &SessionId, conn: u64, stale: bool) {
        let from = self.announced + 1;
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        if p.outbox.id() != conn || p.active {
            return;
        }
        p.active = true;
        p.presence_from = from;
        p.stale = stale;
        let mode = p.presence;
        self.went_online(id, mode);
    }

    /// Removes `id` from the online set (and its mode's count).
    fn went_offline(&mut self, id: &SessionId, mode: PresenceMode) {
        if let Some(n) = self.mode_count(mode) {
            *n = n.saturating_sub(1);
        }
        self.online.remove(id);
        self.online_changed(id);
    }

    /// Drops the rendered lists `id` joining or leaving changed: the whole list always, the
    /// first page only if `id` sorts within it.
    fn online_changed(&mut self, id: &SessionId) {
        self.online_json = None;
        if self.online_page.as_ref().is_some_and(|p| *id <= p.last) {
            self.online_page = None;
        }
    }

    fn online_json(&mut self) -> Arc<str> {
        if let Some(json) = &self.online_json {
            return json.clone();
        }
        let json: Arc<str> = Arc::from(frames::id_array(self.online.iter().map(SessionId::as_str)));
        self.online_json = Some(json.clone());
        json
    }

    /// The first `limit` online ids as a JSON array (shared until a change within it), and
    /// how many are online.
    fn online_page(&mut self, limit: usize) -> (Arc<str>, usize) {
        let total = self.online.len();
        if total <= limit {
            return (self.online_json(), total);
        }
        if let Some(p) = &self.online_page
            && p.limit == limit
        {
            return (p.json.clone(), total);
        }
        let mut last = None;
        let page = self
            .online
            .iter()
            .take(limit)
            .inspect(|id| last = Some(*id));
        let json: Arc<str> = Arc::from(frames::id_array(page.map(SessionId::as_str)));
        let Some(last) = last.cloned() else {
            return (json, total); // a page of none
        };
        self.online_page = Some(FirstPage {
            limit,
            last,
            json: json.clone(),
        });
        (json, total)
    }

    /// Sends the held `peer_joined`/`peer_left` frames to the `presence: "full"` peers, each
    /// peer's in one go and in order, skipping a peer's own and those announced before it
    /// went active. Returns how many peers they went to.
    fn release_full(&mut self) -> usize {
        if self.held_full.is_empty() {
            return 0;
        }
        let held = std::mem::take(&mut self.held_full);
        let mut recipients = 0;
        for (id, p) in &self.peers {
            if !p.active || p.presence != PresenceMode::Full {
                continue;
            }
            recipients += 1;
            for (n, subject, frame) in &held {
                if *n >= p.presence_from && subject != id {
                    let _ = p.outbox.push(frame.clone());
                }
            }
        }
        recipients
    }

    /// Pushes `frame` to the live holder of `to`. True if its connection took it.
    fn deliver(&self, to: &str, frame: &Utf8Bytes) -> bool {
        self.active(to)
            .is_some_and(|p| p.outbox.push(frame.clone()).is_ok())
    }

    /// Pushes `frame` to every live session except `except`. Returns how many took it.
    fn broadcast(&self, except: &str, frame: &Utf8Bytes) -> u32 {
        let mut n = 0;
        for (id, p) in &self.peers {
            if p.active && id.as_str() != except && p.outbox.push(frame.clone()).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Delivers `frame` (the committed `msg`), rings the watchers, and records a delivery
    /// fix when the push went otherwise than `predicted` at the insert. Returns whether
    /// anyone took it and, for a broadcast, how many.
    fn route_one(
        &mut self,
        msg: &StoredMessage,
        frame: &Utf8Bytes,
        predicted: bool,
        now: i64,
    ) -> (bool, Option<u32>) {
        // A message is never seen before the presence announced ahead of it.
        self.release_full();
        let (took, recipients) = if &*msg.to == relay_proto::BROADCAST {
            let n = self.broadcast(&msg.from, frame);
            (n > 0, Some(n))
        } else {
            (self.deliver(&msg.to, frame), None)
        };
        if took != predicted {
            self.fixes.push((msg.seq, took.then_some(now)));
        }
        self.ring(&msg.to, &msg.from, msg.seq);
        (took, recipients)
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
        if to == relay_proto::BROADCAST {
            for (id, list) in &self.watchers {
                if id.as_str() != from {
                    ring_one(id.as_str(), list);
                }
            }
        } else if let Some(list) = self.watchers.get(to) {
            ring_one(to, list);
        }
    }
}

impl Router {
    /// An empty table that reports to `metrics` and `feed`.
    pub(crate) fn observed(metrics: Arc<Metrics>, feed: Arc<Feed>) -> Self {
        Self {
            metrics,
            feed,
            ..Self::default()
        }
    }

    /// The state; a poisoned lock is taken over (docs/ARCHITECTURE.md, "Rules").
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims `id` for a connection. Fails, without disturbing the holder, if a live
    /// connection holds it; the holder is probed so that a dead one is dropped quickly.
    pub(crate) fn claim(&self, id: &SessionId, peer: Peer) -> Result<(), Holder> {
        let mut s = self.lock();
        if let Some(held) = s.peers.get(id) {
            held.probe.notify_one();
            return Err(Holder {
                addr: held.addr,
                connected_at: held.connected_at,
            });
        }
        s.peers.insert(id.clone(), peer);
        Ok(())
    }

    /// Makes a claimed id deliverable. `stale`: a delta client whose `registered` held only
    /// the first page of the list (see [`Peer::stale`]).
    #[cfg(test)]
    pub(crate) fn activate(&self, id: &SessionId, conn: u64, stale: bool) {
        self.lock().activate(id, conn, stale);
    }

    /// Welcomes a claimed id: reads the online list its `registered` carries — the whole
    /// list for `presence: "full"`, the first `page` and the count for `"delta"`, none for
    /// `"none"` — hands it to `first`, which queues `registered` and the backlog, and makes
    /// the id deliverable, all under one lock: no presence change falls between the list it
    /// was given and the first change it is sent, and nothing reaches it before `first`'s
    /// frames.
    pub(crate) fn welcome(
        &self,
        id: &SessionId,
        conn: u64,
        presence: PresenceMode,
        page: usize,
        first: impl FnOnce(Arc<str>, Option<u64>),
    ) {
        let mut s = self.lock();
        // Not active yet, so the online list is exactly the others.
        let (list, total, stale) = match presence {
            PresenceMode::None => (Arc::from("[]"), None, false),
            PresenceMode::Full => (s.online_json(), None, false),
            PresenceMode::Delta => {
                let (list, total) = s.online_page(page);
                (list, Some(total as u64), total > page)
            }
        };
        first(list, total);
        s.activate(id, conn, stale);
    }

    /// Frees `id` if connection `conn` holds it. Returns true if it did.
    pub(crate) fn release(&self, id: &SessionId, conn: u64) -> bool {
        let mut s = self.lock();
        if s.peers.get(id).is_none_or(|p| p.outbox.id() != conn) {
            return false;
        }
        if let Some(p) = s.peers.remove(id)
            && p.active
        {
            s.went_offline(id, p.presence);
        }
        drop(s);
        self.released.notify_waiters();
        true
    }

    /// Resolves at the next release of any name. Create it (and `enable` it) before looking
    /// at the table, so a release in between is not missed.
    pub(crate) fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }

    /// Reports that `subject` came online (`joined`) or went offline. Every
    /// `presence: "full"` session but the subject gets a `peer_joined` / `peer_left` frame
    /// with the whole list (the Node relay's format, built once and shared), held back until
    /// the next presence batch ([`flush_presence`](Self::flush_presence)) or the next routed
    /// message (or list of who is online), whichever comes first, so that a storm of joins
    /// reaches each session in a few large writes instead of one write per join: the same
    /// frames in the same order, at most one batch interval later (a quarter second, up to a
    /// second with 5,000 sessions to tell: see `presence::next_batch_after`), and never after
    /// a message routed later (on loopback each write was also received, and its reader
    /// woken, on the hub's CPU; docs/BENCHMARKS.md). `presence: "delta"` sessions get
    /// the change in the next batch too, as one `presence` frame.
    pub(crate) fn announce(&self, subject: &SessionId, joined: bool) {
        self.feed.session(subject.as_str(), joined);
        let mut s = self.lock();
        s.announced += 1;
        if s.delta_peers > 0 {
            s.pending_presence.push((subject.clone(), joined));
        }
        if s.full_peers == 0 {
            return;
        }
        let frame = frames::presence_full(joined, subject.as_str(), &s.online_json());
        let n = s.announced;
        s.held_full.push((n, subject.clone(), frame));
        // Summed, not kept: at most `HELD_FULL_FRAMES` of them.
        let bytes: usize = s.held_full.iter().map(|(_, _, f)| f.len()).sum();
        if bytes > HELD_FULL_BYTES || s.held_full.len() >= HELD_FULL_FRAMES {
            s.release_full();
        }
    }

    /// Sends the presence changes held since the last call: the `peer_joined`/`peer_left`
    /// frames to `presence: "full"` sessions (see [`announce`](Self::announce)), and one
    /// `presence` frame (serialized once) to every `presence: "delta"` session, each id
    /// reported with its last change only — or, past `page` changes, none of them but
    /// `resync` (the client reads the list again if it keeps one), so a storm costs a delta
    /// client O(1) bytes a batch. Returns how many sessions they went to (what paces the
    /// next batch).
    pub(crate) fn flush_presence(&self, page: usize) -> usize {
        let mut s = self.lock();
        let full = s.release_full();
        if s.pending_presence.is_empty() {
            return full;
        }
        let changes = std::mem::take(&mut s.pending_presence);
        let mut last: HashMap<&str, bool> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        for (id, joined) in &changes {
            if last.insert(id.as_str(), *joined).is_none() {
                order.push(id.as_str());
            }
        }
        let mut batch = PresenceBatch::default();
        if order.len() > page {
            batch.resync = Some(true);
            batch.online = Some(s.online.len() as u64);
        } else {
            for id in order {
                if last[id] {
                    batch.joined.push(id.to_string());
                } else {
                    batch.left.push(id.to_string());
                }
            }
        }
        let resync = batch.resync.is_some();
        let frame = to_frame(&ServerFrame::Presence(batch));
        let mut recipients = 0;
        for p in s.peers.values_mut() {
            if p.active && p.presence == PresenceMode::Delta && !p.stale {
                let _ = p.outbox.push(frame.clone());
                p.stale = resync;
                recipients += 1;
            }
        }
        full + recipients
    }

    /// Every session online now, sorted (what `get_peers` answers: the presence held for
    /// the next batch goes out first, so that no older `peer_joined`/`peer_left` follows
    /// this list).
    pub(crate) fn online(&self) -> Vec<String> {
        self.online_listed(None)
    }

    /// [`online`](Self::online), read for `reader`'s list (`get_peers`, the first page of
    /// `get_sessions`): a stale delta client ([`Peer::stale`]) is sent the batches again from
    /// this read on — cleared under the same lock as the read, so a `resync` sent before it
    /// is covered by the reply and one sent after it marks the client stale again.
    pub(crate) fn online_listed(&self, reader: Option<&SessionId>) -> Vec<String> {
        let mut s = self.lock();
        s.release_full();
        if let Some(p) = reader.and_then(|id| s.peers.get_mut(id)) {
            p.stale = false;
        }
        s.online.iter().map(|id| id.to_string()).collect()
    }

    /// True if `id` is held by an active connection.
    pub(crate) fn is_online(&self, id: &str) -> bool {
        self.lock().active(id).is_some()
    }

    /// When the current (active) holder of `id` registered.
    pub(crate) fn connected_at(&self, id: &str) -> Option<i64> {
        self.lock().active(id).map(|p| p.connected_at)
    }

    /// True if a connection holds `id`, active or still registering.
    pub(crate) fn is_held(&self, id: &str) -> bool {
        self.lock().peers.contains_key(id)
    }

    /// Adds `outbox` as a watcher of `id`'s mail. Fails when [`MAX_WATCHERS`] live watchers
    /// are already there.
    pub(crate) fn watch(&self, id: &SessionId, outbox: Outbox) -> Result<(), usize> {
        let mut s = self.lock();
        let list = s.watchers.entry(id.clone()).or_default();
        list.retain(|o| !o.is_closed() && o.id() != outbox.id());
        if list.len() >= MAX_WATCHERS {
            return Err(MAX_WATCHERS);
        }
        list.push(outbox);
        Ok(())
    }

    /// Removes connection `conn` from the watchers of `id`.
    pub(crate) fn unwatch(&self, id: &SessionId, conn: u64) {
        let mut s = self.lock();
        if let Some(list) = s.watchers.get_mut(id) {
            list.retain(|o| o.id() != conn);
            if list.is_empty() {
                s.watchers.remove(id);
            }
        }
    }

    /// Pushes a committed message that did not come through the store's append path (task
    /// mail, see `crate::tasks`) to its recipient(s) and watchers, and records a delivery
    /// fix when the push went otherwise than `predicted` at the insert. It is counted and
    /// shown to the operator feed like any routed message.
    pub(crate) fn route_stored(&self, msg: &StoredMessage, frame: &Utf8Bytes, predicted: bool) {
        let (took, recipients) = self.lock().route_one(msg, frame, predicted, now_ms());
        self.metrics.routed(took, recipients);
        self.feed.routed(msg, took, recipients);
    }

    /// Closes every registered connection (used when the store was reset: clients must
    /// reconnect and learn the new epoch).
    pub(crate) fn close_all(&self, code: u16, reason: &str) {
        for p in self.lock().peers.values() {
            p.outbox.finish(code, reason);
        }
    }

    /// Routes committed batches on the calling runtime until the store stops sending them.
    /// Bound: [`ROUTE_QUEUE`] batches (each ≤ [`MAX_BATCH`](crate::store::actor::MAX_BATCH)
    /// messages) may wait; beyond that the store thread waits.
    pub(crate) async fn run_routes(self: Arc<Self>) {
        let (tx, mut rx) = mpsc::channel(ROUTE_QUEUE);
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
    /// outcome differs from the delivery recorded with the insert. One lock for the batch.
    pub(crate) fn route(&self, epoch: &str, batch: Vec<Committed>) {
        let now = now_ms();
        let mut s = self.lock();
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
            let (took, recipients) = s.route_one(&msg, &frame, predicted, now);
            self.metrics.routed(took, recipients);
            self.feed.routed(&msg, took, recipients);
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
    }
}

impl CommitSink for Router {
    fn deliverable(&self, from: &str, to: &str) -> bool {
        let s = self.lock();
        if to == relay_proto::BROADCAST {
            s.online.len() > usize::from(s.active(from).is_some())
        } else {
            s.active(to).is_some_and(|p| !p.outbox.is_closed())
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
        into.append(&mut self.lock().fixes);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{OutboxReceiver, outbox};

    /// Registers `name` (active) with `mode` on a fresh outbox.
    fn join(r: &Router, name: &str, mode: PresenceMode, conn: u64) -> (SessionId, OutboxReceiver) {
        let id = SessionId::parse(name).unwrap();
        let (tx, rx) = outbox(conn, 4096, 8 << 20);
        let peer = Peer {
            outbox: tx,
            presence: mode,
            addr: "127.0.0.1:1".parse().unwrap(),
            connected_at: 0,
            active: false,
            probe: Arc::new(Notify::new()),
            presence_from: 0,
            stale: false,
        };
        assert!(r.claim(&id, peer).is_ok());
        r.activate(&id, conn, false);
        r.announce(&id, true);
        (id, rx)
    }

    /// Each queued frame's `type` and `clientId` (or `content`).
    fn drain(rx: &mut OutboxReceiver) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv())
            .map(|f| {
                let v: serde_json::Value = serde_json::from_str(f.as_str()).unwrap();
                let what = v.get("clientId").or(v.get("content")).unwrap();
                format!("{} {}", v["type"].as_str().unwrap(), what.as_str().unwrap())
            })
            .collect()
    }

    fn message(from: &str, to: &str, content: &str) -> StoredMessage {
        StoredMessage {
            seq: 1,
            ts: 0,
            from: from.into(),
            to: to.into(),
            content: content.into(),
            reply: None,
        }
    }

    #[test]
    fn full_presence_is_held_for_the_batch_and_sent_in_order() {
        let r = Router::default();
        let (_, mut a) = join(&r, "A", PresenceMode::Full, 1);
        let (_, mut b) = join(&r, "B", PresenceMode::Full, 2);
        let (c, _c) = join(&r, "C", PresenceMode::None, 3);
        r.release(&c, 3);
        r.announce(&c, false);
        // Nothing yet: the frames wait for the batch...
        assert!(drain(&mut a).is_empty());
        // ... and then each peer gets them all, in order, but its own and those announced
        // before it was active (B's `registered` list had A already).
        assert_eq!(r.flush_presence(256), 2);
        assert_eq!(
            drain(&mut a),
            ["peer_joined B", "peer_joined C", "peer_left C"]
        );
        assert_eq!(drain(&mut b), ["peer_joined C", "peer_left C"]);
        assert_eq!(r.flush_presence(256), 0, "sent once");
    }

    #[test]
    fn a_delta_batch_past_the_page_says_resync_and_nothing_follows_until_the_list_is_read() {
        let r = Router::default();
        let (d, mut drx) = join(&r, "D", PresenceMode::Delta, 1);
        let batches = |rx: &mut OutboxReceiver| -> Vec<serde_json::Value> {
            std::iter::from_fn(|| rx.try_recv())
                .map(|f| serde_json::from_str(f.as_str()).unwrap())
                .collect()
        };
        r.flush_presence(2);
        batches(&mut drx);
        let _others: Vec<_> = (0..3)
            .map(|i| join(&r, &format!("P{i}"), PresenceMode::None, 10 + i))
            .collect();
        assert_eq!(r.flush_presence(2), 1);
        let sent = batches(&mut drx);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["resync"], true, "{sent:?}");
        assert_eq!(sent[0]["online"], 4, "D and the three: {sent:?}");
        assert_eq!(sent[0]["joined"], serde_json::json!([]), "{sent:?}");

        // Stale: a small batch is not sent to it...
        let _q = join(&r, "Q", PresenceMode::None, 20);
        assert_eq!(r.flush_presence(2), 0);
        assert!(batches(&mut drx).is_empty());
        // ... until it reads the list (a read for someone else does not count).
        assert_eq!(r.online_listed(None).len(), 5);
        let _q2 = join(&r, "Q2", PresenceMode::None, 21);
        assert_eq!(r.flush_presence(2), 0);
        assert_eq!(r.online_listed(Some(&d)).len(), 6);
        let _q3 = join(&r, "Q3", PresenceMode::None, 22);
        assert_eq!(r.flush_presence(2), 1);
        let sent = batches(&mut drx);
        assert_eq!(sent[0]["joined"], serde_json::json!(["Q3"]), "{sent:?}");
        assert!(sent[0].get("resync").is_none(), "{sent:?}");
    }

    #[test]
    fn the_first_page_is_rebuilt_only_for_a_change_within_it() {
        let r = Router::default();
        let held: Vec<_> = ["B", "D", "F"]
            .iter()
            .zip(1..)
            .map(|(n, conn)| join(&r, n, PresenceMode::None, conn))
            .collect();
        let page = |r: &Router| r.lock().online_page(2);
        let (first, total) = page(&r);
        assert_eq!((&*first, total), (r#"["B","D"]"#, 3));
        // Joins and leaves after the page's last id leave it as it was, shared.
        let g = join(&r, "G", PresenceMode::None, 10);
        assert!(r.release(&g.0, 10));
        let _h = join(&r, "H", PresenceMode::None, 11);
        let (again, total) = page(&r);
        assert!(Arc::ptr_eq(&first, &again), "{again}");
        assert_eq!(total, 4);
        // A join within it, and a leave of its last id, rebuild it.
        let _c = join(&r, "C", PresenceMode::None, 12);
        assert_eq!(&*page(&r).0, r#"["B","C"]"#);
        assert!(r.release(&held[0].0, 1));
        assert_eq!(&*page(&r).0, r#"["C","D"]"#);
        assert!(r.release(&held[1].0, 2));
        assert_eq!(page(&r), (Arc::from(r#"["C","F"]"#), 3));
        // A page of none is none, whoever is online.
        assert_eq!(&*r.lock().online_page(0).0, "[]");
    }

    #[test]
    fn a_message_is_not_seen_before_the_presence_announced_ahead_of_it() {
        let r = Router::default();
        let (_, mut a) = join(&r, "A", PresenceMode::Full, 1);
        let (_, _b) = join(&r, "B", PresenceMode::Full, 2);
        let msg = message("B", "A", "hello");
        r.route_stored(&msg, &frames::message("e", &msg), true);
        assert_eq!(drain(&mut a), ["peer_joined B", "message hello"]);
    }

    #[test]
    fn held_presence_goes_out_at_once_past_its_bound() {
        let r = Router::default();
        let (_, mut a) = join(&r, "A", PresenceMode::Full, 1);
        let mut joined = 0;
        // Each frame carries the whole list: the held bytes pass the bound within a couple
        // of hundred joins, and then the frames go without waiting for the batch.
        let sent: Vec<Utf8Bytes> = loop {
            let sent: Vec<_> = std::iter::from_fn(|| a.try_recv()).collect();
            if !sent.is_empty() {
                break sent;
            }
            joined += 1;
            assert!(joined <= HELD_FULL_FRAMES, "never sent before the batch");
            let _ = join(
                &r,
                &format!("S{joined}"),
                PresenceMode::None,
                10 + joined as u64,
            );
        };
        assert_eq!(sent.len(), joined, "all of them, at once");
        let bytes: usize = sent.iter().map(|f| f.len()).sum();
        assert!(
            bytes > HELD_FULL_BYTES,
            "held until the bound: {bytes} bytes"
        );
        assert!(
            bytes - sent.last().unwrap().len() <= HELD_FULL_BYTES,
            "and not past it: {bytes} bytes"
        );
        assert!(
            joined < HELD_FULL_FRAMES,
            "the byte bound, not the frame bound"
        );
    }

    #[test]
    fn many_small_presence_frames_go_out_before_they_crowd_a_queue() {
        let r = Router::default();
        let (_, mut a) = join(&r, "A", PresenceMode::Full, 1);
        // A session that comes and goes: two short frames a time, the list staying short.
        let mut announced = 0;
        let sent = loop {
            let sent = drain(&mut a).len();
            if sent > 0 {
                break sent;
            }
            let conn = 2 + announced as u64;
            let (id, _rx) = join(&r, "Churn", PresenceMode::None, conn);
            r.release(&id, conn);
            r.announce(&id, false);
            announced += 2;
            assert!(
                announced <= HELD_FULL_FRAMES + 1,
                "held past the frame bound"
            );
        };
        // One of the held frames was A's own join, which A is not sent.
        assert_eq!(sent, HELD_FULL_FRAMES - 1);
    }

    #[test]
    fn a_list_of_who_is_online_is_not_followed_by_older_presence() {
        let r = Router::default();
        let (_, mut a) = join(&r, "A", PresenceMode::Full, 1);
        let (_, _b) = join(&r, "B", PresenceMode::Full, 2);
        assert_eq!(r.online(), ["A", "B"]);
        assert_eq!(
            drain(&mut a),
            ["peer_joined B"],
            "sent before the list is read"
        );
    }
}
