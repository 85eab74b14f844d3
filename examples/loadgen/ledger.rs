//! The books of a message scenario: what each sender has in flight, what each recipient
//! has seen from each sender, and the checks run on every delivery.
//!
//! "In flight" means sent and not yet received by every recipient it is meant for. Each
//! sender has `window` slots; message `c` uses slot `c % window`, which holds how many
//! recipients still have to receive it, and message `c + window` is written only once that
//! slot is empty — so a sender never has more than `window` messages in flight, and a stuck
//! message stalls its sender (and shows up as lost) instead of being hidden.
//!
//! Checks, per sender → recipient stream: every message arrives exactly once and in order
//! (a counter below the expected one is a duplicate or reordering, above it a gap), it
//! arrives only where it was addressed (body, `from` and `to` agree), and at the end nothing
//! the hub accepted is missing. Messages the hub refused (an `error` naming the message's
//! `rid`) are counted as rejected, not lost.
//!
//! Memory is fixed by the scenario: per sender `window` slots, per recipient two counters per
//! sender, one histogram; nothing grows with the number of messages.

use std::{
    rc::Rc,
    sync::OnceLock,
    time::{Duration, Instant},
};

use relay_proto::wire::{RequestId, ServerFrame, codes};
use tokio::sync::Notify;

use crate::{
    body::{self, Body},
    hist::Histogram,
    scan::{Incoming, classify},
    traffic::{Spec, Target},
};

/// Nanoseconds on the one monotonic clock every send and receive time is read from.
pub(crate) fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Where a run is: traffic before the window, the measured window, then draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Traffic flows; nothing is recorded.
    Warmup,
    /// Deliveries and latencies count.
    Measure,
    /// Writers stop; what is in flight may still arrive.
    Drain,
}

/// A sending client's side of the books.
pub(crate) struct Sender {
    /// `to` of its frames.
    to: String,
    /// The body's target: the recipient's index, or [`body::ALL`].
    target: u16,
    /// Recipients per message.
    fanout: u16,
    /// Next counter to write (= messages written so far).
    pub next: u64,
    /// Recipients still to receive the message in each slot (0 = free). Bound: `window`.
    slots: Vec<u16>,
    /// `sent` acks received.
    pub acks: u64,
    /// Acks that said `delivered: false`.
    undelivered: u64,
    /// Messages the hub refused (an `error` with the message's rid).
    pub rejected: u64,
    /// Back off until then (the hub said `rate_limited`).
    pause_until: Option<Instant>,
    /// Wakes the sender's writer when a slot frees up or the phase changes.
    pub wake: Rc<Notify>,
}

/// What one receiving client has seen from each sender.
#[derive(Default, Clone)]
struct Receiver {
    /// Next counter expected, per sender index.
    expected: Vec<u64>,
    /// Distinct messages received, per sender index.
    unique: Vec<u64>,
}

/// Counts over all clients.
#[derive(Default)]
pub(crate) struct Tally {
    /// Deliveries that passed the checks, over the whole run.
    pub deliveries: u64,
    /// Of those, inside the measured window.
    pub in_window: u64,
    /// Arrivals below the expected counter (duplicates or reordering).
    pub duplicated: u64,
    /// Arrivals at the wrong session, from the wrong sender, or not ours.
    pub misrouted: u64,
    /// Counters skipped (expected where the hub refused a message).
    pub gaps: u64,
    /// `error` frames not tied to a message, and unreadable frames.
    pub errors: u64,
    /// Connections that ended before the run did.
    pub closed: u64,
    /// The first error message the hub sent, for the report.
    pub first_error: Option<String>,
}

/// Everything the readers and writers of one run share.
pub(crate) struct State {
    /// Where the run is.
    pub phase: Phase,
    names: Vec<String>,
    /// Per client: its sending side, if it sends.
    pub senders: Vec<Option<Sender>>,
    receivers: Vec<Receiver>,
    window: usize,
    /// Messages in flight over all senders.
    pub in_flight: usize,
    /// One-way latencies of deliveries in the measured window.
    pub hist: Histogram,
    /// Counts.
    pub tally: Tally,
}

