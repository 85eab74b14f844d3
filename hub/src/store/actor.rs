//! The store actor: one thread owns the [`Backend`] and serves [`Request`]s in order.
//!
//! Group commit: the actor drains whatever is queued (up to [`MAX_BATCH`] appends) and
//! stores it in one transaction, so concurrent senders share one commit. Only after the
//! commit does it hand the batch to the [`CommitSink`] (the router), which delivers each
//! message to live recipients and acks its sender — a message is durable before anyone hears
//! of it. A `Call` (a query) first commits the appends queued before it, so a client always
//! reads its own writes. Deliveries are recorded with the insert when the recipient is
//! online; the rare fixes the router reports ride along in the next batch's transaction, or
//! are written on their own when the queue is idle.

use std::sync::Arc;

use arc_swap::ArcSwap;

use tokio::sync::mpsc;
use tracing::{debug, error};

use super::{
    Appended, Backend, Integrity, NewMessage, Request, StoreError, StoreHandle, StoredMessage,
};
use crate::outbound::AckTo;

/// Most appends stored in one transaction. Also the most `sent` acks one routed batch can
/// push into a sender's outbox at once, so outboxes must hold well over this (the default is
/// 4096 frames; the flag will not go below twice this).
pub(crate) const MAX_BATCH: usize = 512;

/// A message to store and whom to ack.
pub(crate) struct Append {
    /// The message.
    pub msg: NewMessage,
    /// Where the `sent` ack (or the error) goes.
    pub ack: AckTo,
    /// The frame budget charge of the frame it came in: held, never read, so its bytes count
    /// until the commit drops it.
    pub _charge: Option<crate::budget::Charge>,
}

/// A message that is now durable, with whom to ack.
pub(crate) struct Committed {
    /// The stored message (for a duplicate or a key conflict: the earlier message's seq
    /// with this send's content).
    pub msg: StoredMessage,
    /// Where the `sent` ack goes.
    pub ack: AckTo,
    /// What the store did: a new message is delivered and acked; a duplicate (its key
    /// matched an earlier send) is only acked; a key conflict is refused.
    pub outcome: Appended,
    /// Whether the delivery was recorded with the insert (see [`NewMessage::delivered_at`]).
    pub predicted: bool,
}

/// What happens to messages after they are committed (implemented by the router).
pub(crate) trait CommitSink: Send + Sync + 'static {
    /// Whether a live connection is there to take a message from `from` to `to` right now
    /// (asked just before the commit, so the delivery can be recorded with the insert).
    fn deliverable(&self, from: &str, to: &str) -> bool;
    /// The batch is durable: deliver it to live recipients and ack each sender (now, or on
    /// another thread soon, in commit order).
    fn committed(&self, epoch: &str, batch: Vec<Committed>);
    /// Moves the delivery fixes found since the last call into `into`: `(seq, Some(when))`
    /// for a message a live connection took although none was predicted, `(seq, None)` for
    /// one that was predicted but not taken.
    fn take_fixes(&self, into: &mut Vec<(u64, Option<i64>)>);
    /// The batch could not be stored: tell each sender, nothing was delivered.
    fn failed(&self, batch: Vec<Append>, error: &StoreError);
    /// A batch of `messages` was committed in `seconds` (for the metrics).
    fn observed(&self, _seconds: f64, _messages: usize) {}
}

/// Starts the actor thread. The queue holds `queue` requests (the backpressure bound for
/// every connection's sends and queries). The thread ends when every handle is dropped.
pub(crate) fn spawn(
    backend: Box<dyn Backend>,
    queue: usize,
    sink: Arc<dyn CommitSink>,
) -> (StoreHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(queue);
    let epoch = Arc::new(ArcSwap::from_pointee(backend.epoch().to_string()));
    let integrity = Arc::new(ArcSwap::from_pointee(backend.integrity()));
    let shared = (epoch.clone(), integrity.clone());
    let thread = std::thread::Builder::new()
        .name("relay-store".into())
        .spawn(move || run(backend, rx, sink, shared))
        .expect("spawn store thread");
    (
        StoreHandle {
            tx,
            epoch,
            integrity,
        },
        thread,
    )
}

fn run(
    mut backend: Box<dyn Backend>,
    mut rx: mpsc::Receiver<Request>,
    sink: Arc<dyn CommitSink>,
    (epoch, integrity): (Arc<ArcSwap<String>>, Arc<ArcSwap<Integrity>>),
) {
    let mut batch: Vec<Append> = Vec::with_capacity(64);
    let mut delivered: Vec<(u64, Option<i64>)> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(req) = next.take() {
            match req {
                Request::Append(a) => {
                    batch.push(a);
                    if batch.len() >= MAX_BATCH {
                        commit(&mut *backend, &mut batch, &mut delivered, &*sink);
                    }
                }
                Request::Call(f) => {
                    commit(&mut *backend, &mut batch, &mut delivered, &*sink);
                    f(&mut *backend);
                    // A call may have reopened the store (see `Backend::verify`).
                    if **epoch.load() != backend.epoch() {
                        delivered.clear();
                        epoch.store(Arc::new(backend.epoch().to_string()));
                        integrity.store(Arc::new(backend.integrity()));
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        commit(&mut *backend, &mut batch, &mut delivered, &*sink);
        sink.take_fixes(&mut delivered);
        if !delivered.is_empty() && rx.is_empty() {
            if let Err(e) = backend.mark_delivered(&delivered) {
                error!("recording deliveries failed: {e}");
            }
            delivered.clear();
        }
    }
    if !delivered.is_empty() {
        let _ = backend.mark_delivered(&delivered);
    }
    debug!("store actor stopped");
}

fn commit(
    backend: &mut dyn Backend,
    batch: &mut Vec<Append>,
    delivered: &mut Vec<(u64, Option<i64>)>,
    sink: &dyn CommitSink,
) {
    if batch.is_empty() {
        return;
    }
    for a in batch.iter_mut() {
        if sink.deliverable(&a.msg.from, &a.msg.to) {
            a.msg.delivered_at = Some(a.msg.ts);
        }
    }
    sink.take_fixes(delivered);
    let msgs: Vec<&NewMessage> = batch.iter().map(|a| &a.msg).collect();
    let started = std::time::Instant::now();
    match backend.append(&msgs, delivered) {
        Ok(outcomes) => {
            sink.observed(started.elapsed().as_secs_f64(), outcomes.len());
            delivered.clear();
            let committed = batch
                .drain(..)
                .zip(outcomes)
                .map(|(a, outcome)| Committed {
                    predicted: a.msg.delivered_at.is_some(),
                    msg: StoredMessage {
                        seq: outcome.seq(),
                        ts: a.msg.ts,
                        from: a.msg.from,
                        to: a.msg.to,
                        content: a.msg.content,
                        reply: a.msg.reply,
                    },
                    ack: a.ack,
                    outcome,
                })
                .collect();
            sink.committed(backend.epoch(), committed);
            // After the batch is on its way, not before: a checkpoint here delays only
            // the messages behind it.
            backend.maintain();
        }
        Err(e) => {
            error!("storing {} message(s) failed: {e}", batch.len());
            sink.failed(std::mem::take(batch), &e);
        }
    }
}
