//! A connection's outbound queue: bounded in frames and in bytes, never blocking the producer.
//!
//! Anything that wants to write to a client (the router delivering a message, the store
//! actor acking a send, the connection's own replies) pushes a pre-serialized frame into the
//! [`Outbox`]; the connection's writer task drains it to the socket. Producers never wait: a
//! full queue means the client is not reading, so the connection is closed with a reason
//! (its mail stays in the store and it catches up after reconnecting) instead of letting one
//! slow reader grow the hub's memory or stall other sessions.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use relay_proto::wire::RequestId;
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The connection is closing or closed.
    Closed,
    /// The queue is over its frame or byte bound; the connection is now being closed.
    Overflow,
}

/// Close code and reason the writer should send.
#[derive(Debug, Clone)]
pub(crate) struct CloseReason {
    /// WebSocket close code.
    pub code: u16,
    /// Human-readable reason (≤ 123 bytes on the wire).
    pub reason: String,
}

/// A queue that has drained keeps at most this many slots of capacity (the rest is freed).
const KEEP_SLOTS: usize = 8;

/// `q`'s front; once that drains it, the slots a burst grew beyond [`KEEP_SLOTS`] are given
/// back, so an idle connection's queues hold (almost) no memory (issue 16).
pub(crate) fn pop_front_shrinking<T>(q: &mut VecDeque<T>) -> Option<T> {
    let front = q.pop_front();
    if q.is_empty() && q.capacity() > KEEP_SLOTS {
        *q = VecDeque::new();
    }
    front
}

/// Producer side of a connection's outbound queue. Cheap to clone.
pub struct Outbox {
    inner: Arc<Inner>,
}

/// The queue itself: a `VecDeque` under a mutex rather than a tokio channel, because a
/// channel keeps its blocks (1 KiB each, at least one per connection from the start, more
/// after a burst) for the connection's whole life, while this gives back what a burst grew
/// once it has drained: an idle connection's queue holds no memory (issue 16,
/// docs/BENCHMARKS.md). The lock is held only to push or pop one frame.
struct Inner {
    queue: Mutex<VecDeque<Utf8Bytes>>,
    /// Bound on `queue.len()`.
    max_frames: usize,
    /// Wakes the receiver after a push (a permit is kept if it is not waiting yet).
    ready: Notify,
    /// Live [`Outbox`] handles; the receiver ends when the last one is gone.
    senders: AtomicUsize,
    /// The receiver is gone: pushes are refused.
    receiver_gone: AtomicBool,
    /// Bytes queued and not yet written (bound: `max_bytes`).
    bytes: AtomicUsize,
    max_bytes: usize,
    closed: AtomicBool,
    /// Closed because the queue overflowed (counted by the connection for `/metrics`).
    overflowed: AtomicBool,
    /// Send what is already queued before the close frame (a graceful close); false for an
    /// overflow or a dead peer, where the queue is abandoned.
    drain: AtomicBool,
    close: std::sync::Mutex<Option<CloseReason>>,
    /// Flips to true when the connection must close; the reader and writer both watch it.
    close_signal: watch::Sender<bool>,
    /// Connection number, for logs and for telling connections apart in the router.
    id: u64,
}

/// Consumer side, owned by the writer task.
pub struct OutboxReceiver {
    inner: Arc<Inner>,
    closed: watch::Receiver<bool>,
}

/// Creates a queue bounded to `max_frames` frames and `max_bytes` bytes.
pub fn outbox(id: u64, max_frames: usize, max_bytes: usize) -> (Outbox, OutboxReceiver) {
    let inner = Arc::new(Inner {
        queue: Mutex::new(VecDeque::new()),
        max_frames,
        ready: Notify::new(),
        senders: AtomicUsize::new(1),
        receiver_gone: AtomicBool::new(false),
        bytes: AtomicUsize::new(0),
        max_bytes,
        closed: AtomicBool::new(false),
        overflowed: AtomicBool::new(false),
        drain: AtomicBool::new(false),
        close: std::sync::Mutex::new(None),
        close_signal: watch::Sender::new(false),
        id,
    });
    (
        Outbox {
            inner: inner.clone(),
        },
        OutboxReceiver {
            closed: inner.close_signal.subscribe(),
            inner,
        },
    )
}

