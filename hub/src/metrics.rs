//! The hub's Prometheus metrics (`GET /metrics`, see docs/CONSOLE.md "/metrics"), through the
//! official `prometheus-client` crate.
//!
//! Cost on the hot path: every per-frame counter is a [`Counter`] handle created once at
//! start — an `Arc<AtomicU64>` — so counting a frame is one relaxed `fetch_add`, no lock, no
//! map lookup, no allocation. Labelled families are only looked up on rare paths (a refusal,
//! a scrape). The two histograms take one uncontended lock per store *commit* (a batch of up
//! to 512 messages, on the store thread), never per frame. Gauges that the hub already knows
//! (sessions online) are read at scrape time instead of being kept in step.
//!
//! Tasks by state are kept in step by the task handlers ([`Metrics::task_moved`]) from a
//! count the store made at start ([`Metrics::set_tasks`]): tasks are only ever created and
//! moved by the hub, never deleted, so the gauge stays exact without a query per scrape.
//!
//! Refusals are counted where they are logged (see [`crate::refusals`]).
//!
//! Frames out are counted by their `type`, read from the first bytes of the serialized frame
//! (`{"type":"…"`): every frame the hub writes starts that way (serde writes the tag of an
//! internally tagged enum first, and `frames.rs` writes it first by hand), so one short prefix
//! match replaces a hook at every place that builds a frame. An `error` or `register_rejected`
//! frame is also counted as a refused frame, by its `code`.

use std::time::Instant;

use std::fmt;

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use relay_proto::{wire::ClientFrame, wire_tasks::TaskState};

use crate::refusals::ConnRefusal;

/// Frame types the hub writes, in the order of the `frames_out` handles; anything else is
/// counted as `other`.
const OUT_TYPES: &[&str] = &[
    "message",
    "sent",
    "registered",
    "register_rejected",
    "peer_joined",
    "peer_left",
    "presence",
    "history",
    "peers",
    "sessions",
    "pong",
    "inbox",
    "marked",
    "status",
    "released",
    "watching",
    "forgotten",
    "mail",
    "error",
    "subscribed",
    "event",
    "task",
    "tasks",
    "task_refused",
    "blob",
    "bundle",
    "task_reserved",
    "approval",
    "approval_verdict",
    "found",
    "other",
];

