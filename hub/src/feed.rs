//! The operator feed's bus: the hub publishes what happens (a session came or went, a message
//! was routed, delivered, read, a task was created or moved) and every live subscriber — a console page's event stream, a
//! `claude-relay tail` — gets it. See docs/PROTOCOL.md, "The operator feed".
//!
//! Costs and bounds:
//! - Nobody watching costs one relaxed atomic load per event site: events are only built
//!   while [`Feed::active`] says someone subscribed, and message bodies only while a
//!   subscriber asked for them.
//! - The bus is a bounded broadcast ring ([`RING`] events). A subscriber that falls behind
//!   loses the oldest events and is told how many (`lagged`); the hub never waits for it.
//! - At most `max_subscribers` at once (`HubConfig::max_feed_subscribers`); one more is
//!   refused with a reason.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicUsize, Ordering},
};

use relay_proto::{
    time::now_ms,
    wire_feed::{FeedEvent, MessageEvent, ReadEvent, SeqsEvent, SessionEvent, TaskMoved},
};
use tokio::sync::broadcast;

use crate::store::{StoredMessage, tasks::TaskRow};

/// Events the bus holds for the slowest subscriber before it starts losing them.
pub(crate) const RING: usize = 4096;

/// The bus. One per hub.
pub(crate) struct Feed {
    /// Made by the first subscriber: a hub nobody watches does not carry the ring.
    tx: OnceLock<broadcast::Sender<Arc<FeedEvent>>>,
    subscribers: AtomicUsize,
    /// Subscribers that want message bodies.
    bodies: AtomicUsize,
    max_subscribers: usize,
}

/// Refused: the hub already has its maximum of subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManySubscribers(pub usize);

impl std::fmt::Display for TooManySubscribers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the hub already has {} feed subscribers (its limit); close a console tab or a tail",
            self.0
        )
    }
}

/// One subscriber's end. Dropping it unsubscribes.
pub(crate) struct Subscription {
    feed: Arc<Feed>,
    rx: broadcast::Receiver<Arc<FeedEvent>>,
    bodies: bool,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new(crate::config::DEFAULT_FEED_SUBSCRIBERS)
    }
}

impl Feed {
    /// A bus admitting `max_subscribers` at once.
    pub(crate) fn new(max_subscribers: usize) -> Self {
        Self {
            tx: OnceLock::new(),
            subscribers: AtomicUsize::new(0),
            bodies: AtomicUsize::new(0),
            max_subscribers,
        }
    }

    /// True while anyone subscribes (check before building an event).
    pub(crate) fn active(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    /// Subscribes; `bodies` asks for message bodies on `message` events.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        bodies: bool,
    ) -> Result<Subscription, TooManySubscribers> {
        let n = self.subscribers.fetch_add(1, Ordering::AcqRel);
        if n >= self.max_subscribers {
            self.subscribers.fetch_sub(1, Ordering::AcqRel);
            return Err(TooManySubscribers(self.max_subscribers));
        }
        if bodies {
            self.bodies.fetch_add(1, Ordering::AcqRel);
        }
        Ok(Subscription {
            feed: self.clone(),
            rx: self
                .tx
                .get_or_init(|| broadcast::Sender::new(RING))
                .subscribe(),
            bodies,
        })
    }

    /// How many subscribe now.
    pub(crate) fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    fn publish(&self, event: FeedEvent) {
        // No receiver is not an error: the last one may have just left.
        if let Some(tx) = self.tx.get() {
            let _ = tx.send(Arc::new(event));
        }
    }

    /// `task` was created (`action` = `create`) or moved by `by`.
    pub(crate) fn task(&self, task: &TaskRow, action: &str, by: &str) {
        if self.active() {
            self.publish(FeedEvent::Task(TaskMoved {
                id: task.id(),
                state: task.state,
                action: action.to_string(),
                by: by.to_string(),
                from: task.from.clone(),
                to: task.to.clone(),
                holder: task.holder.clone(),
                title: task.title.clone(),
                created: task.created,
                ts: task.updated,
            }));
        }
    }

    /// A permission prompt was filed or left `pending`.
    pub(crate) fn approval(&self, view: relay_proto::wire_approvals::ApprovalView) {
        if self.active() {
            self.publish(FeedEvent::Approval(view));
        }
    }