impl Inner {
    /// The queue; a poisoned lock is taken over (docs/ARCHITECTURE.md, "Rules").
    fn queue(&self) -> MutexGuard<'_, VecDeque<Utf8Bytes>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next queued frame; a queue that drained gives back what a burst grew.
    fn pop(&self) -> Option<Utf8Bytes> {
        pop_front_shrinking(&mut self.queue())
    }
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.inner.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.inner.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.ready.notify_one();
        }
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        self.inner.receiver_gone.store(true, Ordering::Release);
        // What was queued is never written: let the frames go now.
        self.inner.queue().clear();
    }
}

impl Outbox {
    /// The connection number.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// True once the connection is closing.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Queues one frame without waiting. On overflow the connection is closed (1008) with a
    /// reason that says the client was too slow and that its mail is kept.
    pub fn push(&self, frame: Utf8Bytes) -> Result<(), PushError> {
        if self.is_closed() {
            return Err(PushError::Closed);
        }
        let len = frame.len();
        let before = self.inner.bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > self.inner.max_bytes && before > 0 {
            self.inner.bytes.fetch_sub(len, Ordering::AcqRel);
            self.overflow();
            return Err(PushError::Overflow);
        }
        let pushed = {
            let mut q = self.inner.queue();
            if self.inner.receiver_gone.load(Ordering::Acquire) {
                Err(PushError::Closed)
            } else if q.len() >= self.inner.max_frames {
                Err(PushError::Overflow)
            } else {
                q.push_back(frame);
                Ok(())
            }
        };
        match pushed {
            Ok(()) => {
                self.inner.ready.notify_one();
                Ok(())
            }
            Err(e) => {
                self.inner.bytes.fetch_sub(len, Ordering::AcqRel);
                if e == PushError::Overflow {
                    self.overflow();
                }
                Err(e)
            }
        }
    }

    /// Serializes `frame` and queues it.
    pub fn push_json<T: serde::Serialize>(&self, frame: &T) -> Result<(), PushError> {
        self.push(to_frame(frame))
    }

    fn overflow(&self) {
        self.inner.overflowed.store(true, Ordering::Relaxed);
        tracing::warn!(
            conn = self.inner.id,
            "outbound queue full: closing slow connection"
        );
        self.close(
            1008,
            "outbound queue overflow: client too slow; mail is stored, reconnect to catch up",
        );
    }

    /// Asks the writer to send a close frame and end the connection now, abandoning
    /// whatever is still queued (overflow, dead peer). The first reason wins.
    pub fn close(&self, code: u16, reason: &str) {
        self.close_with(code, reason, false);
    }

    /// Like [`close`](Self::close), but the frames already queued (say, the error that
    /// explains the close) go out first. Nothing pushed after this call is accepted.
    pub fn finish(&self, code: u16, reason: &str) {
        self.close_with(code, reason, true);
    }

    fn close_with(&self, code: u16, reason: &str, drain: bool) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.drain.store(drain, Ordering::Release);
        *self
            .inner
            .close
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(CloseReason {
            code,
            reason: reason.to_string(),
        });
        self.inner.close_signal.send_replace(true);
    }

    /// True if the connection was closed because its queue overflowed.
    pub fn overflowed(&self) -> bool {
        self.inner.overflowed.load(Ordering::Relaxed)
    }

    /// A receiver that sees `true` once [`close`](Self::close) was called.
    pub fn closed_signal(&self) -> watch::Receiver<bool> {
        self.inner.close_signal.subscribe()
    }
}

impl OutboxReceiver {
    /// The next frame, or `None` when the connection must close (see [`take_close`]).
    ///
    /// [`take_close`]: Self::take_close
    pub(crate) async fn recv(&mut self) -> Option<Utf8Bytes> {
        loop {
            if self.inner.closed.load(Ordering::Acquire) {
                return self.leftover();
            }
            if let Some(frame) = self.inner.pop() {
                return Some(frame);
            }
            if self.inner.senders.load(Ordering::Acquire) == 0 {
                return None;
            }
            // A push between the pop above and this wait leaves a permit: not missed.
            let closing = tokio::select! {
                biased;
                _ = self.closed.wait_for(|c| *c) => true,
                _ = self.inner.ready.notified() => false,
            };
            if closing {
                return self.leftover();
            }
        }
    }