/// One label, both parts static: no allocation per use.
type Label = [(&'static str, &'static str); 1];
/// One label whose value is decided at run time (refusal reasons).
type DynLabel = [(&'static str, String); 1];

/// Every metric of one hub, and the registry that renders them.
pub(crate) struct Metrics {
    registry: Registry,
    started: Instant,
    frames_in: Vec<Counter>,
    frames_out: Vec<Counter>,
    routed_direct: Counter,
    routed_broadcast: Counter,
    delivered_live: Counter,
    delivered_stored: Counter,
    commit_seconds: Histogram,
    batch_size: Histogram,
    outbox_overflows: Counter,
    frames_refused: Family<DynLabel, Counter>,
    conns_refused: Family<Label, Counter>,
    /// Open WebSocket connections (after the upgrade).
    pub websockets: Gauge,
    /// Open HTTP connections.
    pub http_connections: Gauge,
    sessions_online: Gauge,
    feed_subscribers: Gauge,
    /// Tasks by state, in [`TaskState::ALL`] order.
    tasks: Vec<Gauge>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric (all at zero).
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("relay");
        let frames_in_family = Family::<Label, Counter>::default();
        registry.register(
            "frames_in",
            "Client frames the hub parsed, by type",
            frames_in_family.clone(),
        );
        let frames_in = ClientFrame::TYPES
            .iter()
            .map(|t| frames_in_family.get_or_create(&[("type", *t)]).clone())
            .collect();
        let frames_out_family = Family::<Label, Counter>::default();
        registry.register(
            "frames_out",
            "Frames the hub wrote to WebSocket clients, by type",
            frames_out_family.clone(),
        );
        let frames_out = OUT_TYPES
            .iter()
            .map(|t| frames_out_family.get_or_create(&[("type", *t)]).clone())
            .collect();
        let routed = Family::<Label, Counter>::default();
        registry.register(
            "messages_routed",
            "Messages stored and routed, by kind (direct or broadcast)",
            routed.clone(),
        );
        let routed_direct = routed.get_or_create(&[("kind", "direct")]).clone();
        let routed_broadcast = routed.get_or_create(&[("kind", "broadcast")]).clone();
        let deliveries = Family::<Label, Counter>::default();
        registry.register(
            "deliveries",
            "Deliveries of routed messages: live (a connection of the recipient took it; one \
             per recipient of a broadcast) or stored (a direct message waiting for its \
             recipient)",
            deliveries.clone(),
        );
        let delivered_live = deliveries.get_or_create(&[("outcome", "live")]).clone();
        let delivered_stored = deliveries.get_or_create(&[("outcome", "stored")]).clone();
        // 50 µs .. ~1.6 s: a group commit is sub-millisecond in NORMAL mode, an fsync in FULL.
        let commit_seconds = Histogram::new(exponential_buckets(50e-6, 2.0, 16));
        registry.register(
            "store_commit_seconds",
            "Time to store one batch of messages (one transaction)",
            commit_seconds.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "store_batch_size",
            "Messages per store commit (group commit)",
            batch_size.clone(),
        );
        let outbox_overflows = Counter::default();
        registry.register(
            "outbox_overflows",
            "Connections closed because their outbound queue overflowed (a client too slow to \
             read; its mail stays stored)",
            outbox_overflows.clone(),
        );
        let frames_refused = Family::<DynLabel, Counter>::default();
        registry.register(
            "frames_refused",
            "Frames answered with an error or register_rejected, by its code",
            frames_refused.clone(),
        );
        let conns_refused = Family::<Label, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections refused, or cut off by one of the hub's bounds, by reason (a wrong \
             token on an HTTP request counts as unauthorized)",
            conns_refused.clone(),
        );
        for reason in ConnRefusal::ALL {
            drop(conns_refused.get_or_create(&[("reason", reason.label())]));
        }
        let conns = Family::<Label, Gauge>::default();
        registry.register(
            "connections",
            "Open connections, by kind (websocket or http)",
            conns.clone(),
        );
        let websockets = conns.get_or_create(&[("kind", "websocket")]).clone();
        let http_connections = conns.get_or_create(&[("kind", "http")]).clone();
        let sessions_online = Gauge::default();
        registry.register(
            "sessions_online",
            "Sessions registered on a live connection",
            sessions_online.clone(),
        );
        let feed_subscribers = Gauge::default();
        registry.register(
            "feed_subscribers",
            "Live operator feed subscribers (console pages, claude-relay tail)",
            feed_subscribers.clone(),
        );
        let tasks_family = Family::<Label, Gauge>::default();
        registry.register("tasks", "Tasks, by state", tasks_family.clone());
        let tasks = TaskState::ALL
            .iter()
            .map(|s| tasks_family.get_or_create(&[("state", s.as_str())]).clone())
            .collect();
        let build = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        registry.register("build_info", "The hub's version (always 1)", build.clone());
        build.get_or_create(&[("version", crate::VERSION)]).set(1);
        Self {
            registry,
            started: Instant::now(),
            frames_in,
            frames_out,
            routed_direct,
            routed_broadcast,
            delivered_live,
            delivered_stored,
            commit_seconds,
            batch_size,
            outbox_overflows,
            frames_refused,
            conns_refused,
            websockets,
            http_connections,
            sessions_online,
            feed_subscribers,
            tasks,
        }
    }

    /// Seconds since the hub started.
    pub(crate) fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// A client frame was parsed. The index is the frame's position in [`ClientFrame::TYPES`]
    /// (checked by a test).
    pub(crate) fn frame_in(&self, frame: &ClientFrame) {
        let i = match frame {
            ClientFrame::Register(_) => 0,
            ClientFrame::Message(_) => 1,
            ClientFrame::GetHistory(_) => 2,
            ClientFrame::GetPeers(_) => 3,
            ClientFrame::GetSessions(_) => 4,
            ClientFrame::Ping(_) => 5,
            ClientFrame::Receive(_) => 6,
            ClientFrame::MarkRead(_) => 7,
            ClientFrame::GetStatus(_) => 8,
            ClientFrame::Release(_) => 9,
            ClientFrame::Watch(_) => 10,
            ClientFrame::Subscribe(_) => 11,
            ClientFrame::Forget(_) => 12,
            ClientFrame::TaskCreate(_) => 13,
            ClientFrame::TaskAct(_) => 14,
            ClientFrame::TaskList(_) => 15,
            ClientFrame::TaskGet(_) => 16,
            ClientFrame::BlobPut(_) => 17,
            ClientFrame::TaskBundle(_) => 18,
            ClientFrame::TaskReserve(_) => 19,
            ClientFrame::ApprovalFile(_) => 20,
            ClientFrame::ApprovalClose(_) => 21,
            ClientFrame::Search(_) => 22,
        };
        self.frames_in[i].inc();
    }

    /// A frame was written to a WebSocket client.
    pub(crate) fn frame_out(&self, frame: &str) {
        let ty = frame_type(frame).unwrap_or("other");
        let i = OUT_TYPES
            .iter()
            .position(|t| *t == ty)
            .unwrap_or(OUT_TYPES.len() - 1);
        self.frames_out[i].inc();
        if matches!(ty, "error" | "register_rejected") {
            self.frame_refused(error_code(frame).unwrap_or("none"));
        }
    }

    /// A frame was refused with `code` (an error frame's code, or a reason of
    /// [`crate::refusals::Refusals::frame`]).
    pub(crate) fn frame_refused(&self, code: &str) {
        // The code is ours (`relay_proto::wire::codes`), but bound the label anyway.
        let code = if !code.is_empty()
            && code.len() <= 32
            && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            code
        } else {
            "other"
        };
        self.frames_refused
            .get_or_create(&[("reason", code.to_string())])
            .inc();
    }

    /// A message was routed: `recipients` is `None` for a direct message (then `live` says
    /// whether its recipient's connection took it) and the number of live sessions that took
    /// a broadcast.
    pub(crate) fn routed(&self, live: bool, recipients: Option<u32>) {
        match recipients {
            None => {
                self.routed_direct.inc();
                if live {
                    self.delivered_live.inc();
                } else {
                    self.delivered_stored.inc();
                }
            }
            Some(n) => {
                self.routed_broadcast.inc();
                self.delivered_live.inc_by(u64::from(n));
            }
        }
    }

    /// The store committed a batch of `messages` in `seconds`.
    pub(crate) fn committed(&self, seconds: f64, messages: usize) {
        self.commit_seconds.observe(seconds);
        self.batch_size.observe(messages as f64);
    }

    /// A connection's outbound queue overflowed.
    pub(crate) fn outbox_overflow(&self) {
        self.outbox_overflows.inc();
    }

    /// A connection was refused.
    pub(crate) fn connection_refused(&self, why: ConnRefusal) {
        self.conns_refused
            .get_or_create(&[("reason", why.label())])
            .inc();
    }

    /// Renders every metric in the text exposition format (OpenMetrics), reading the values
    /// that are kept elsewhere first.
    pub(crate) fn render(&self, sessions_online: usize, feed_subscribers: usize) -> String {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.sessions_online.set(gauge(sessions_online));
        self.feed_subscribers.set(gauge(feed_subscribers));
        let mut out = String::with_capacity(8 << 10);
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Sets the number of tasks in `state` (from the store's count at start).
    pub(crate) fn set_tasks(&self, state: TaskState, n: u64) {
        self.tasks[state_index(state)].set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A task was created (`was` None) or moved from `was` to `now`.
    pub(crate) fn task_moved(&self, was: Option<TaskState>, now: TaskState) {
        if let Some(was) = was {
            self.tasks[state_index(was)].dec();
        }
        self.tasks[state_index(now)].inc();
    }
}

fn state_index(state: TaskState) -> usize {
    TaskState::ALL
        .iter()
        .position(|s| *s == state)
        .expect("ALL holds every state")
}

/// The `type` of a serialized frame, if it starts `{"type":"…"`.
fn frame_type(frame: &str) -> Option<&str> {
    let rest = frame.strip_prefix(r#"{"type":""#)?;
    rest.split_once('"').map(|(t, _)| t)
}

/// The `code` of a serialized `error` / `register_rejected` frame. Inside a JSON string a
/// quote is always escaped, so `"code":"` can only be the field itself.
fn error_code(frame: &str) -> Option<&str> {
    let at = frame.find(r#""code":""#)? + r#""code":""#.len();
    frame[at..].split_once('"').map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_types_and_codes_are_read_from_the_prefix() {
        assert_eq!(frame_type(r#"{"type":"sent","id":"x"}"#), Some("sent"));
        assert_eq!(frame_type(r#"{"id":"x"}"#), None);
        let err = r#"{"type":"error","message":"say \"code\":\"x\"","code":"too_large"}"#;
        assert_eq!(error_code(err), Some("too_large"));
    }

    #[test]
    fn frames_in_are_counted_under_their_wire_type() {
        for ty in ClientFrame::TYPES {
            let m = Metrics::new();
            let mut fields = match *ty {
                "message" => serde_json::json!({"content": "x"}),
                "mark_read" => serde_json::json!({"seqs": []}),
                "release" => serde_json::json!({"clientId": "A", "ownerSecret": "s"}),
                "watch" | "forget" => serde_json::json!({"clientId": "A"}),
                "task_create" => serde_json::json!({"to": "B", "title": "t", "brief": "b"}),
                "task_act" => serde_json::json!({"id": "T-1", "action": "claim"}),
                "task_get" | "task_bundle" => serde_json::json!({"id": "T-1"}),
                "blob_put" => serde_json::json!({"offset": 0, "data": ""}),
                "approval_file" => serde_json::json!({"clientId": "A", "tool": "Bash"}),
                "approval_close" => serde_json::json!({"id": "A-1"}),
                "search" => serde_json::json!({"query": "x"}),
                _ => serde_json::json!({}),
            };
            fields["type"] = serde_json::json!(ty);
            let frame: ClientFrame =
                serde_json::from_value(fields).unwrap_or_else(|e| panic!("{ty}: {e}"));
            m.frame_in(&frame);
            let line = format!(r#"relay_frames_in_total{{type="{ty}"}} 1"#);
            assert!(m.render(0, 0).lines().any(|l| l == line), "{ty}");
        }
    }

    #[test]
    fn counters_show_up_in_the_exposition() {
        let m = Metrics::new();
        m.frame_out(r#"{"type":"sent","id":"x"}"#);
        m.frame_out(r#"{"type":"error","message":"m","code":"rate_limited"}"#);
        m.frame_out("not json");
        m.routed(true, None);
        m.routed(false, Some(3));
        m.committed(0.001, 4);
        m.connection_refused(ConnRefusal::PerAddress);
        let text = m.render(2, 0);
        for line in [
            r#"relay_frames_out_total{type="sent"} 1"#,
            r#"relay_frames_out_total{type="other"} 1"#,
            r#"relay_frames_refused_total{reason="rate_limited"} 1"#,
            r#"relay_messages_routed_total{kind="direct"} 1"#,
            r#"relay_deliveries_total{outcome="live"} 4"#,
            r#"relay_deliveries_total{outcome="stored"} 0"#,
            r#"relay_store_batch_size_count 1"#,
            r#"relay_connections_refused_total{reason="per_address"} 1"#,
            r#"relay_sessions_online 2"#,
            r#"relay_tasks{state="input-required"} 0"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }
}