/// The end-of-run account over all senders.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Books {
    /// Messages written.
    pub sent: u64,
    /// `sent` acks received.
    pub acks: u64,
    /// Acks that said `delivered: false` (a live recipient should always take it).
    pub undelivered: u64,
    /// Messages the hub refused.
    pub rejected: u64,
    /// Messages the hub accepted that some recipient never got.
    pub lost: u64,
}

impl State {
    /// Books for `spec` with clients called `names`.
    pub(crate) fn new(spec: &Spec, names: Vec<String>) -> Self {
        let n = spec.clients;
        let mut senders: Vec<Option<Sender>> = (0..n).map(|_| None).collect();
        for &(i, target) in &spec.senders {
            senders[i] = Some(Sender {
                to: match target {
                    Target::One(r) => names[r].clone(),
                    Target::All => relay_proto::BROADCAST.to_string(),
                },
                target: match target {
                    Target::One(r) => r as u16,
                    Target::All => body::ALL,
                },
                fanout: spec.recipients(i, target).len() as u16,
                next: 0,
                slots: vec![0; spec.window],
                acks: 0,
                undelivered: 0,
                rejected: 0,
                pause_until: None,
                wake: Rc::new(Notify::new()),
            });
        }
        State {
            phase: Phase::Warmup,
            names,
            senders,
            receivers: vec![
                Receiver {
                    expected: vec![0; n],
                    unique: vec![0; n],
                };
                n
            ],
            window: spec.window,
            in_flight: 0,
            hist: Histogram::default(),
            tally: Tally::default(),
        }
    }

    /// What was sent, acked, refused, and lost: every message a sender wrote and the hub did
    /// not refuse must have reached each of its recipients once.
    pub(crate) fn books(&self, spec: &Spec) -> Books {
        let mut b = Books::default();
        for &(i, target) in &spec.senders {
            let s = self.senders[i].as_ref().expect("a sender");
            b.sent += s.next;
            b.acks += s.acks;
            b.undelivered += s.undelivered;
            b.rejected += s.rejected;
            for r in spec.recipients(i, target) {
                let got = self.receivers[r].unique[i];
                b.lost += (s.next - s.rejected).saturating_sub(got);
            }
        }
        b
    }

    /// Frees a slot of `sender`'s for message `counter` (one recipient got it, or the hub
    /// refused it when `all` is set).
    fn settle(&mut self, sender: usize, counter: u64, all: bool) {
        let window = self.window as u64;
        let Some(s) = self.senders.get_mut(sender).and_then(|s| s.as_mut()) else {
            return;
        };
        if counter >= s.next || s.next - counter > window {
            return; // Not in flight (a duplicate, or not ours).
        }
        let slot = &mut s.slots[(counter % window) as usize];
        if *slot == 0 {
            return;
        }
        *slot = if all { 0 } else { *slot - 1 };
        if *slot == 0 {
            self.in_flight -= 1;
            s.wake.notify_one();
        }
    }

    fn on_message(&mut self, me: usize, from: &str, to: &str, content: &[u8]) {
        let now = now_ns();
        let Some(b) = Body::decode(content) else {
            self.tally.misrouted += 1;
            return;
        };
        let s = b.sender as usize;
        let routed_right = s < self.names.len()
            && self.names[s] == from
            && s != me
            && if b.target == body::ALL {
                to == relay_proto::BROADCAST
            } else {
                b.target as usize == me && to == self.names[me]
            };
        if !routed_right {
            self.tally.misrouted += 1;
            return;
        }
        let r = &mut self.receivers[me];
        let expected = &mut r.expected[s];
        if b.counter < *expected {
            self.tally.duplicated += 1;
            return;
        }
        self.tally.gaps += b.counter - *expected;
        *expected = b.counter + 1;
        r.unique[s] += 1;
        self.tally.deliveries += 1;
        if self.phase == Phase::Measure {
            self.tally.in_window += 1;
            self.hist.record(now.saturating_sub(b.sent_ns));
        }
        self.settle(s, b.counter, false);
    }