    /// A frame that is already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Utf8Bytes> {
        if self.inner.closed.load(Ordering::Acquire) {
            return self.leftover();
        }
        self.inner.pop()
    }

    /// After a close: the queued frames of a graceful close, none otherwise.
    fn leftover(&mut self) -> Option<Utf8Bytes> {
        if self.inner.drain.load(Ordering::Acquire) {
            self.inner.pop()
        } else {
            None
        }
    }

    /// Records that `n` bytes left the queue (were written to the socket).
    pub(crate) fn written(&self, n: usize) {
        self.inner.bytes.fetch_sub(n, Ordering::AcqRel);
    }

    /// The close the connection should send, if one was asked for.
    pub(crate) fn take_close(&self) -> Option<CloseReason> {
        self.inner
            .close
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Where a `sent` ack (or a store error) for a message goes.
pub(crate) struct AckTo {
    /// The sender's connection.
    pub outbox: Outbox,
    /// The request id of the `message` frame, echoed on the ack.
    pub rid: Option<RequestId>,
}

/// Serializes a frame once into shareable bytes (cloning them is a reference count bump).
pub(crate) fn to_frame<T: serde::Serialize>(frame: &T) -> Utf8Bytes {
    Utf8Bytes::from(serde_json::to_string(frame).expect("server frames always serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_closes_instead_of_blocking() {
        let (tx, mut rx) = outbox(1, 2, 1 << 20);
        tx.push("a".into()).unwrap();
        tx.push("b".into()).unwrap();
        assert_eq!(tx.push("c".into()), Err(PushError::Overflow));
        assert!(tx.is_closed());
        assert_eq!(tx.push("d".into()), Err(PushError::Closed));
        assert!(rx.recv().await.is_none());
        assert_eq!(rx.take_close().unwrap().code, 1008);
    }

    #[tokio::test]
    async fn byte_bound_counts_queued_bytes() {
        let (tx, mut rx) = outbox(1, 100, 10);
        tx.push("123456".into()).unwrap();
        assert_eq!(tx.push("123456".into()), Err(PushError::Overflow));
        let (tx, mut rx2) = outbox(2, 100, 10);
        tx.push("123456".into()).unwrap();
        let f = rx2.recv().await.unwrap();
        rx2.written(f.len());
        tx.push("123456".into()).unwrap();
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_graceful_close_sends_what_was_queued_first() {
        let (tx, mut rx) = outbox(1, 100, 1 << 20);
        tx.push("why".into()).unwrap();
        tx.finish(1008, "bye");
        assert_eq!(tx.push("late".into()), Err(PushError::Closed));
        assert_eq!(rx.recv().await.unwrap().as_str(), "why");
        assert!(rx.recv().await.is_none());
        assert_eq!(rx.take_close().unwrap().reason, "bye");
    }

    #[tokio::test]
    async fn a_drained_queue_gives_its_memory_back_and_the_last_sender_ends_it() {
        let (tx, mut rx) = outbox(1, 1000, 1 << 20);
        for _ in 0..100 {
            tx.push("x".into()).unwrap();
        }
        assert!(tx.inner.queue().capacity() >= 100);
        while rx.try_recv().is_some() {}
        assert_eq!(tx.inner.queue().capacity(), 0);
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.push("late".into()).unwrap();
        assert_eq!(waiting.await.unwrap().unwrap().as_str(), "late");
        let (tx, mut rx) = outbox(2, 10, 1 << 20);
        let other = tx.clone();
        drop(tx);
        other.push("y".into()).unwrap();
        drop(other);
        assert_eq!(rx.recv().await.unwrap().as_str(), "y");
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_push_after_the_receiver_is_gone_is_refused() {
        let (tx, rx) = outbox(1, 10, 1 << 20);
        drop(rx);
        assert_eq!(tx.push("z".into()), Err(PushError::Closed));
        assert_eq!(tx.inner.bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_single_frame_larger_than_the_byte_bound_still_goes_out() {
        let (tx, mut rx) = outbox(1, 100, 4);
        tx.push("123456".into()).unwrap();
        assert_eq!(rx.recv().await.unwrap().as_str(), "123456");
    }
}
