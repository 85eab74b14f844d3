//! Hub configuration: every limit and interval the hub enforces, with its default, in one
//! place. `docs/PROTOCOL.md` lists the same defaults; change both together.

use std::{path::PathBuf, time::Duration};

/// The smallest outbound queue (in frames) a connection may have: one committed batch
/// (up to `store::actor::MAX_BATCH` messages) may all be for one recipient, and the queue must
/// take it with room to spare, or a busy sender would close a healthy reader.
pub const MIN_OUTBOUND_FRAMES: usize = 2 * crate::store::actor::MAX_BATCH;

/// How hard the store pushes commits to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// SQLite `synchronous=NORMAL` in WAL mode: a killed hub process loses nothing it
    /// acknowledged; a power loss or kernel crash may lose the last transactions that were
    /// committed since the last WAL sync (acknowledged messages included).
    #[default]
    Normal,
    /// SQLite `synchronous=FULL`: every group commit is fsync'd before any `sent` ack, so even
    /// power loss loses nothing acknowledged. Costs one fsync per batch.
    Full,
}

/// Retention policy for stored messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages older than this are deleted, read or not.
    pub max_age: Duration,
    /// When the store holds more message bytes than this, the oldest *read* messages (and
    /// broadcasts) are deleted until it fits; unread direct mail is kept until `max_age`.
    pub max_bytes: u64,
    /// How often the background pruner runs.
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_bytes: 1 << 30,
            every: Duration::from_secs(600),
        }
    }
}

/// Everything [`crate::serve`] needs besides the listener and the shutdown signal.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Directory of the embedded store (`relay.db` lives here). Created if missing.
    pub data_dir: PathBuf,
    /// Durability of commits.
    pub sync: SyncMode,
    /// Keep the full-text search index (`search`; docs/STORAGE.md). Default on. Off drops
    /// the index at open and `search` answers `unavailable`; turning it on again rebuilds it
    /// from every stored message. Off exists to measure what the index costs
    /// (docs/BENCHMARKS.md).
    pub search_index: bool,
    /// Retention of stored messages.
    pub retention: Retention,
    /// Largest text frame the hub processes. Bigger frames (up to
    /// [`HubConfig::hard_frame_limit`]) are answered with an `error` and the connection stays
    /// open. Default 1 MiB.
    pub max_frame_bytes: usize,
    /// Largest frame the WebSocket layer will read at all; above it the connection is closed
    /// (1009, message too big) because the bytes cannot be skipped safely. Default 16 MiB.
    pub hard_frame_limit: usize,
    /// Largest `content` of a message, in bytes. Default 512 KiB (leaves room for escaping in
    /// the envelope that goes out, which must fit a client's 1 MiB frame).
    pub max_content_bytes: usize,
    /// Frames that may wait in one connection's outbound queue. Default 4096, at least
    /// [`MIN_OUTBOUND_FRAMES`].
    pub outbound_frames: usize,
    /// Most peers a `presence: "delta"` client's `registered` lists (the first, by id; it
    /// also gets `peersTotal` and reads the rest with `get_sessions`), and most changes a
    /// presence batch names (past it, the batch says `resync`). Default 256; not a command
    /// line flag. The Node relay's clients (`presence: "full"`) always get the whole list.
    pub delta_peers_page: usize,
    /// Bytes that may wait in one connection's outbound queue. Default 8 MiB. A connection
    /// whose queue overflows is closed with a reason (its mail stays stored); it never blocks
    /// other sessions.
    pub outbound_bytes: usize,
    /// Interval of WebSocket pings to every connection. Default 25 s. A connection that sends
    /// nothing at all (not even the pong) before the next ping is dropped.
    pub heartbeat_interval: Duration,
    /// Connections open at once that may use the hub (on a hub with a token: that have
    /// shown it); further ones are refused with 503. Default 10,000 + 240. A connection
    /// counts until its socket is closed.
    pub max_connections: usize,
    /// On a hub with a token: connections open at once that have not shown it yet (from
    /// accept until a valid Bearer header or `token` on register), counted apart from
    /// `max_connections` so they can never take token holders' places. Default 64; over it
    /// a connection is refused at accept with 503.
    pub max_unauthenticated: usize,
    /// On a hub with a token: how long a connection has from accept to show it; then it is
    /// closed (1008). Default 5 s.
    pub auth_timeout: Duration,
    /// How long a client has from accept to a completed WebSocket handshake (TLS included);
    /// then the connection is dropped. Default 10 s.
    pub handshake_timeout: Duration,
    /// Bytes of inbound frames the whole hub holds at once: being read, parsed, handled, or
    /// waiting in the store queue (see [`crate::budget`]). Default 256 MiB. A connection in
    /// the middle of a frame when it is spent is closed (1013, try again later).
    pub frame_budget_bytes: usize,
    /// Requests queued to the store actor before senders wait (backpressure). Default 8192.
    pub store_queue: usize,
    /// Largest page `get_history` / `receive` returns, in messages. Default 500.
    pub max_page: usize,
    /// Largest page in content bytes (the page stops early, `more`/`remaining` say so).
    /// Default 4 MiB.
    pub max_page_bytes: usize,
    /// Metadata a client may attach on `register`, serialized. Default 4 KiB.
    pub max_meta_bytes: usize,
    /// Sessions the hub remembers. Default 10,000. Beyond it the least recently seen offline
    /// sessions are forgotten (checked whenever a connection ends); their ownership and
    /// their mail stay. Online sessions are never forgotten, so the table holds at most this
    /// many plus the ones online.
    pub max_sessions: usize,
    /// How long shutdown waits for connections to close and the store to flush.
    pub shutdown_grace: Duration,
    /// Open connections per remote address (loopback exempt: every SSH-tunnelled machine
    /// arrives from 127.0.0.1). Default 256; over it the handshake is refused with 503.
    pub max_conns_per_addr: usize,
    /// Frames per second one connection may send, sustained. Default 100,000 — far above any
    /// agent (or the one-sender fan-out benchmark), low enough that one connection cannot
    /// monopolise the hub.
    pub frame_rate: f64,
    /// Frames one connection may send in a burst. Default 200,000. Over the rate a frame is
    /// answered `error {code: "rate_limited", retryAfterMs}` and not processed.
    pub frame_burst: f64,
    /// Registrations per second per remote address, sustained. Default 1,000.
    pub register_rate: f64,
    /// Registrations per address in a burst. Default 10,000, the default `max_sessions`: a
    /// whole roster may re-register at once (after a hub restart, every SSH-tunnelled
    /// machine arrives from 127.0.0.1), and only a loop past it is paced to `register_rate`.
    pub register_burst: f64,
    /// Shared secret every connection must present (`Authorization: Bearer` on the
    /// upgrade, or `token` on `register`). None = open hub (loopback only, by policy of the
    /// binary).
    pub token: Option<relay_proto::token::HubToken>,
    /// Serve `wss://` with this certificate and key.
    pub tls: Option<crate::tls::TlsFiles>,
    /// HTTP connections (console, `/metrics`, `/healthz`) open at once; one more is answered
    /// 503. They also count against `max_connections`. Default 64.
    pub max_http_connections: usize,
    /// Live operator feed subscribers at once (console pages, `claude-relay tail`); one more
    /// is refused with a reason. Default [`DEFAULT_FEED_SUBSCRIBERS`].
    pub max_feed_subscribers: usize,
    /// Largest HTTP request head (request line and headers); a bigger one is answered 431 and
    /// the connection closed. Default 16 KiB.
    pub http_max_header_bytes: usize,
    /// Largest HTTP request body (only the login form has one); a bigger one is answered 413.
    /// Default 4 KiB.
    pub http_max_body_bytes: usize,
    /// An HTTP connection with no traffic either way for this long is closed (event streams
    /// send a comment every 15 s, so they stay). Default 30 s.
    pub http_idle_timeout: Duration,
    /// Largest git bundle a task may carry, in bytes (uploaded in chunks, see
    /// `docs/HANDOFF.md`). Default 16 MiB.
    pub max_bundle_bytes: u64,
}