    /// A session came online (`online`) or went offline.
    pub(crate) fn session(&self, id: &str, online: bool) {
        if self.active() {
            self.publish(FeedEvent::Session(SessionEvent {
                id: id.to_string(),
                online,
                ts: now_ms(),
            }));
        }
    }

    /// A message was routed (see [`crate::metrics::Metrics::routed`] for `live` and
    /// `recipients`).
    pub(crate) fn routed(&self, msg: &StoredMessage, live: bool, recipients: Option<u32>) {
        if !self.active() {
            return;
        }
        let content = (self.bodies.load(Ordering::Relaxed) > 0).then(|| msg.content.clone());
        self.publish(FeedEvent::Message(MessageEvent {
            seq: msg.seq,
            from: msg.from.to_string(),
            to: msg.to.to_string(),
            ts: msg.ts,
            bytes: msg.content.len() as u64,
            state: if live { "delivered" } else { "stored" }.into(),
            recipients,
            content,
        }));
    }

    /// Stored messages for `to` were handed to a live connection of it.
    pub(crate) fn delivered(&self, to: &str, seqs: impl Iterator<Item = u64>) {
        if !self.active() {
            return;
        }
        let seqs: Vec<u64> = seqs.collect();
        if !seqs.is_empty() {
            self.publish(FeedEvent::Delivered(SeqsEvent {
                to: to.to_string(),
                seqs,
                ts: now_ms(),
            }));
        }
    }

    /// `by` marked `seqs` read and has `unread` left.
    pub(crate) fn read(&self, by: &str, seqs: Vec<u64>, unread: u64) {
        if self.active() {
            self.publish(FeedEvent::Read(ReadEvent {
                by: by.to_string(),
                seqs,
                unread,
                ts: now_ms(),
            }));
        }
    }
}

impl Subscription {
    /// The next event for this subscriber: bodies removed unless it asked for them, and a
    /// `lagged` event in place of whatever it was too slow to take. `None` when the hub's bus
    /// is gone.
    pub(crate) async fn next(&mut self) -> Option<FeedEvent> {
        match self.rx.recv().await {
            Ok(ev) => Some(self.shape(&ev)),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                Some(FeedEvent::Lagged(relay_proto::wire_feed::Lagged { missed }))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    fn shape(&self, ev: &FeedEvent) -> FeedEvent {
        match ev {
            FeedEvent::Message(m) if !self.bodies && m.content.is_some() => {
                FeedEvent::Message(MessageEvent {
                    content: None,
                    ..m.clone()
                })
            }
            other => other.clone(),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feed.subscribers.fetch_sub(1, Ordering::AcqRel);
        if self.bodies {
            self.feed.bodies.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(content: &str) -> StoredMessage {
        StoredMessage {
            seq: 1,
            ts: 5,
            from: Arc::from("A"),
            to: Arc::from("B"),
            content: content.into(),
            reply: None,
        }
    }

    #[tokio::test]
    async fn events_reach_subscribers_and_bodies_only_those_who_asked() {
        let feed = Arc::new(Feed::new(2));
        feed.routed(&msg("unseen"), true, None);
        let mut meta = feed.subscribe(false).unwrap();
        let mut full = feed.subscribe(true).unwrap();
        assert_eq!(feed.subscribe(false).err(), Some(TooManySubscribers(2)));
        feed.routed(&msg("hello"), false, None);
        let FeedEvent::Message(m) = meta.next().await.unwrap() else {
            panic!()
        };
        assert_eq!((m.content, m.bytes, m.state.as_str()), (None, 5, "stored"));
        let FeedEvent::Message(m) = full.next().await.unwrap() else {
            panic!()
        };
        assert_eq!(m.content.as_deref(), Some("hello"));
        drop(full);
        assert_eq!(feed.subscribers(), 1);
        feed.routed(&msg("no body copied"), true, None);
        assert!(matches!(meta.next().await, Some(FeedEvent::Message(m)) if m.content.is_none()));
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_what_it_missed() {
        let feed = Arc::new(Feed::new(1));
        let mut sub = feed.subscribe(false).unwrap();
        for _ in 0..RING + 10 {
            feed.session("A", true);
        }
        assert_eq!(
            sub.next().await,
            Some(FeedEvent::Lagged(relay_proto::wire_feed::Lagged {
                missed: 10
            }))
        );
    }
}