    /// Accounts for one frame the hub sent to client `me`.
    pub(crate) fn on_frame(&mut self, me: usize, text: &str) {
        match classify(text) {
            Incoming::Message { from, to, content } => self.on_message(me, from, to, content),
            Incoming::Sent { delivered } => {
                if let Some(s) = self.senders[me].as_mut() {
                    s.acks += 1;
                    s.undelivered += !delivered as u64;
                }
            }
            Incoming::Other(f) => match *f {
                ServerFrame::Error(e) => {
                    let refused = match (&e.rid, self.senders[me].as_mut()) {
                        (Some(RequestId::Int(c)), Some(s)) if *c >= 0 => {
                            s.rejected += 1;
                            if e.code.as_deref() == Some(codes::RATE_LIMITED) {
                                let ms = e.retry_after_ms.unwrap_or(1).max(1);
                                s.pause_until = Some(Instant::now() + Duration::from_millis(ms));
                            }
                            Some(*c as u64)
                        }
                        _ => None,
                    };
                    match refused {
                        Some(c) => self.settle(me, c, true),
                        None => self.tally.errors += 1,
                    }
                    self.tally.first_error.get_or_insert(e.message);
                }
                ServerFrame::Message(_) => self.tally.misrouted += 1,
                _ => {} // Presence and the like.
            },
            Incoming::Garbage => self.tally.errors += 1,
        }
    }

    /// Frames for every free slot of `sender` (each stamped as it is built), or why none can
    /// be written now.
    pub(crate) fn next_batch(&mut self, sender: usize, body_len: usize) -> Batch {
        if self.phase == Phase::Drain {
            return Batch::Stop;
        }
        let window = self.window as u64;
        let s = self.senders[sender].as_mut().expect("a sender");
        if let Some(until) = s.pause_until {
            if Instant::now() < until {
                return Batch::PauseUntil(until);
            }
            s.pause_until = None;
        }
        let mut frames = Vec::new();
        while s.slots[(s.next % window) as usize] == 0 {
            let b = Body {
                sender: sender as u16,
                target: s.target,
                counter: s.next,
                sent_ns: now_ns(),
            };
            frames.push(body::message_frame(&s.to, &b, body_len));
            s.slots[(s.next % window) as usize] = s.fanout;
            s.next += 1;
            self.in_flight += 1;
        }
        if frames.is_empty() {
            Batch::Wait
        } else {
            Batch::Ready(frames)
        }
    }
}

/// What a writer does next.
pub(crate) enum Batch {
    /// Write these frames, then flush once.
    Ready(Vec<String>),
    /// Every slot is in flight: wait for one to be freed.
    Wait,
    /// The hub asked us to slow down.
    PauseUntil(Instant),
    /// The measured window is over.
    Stop,
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_proto::wire::Envelope;

    fn state(spec: &Spec) -> State {
        State::new(spec, (0..spec.clients).map(|i| format!("c{i}")).collect())
    }

    /// Writes whatever sender `i` may write now; returns the frames' contents.
    fn write(st: &mut State, i: usize) -> Vec<String> {
        match st.next_batch(i, 100) {
            Batch::Ready(frames) => frames
                .iter()
                .map(|f| {
                    let v: serde_json::Value = serde_json::from_str(f).unwrap();
                    v["content"].as_str().unwrap().to_string()
                })
                .collect(),
            Batch::Wait => vec![],
            Batch::PauseUntil(_) => panic!("paused"),
            Batch::Stop => panic!("stopped"),
        }
    }

    /// What the hub would push to a recipient.
    fn pushed(from: &str, to: &str, content: &str) -> String {
        serde_json::to_string(&ServerFrame::Message(Envelope {
            id: "e-1".into(),
            from: from.into(),
            to: to.into(),
            content: content.into(),
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            seq: 1,
            task: None,
            reply_to: None,
            thread: None,
        }))
        .unwrap()
    }