/// Default of [`HubConfig::max_feed_subscribers`].
pub const DEFAULT_FEED_SUBSCRIBERS: usize = 16;

impl HubConfig {
    /// Defaults with the store in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            sync: SyncMode::default(),
            search_index: true,
            retention: Retention::default(),
            max_frame_bytes: 1 << 20,
            hard_frame_limit: 16 << 20,
            max_content_bytes: 512 << 10,
            outbound_frames: 4096,
            outbound_bytes: 8 << 20,
            delta_peers_page: 256,
            heartbeat_interval: Duration::from_secs(25),
            max_connections: 10_240,
            max_unauthenticated: 64,
            auth_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            frame_budget_bytes: 256 << 20,
            store_queue: 8192,
            max_page: 500,
            max_page_bytes: 4 << 20,
            max_meta_bytes: 4 << 10,
            max_sessions: 10_000,
            shutdown_grace: Duration::from_secs(5),
            max_conns_per_addr: 256,
            frame_rate: 100_000.0,
            frame_burst: 200_000.0,
            register_rate: 1_000.0,
            register_burst: 10_000.0,
            token: None,
            tls: None,
            max_http_connections: 64,
            max_feed_subscribers: DEFAULT_FEED_SUBSCRIBERS,
            http_max_header_bytes: 16 << 10,
            http_max_body_bytes: 4 << 10,
            http_idle_timeout: Duration::from_secs(30),
            max_bundle_bytes: crate::tasks::DEFAULT_MAX_BUNDLE_BYTES,
        }
    }
}
