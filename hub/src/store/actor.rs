//! The store actor: one thread owns the [`Backend`] and serves [`Request`]s in order.
//!
//! Group commit: the actor drains whatever is queued (up to [`MAX_BATCH`] appends) and
//! stores it in one transaction, so concurrent senders share one commit. Only after the
//! commit does it hand the batch to the [`CommitSink`] (the router), which delivers each
//! message to live recipients and acks its sender — a message is durable before anyone hears
//! of it. A `Call` (a query) first commits the appends queued before it, so a client always
//! reads its own writes. Deliveries are recorded with the insert when the recipient is
//! online; the rare fixes the router reports ride along in the next batch's transaction, or
//! are written on their own when the queue is idle. A `Deferred` call (a registration) may
//! leave its writes for one commit shared with the deferred calls around it, at most
//! [`DEFER_FOR`] later; anything else the actor runs commits them first.

use std::{
    sync::Arc,
    task::{Context, Poll, Wake, Waker},
    thread::Thread,
    time::{Duration, Instant},
};

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

/// Longest a deferred call's writes wait for their commit ([`Request::Deferred`]): the
/// bound on what a killed hub can forget of a registration storm. Registrations arriving
/// one after another (about one a millisecond in the 5,000-session benchmark) share one
/// commit per this interval instead of one each (docs/BENCHMARKS.md, "Registrations share
/// a commit").
pub(crate) const DEFER_FOR: Duration = Duration::from_millis(50);

/// Most deferred calls whose writes share one commit (the bound on one commit's size).
const DEFER_MAX: usize = 1024;

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
    let mut deferred = Deferred::default();
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    while let Some(first) = recv(&mut rx, &waker, deferred.due()) {
        let mut next = first;
        while let Some(req) = next.take() {
            match req {
                Request::Append(a) => {
                    batch.push(a);
                    if batch.len() >= MAX_BATCH {
                        deferred.settle(&mut *backend);
                        commit(&mut *backend, &mut batch, &mut delivered, &*sink);
                    }
                }
                Request::Call(f) => {
                    deferred.settle(&mut *backend);
                    commit(&mut *backend, &mut batch, &mut delivered, &*sink);
                    f(&mut *backend);
                    // A call may have reopened the store (see `Backend::verify`).
                    if **epoch.load() != backend.epoch() {
                        delivered.clear();
                        epoch.store(Arc::new(backend.epoch().to_string()));
                        integrity.store(Arc::new(backend.integrity()));
                    }
                }
                Request::Deferred(f) => {
                    // Due even while requests keep coming: DEFER_FOR bounds what waits.
                    if !batch.is_empty() || deferred.overdue() {
                        deferred.settle(&mut *backend);
                        commit(&mut *backend, &mut batch, &mut delivered, &*sink);
                    }
                    deferred.open(&mut *backend);
                    f(&mut *backend);
                }
            }
            next = rx.try_recv().ok();
        }
        if !batch.is_empty() {
            deferred.settle(&mut *backend);
            commit(&mut *backend, &mut batch, &mut delivered, &*sink);
        }
        sink.take_fixes(&mut delivered);
        if !delivered.is_empty() && rx.is_empty() {
            deferred.settle(&mut *backend);
            if let Err(e) = backend.mark_delivered(&delivered) {
                error!("recording deliveries failed: {e}");
            }
            delivered.clear();
        }
        if deferred.overdue() {
            deferred.settle(&mut *backend);
        }
    }
    deferred.settle(&mut *backend);
    if !delivered.is_empty() {
        let _ = backend.mark_delivered(&delivered);
    }
    debug!("store actor stopped");
}

/// The deferred calls whose writes wait for a commit ([`Request::Deferred`]).
#[derive(Default)]
struct Deferred {
    /// When the first of them ran; None when nothing waits.
    since: Option<Instant>,
    count: usize,
}

impl Deferred {
    /// When what waits must be committed.
    fn due(&self) -> Option<Instant> {
        self.since.map(|t| t + DEFER_FOR)
    }