    #[test]
    fn window_bounds_what_is_in_flight_and_deliveries_free_it() {
        let spec = Spec::ring("t", 3, 2);
        let mut st = state(&spec);
        let first = write(&mut st, 0);
        assert_eq!(first.len(), 2);
        assert_eq!(st.in_flight, 2);
        assert!(write(&mut st, 0).is_empty(), "window of 2 is full");
        st.on_frame(1, &pushed("c0", "c1", &first[0]));
        assert_eq!((st.tally.deliveries, st.in_flight), (1, 1));
        let third = write(&mut st, 0);
        assert_eq!(third.len(), 1);
        assert_eq!(Body::decode(third[0].as_bytes()).unwrap().counter, 2);
        // The same message again is a duplicate and frees nothing.
        st.on_frame(1, &pushed("c0", "c1", &first[0]));
        assert_eq!((st.tally.duplicated, st.in_flight), (1, 2));
        st.on_frame(1, &pushed("c0", "c1", &first[1]));
        let books = st.books(&spec);
        assert_eq!((books.sent, books.lost), (3, 1), "message 2 never arrived");
        st.on_frame(1, &pushed("c0", "c1", &third[0]));
        assert_eq!(st.books(&spec).lost, 0);
        assert_eq!(st.tally.gaps, 0);
    }

    #[test]
    fn wrong_recipient_sender_or_body_is_misrouted() {
        let spec = Spec::ring("t", 3, 4);
        let mut st = state(&spec);
        let m = write(&mut st, 0);
        st.on_frame(2, &pushed("c0", "c2", &m[0])); // body says c1
        st.on_frame(1, &pushed("c2", "c1", &m[0])); // body says from c0
        st.on_frame(1, &pushed("c0", "all", &m[0])); // body says direct
        st.on_frame(1, &pushed("c0", "c1", "hello")); // not one of ours
        assert_eq!(st.tally.misrouted, 4);
        assert_eq!(st.tally.deliveries, 0);
        assert_eq!(st.in_flight, 4);
    }

    #[test]
    fn a_refused_message_frees_its_slot_and_is_not_lost() {
        let spec = Spec::ring("t", 2, 2);
        let mut st = state(&spec);
        let m = write(&mut st, 0);
        st.on_frame(
            0,
            r#"{"type":"error","message":"rate limited","code":"rate_limited","retryAfterMs":5,"rid":0}"#,
        );
        assert_eq!(st.in_flight, 1);
        assert!(matches!(st.next_batch(0, 100), Batch::PauseUntil(_)));
        st.on_frame(1, &pushed("c0", "c1", &m[1]));
        assert_eq!(st.tally.gaps, 1, "message 0 was skipped");
        let books = st.books(&spec);
        assert_eq!((books.rejected, books.lost), (1, 0));
    }

    #[test]
    fn a_broadcast_is_in_flight_until_every_recipient_has_it() {
        let spec = Spec::new("t", 3, vec![(0, Target::All)], 1);
        let mut st = state(&spec);
        let m = write(&mut st, 0);
        assert_eq!(m.len(), 1);
        st.on_frame(1, &pushed("c0", "all", &m[0]));
        assert!(write(&mut st, 0).is_empty(), "c2 has not got it yet");
        st.on_frame(2, &pushed("c0", "all", &m[0]));
        assert_eq!(write(&mut st, 0).len(), 1);
        st.on_frame(0, &pushed("c0", "all", &m[0]));
        assert_eq!(
            st.tally.misrouted, 1,
            "the hub must not echo a broadcast to its sender"
        );
        st.on_frame(
            0,
            r#"{"type":"sent","id":"e-1","to":"all","delivered":true,"seq":1}"#,
        );
        let books = st.books(&spec);
        assert_eq!((books.sent, books.acks, books.lost), (2, 1, 2));
    }

    #[test]
    fn latency_is_recorded_only_in_the_measured_window() {
        let spec = Spec::ring("t", 2, 1);
        let mut st = state(&spec);
        let m = write(&mut st, 0);
        st.on_frame(1, &pushed("c0", "c1", &m[0]));
        assert_eq!(st.hist.count(), 0);
        st.phase = Phase::Measure;
        let m = write(&mut st, 0);
        st.on_frame(1, &pushed("c0", "c1", &m[0]));
        assert_eq!((st.hist.count(), st.tally.in_window), (1, 1));
        st.phase = Phase::Drain;
        assert!(matches!(st.next_batch(0, 100), Batch::Stop));
    }
}