    /// Whether what waits is due now.
    fn overdue(&self) -> bool {
        self.due().is_some_and(|due| due <= Instant::now())
    }

    /// A deferred call is about to run: its writes join the ones waiting (a full set is
    /// committed first).
    fn open(&mut self, backend: &mut dyn Backend) {
        if self.count >= DEFER_MAX {
            self.settle(backend);
        }
        // Every time: a deferred call may have settled itself (an owner secret) and
        // the backend opens a transaction only when none is open.
        backend.defer_commits();
        self.since.get_or_insert_with(Instant::now);
        self.count += 1;
    }

    /// Commits what waits, if anything.
    fn settle(&mut self, backend: &mut dyn Backend) {
        if self.since.take().is_some() {
            if let Err(e) = backend.settle() {
                // The backend said what was lost.
                debug!("deferred commit of {} call(s) failed: {e}", self.count);
            }
            self.count = 0;
        }
    }
}

/// Wakes the actor's thread when a request arrives while it waits with a deadline.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// The next request: waits for one, or until `due` (then `Some(None)`: time to commit what
/// was deferred). None once every handle is gone and the queue is empty.
fn recv(
    rx: &mut mpsc::Receiver<Request>,
    waker: &Waker,
    due: Option<Instant>,
) -> Option<Option<Request>> {
    let Some(due) = due else {
        return rx.blocking_recv().map(Some);
    };
    let mut cx = Context::from_waker(waker);
    loop {
        match rx.poll_recv(&mut cx) {
            Poll::Ready(req) => return req.map(Some),
            Poll::Pending => {}
        }
        let now = Instant::now();
        if now >= due {
            return Some(None);
        }
        // A push wakes the thread through `waker`; a wake-up for nothing just loops.
        std::thread::park_timeout(due - now);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::SyncMode, store::sqlite::SqliteBackend};

    /// A sink for a test that stores no messages.
    struct NoMessages;

    impl CommitSink for NoMessages {
        fn deliverable(&self, _: &str, _: &str) -> bool {
            false
        }
        fn committed(&self, _: &str, _: Vec<Committed>) {}
        fn take_fixes(&self, _: &mut Vec<(u64, Option<i64>)>) {}
        fn failed(&self, _: Vec<Append>, _: &StoreError) {}
    }

    #[test]
    fn deferred_writes_wait_at_most_defer_for_even_while_calls_keep_coming() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SqliteBackend::open_exclusive(dir.path(), SyncMode::Normal).unwrap();
        let (handle, thread) = spawn(Box::new(backend), 256, Arc::new(NoMessages));
        let outside = rusqlite::Connection::open(dir.path().join("relay.db")).unwrap();
        let started = Instant::now();
        // Registrations that arrive faster than the actor serves them (each takes 5 ms), so
        // its queue never runs dry: only the deadline can commit before the last one.
        let calls = (2 * DEFER_FOR.as_millis() / 5) as usize + 2;
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        for i in 0..calls {
            let seen = seen_tx.clone();
            let last = i + 1 == calls;
            let outside_path = dir.path().join("relay.db");
            assert!(handle.try_call_deferred(move |b| {
                b.session_registered(&format!("S{i}"), "{}", 0).unwrap();
                std::thread::sleep(Duration::from_millis(5));
                if last {
                    let other = rusqlite::Connection::open(outside_path).unwrap();
                    let rows: i64 = other
                        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
                        .unwrap();
                    seen.send(rows).unwrap();
                }
            }));
        }
        let committed_before_the_last = seen_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(
            started.elapsed() >= DEFER_FOR,
            "the calls ran past the deadline"
        );
        assert!(
            committed_before_the_last > 0,
            "nothing was committed in {:?} of deferred calls",
            started.elapsed()
        );
        drop(handle);
        thread.join().unwrap();
        let rows: i64 = outside
            .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            rows as usize, calls,
            "the actor commits the rest when it stops"
        );
    }
}
