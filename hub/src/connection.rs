//! One client connection: the WebSocket handshake, then a reader (this task) and a writer
//! (a spawned task) joined by the connection's bounded [`Outbox`].
//!
//! The reader parses each frame and hands it to [`ConnSession`]; nothing it does can block
//! another connection. The writer drains the outbox to the socket in batches (many queued
//! frames, one flush), sends heartbeats, and sends the close frame when the connection must
//! end. Either side ending closes the outbox, which ends the other.
//!
//! Bounds on a connection's life: every write of the writer fails once the socket has taken
//! no byte for a heartbeat interval ([`crate::progress`]), so a client that stops reading is
//! closed; a writer still busy when the reader has ended is aborted after [`CLOSE_TIMEOUT`];
//! and the connection keeps its place under the caps until both halves of its socket are
//! gone. On a hub with a token, a connection that has not shown it is closed at the auth
//! timeout. Every read is charged to the hub's frame budget ([`crate::budget`]). Every
//! refusal is logged and counted through [`crate::refusals`].
//!
//! The same port serves HTTP: [`crate::http::route`] reads the request head first, serves
//! anything that is not a WebSocket upgrade itself — inside this same lifecycle: the cap
//! place, the deadlines, the budget and the refusal log apply to it too — and hands an
//! upgrade back with the head replayed in front of the stream.

use relay_proto::token::HubToken;
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use relay_proto::wire::{ClientFrame, codes};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::Notify,
    sync::watch,
    task::JoinSet,
    time::Instant,
};
use tokio_tungstenite::{
    WebSocketStream, accept_hdr_async_with_config,
    tungstenite::{
        Bytes, Message,
        error::{CapacityError, Error as WsError},
        handshake::server::{ErrorResponse, Request, Response},
        http::{
            StatusCode,
            header::{AUTHORIZATION, HOST, ORIGIN},
        },
        protocol::{CloseFrame, WebSocketConfig},
    },
};
use tracing::{debug, warn};

use crate::{
    HubState,
    auth::{bearer, token_ok},
    batching::{Batching, Texts},
    budget::{Charge, Meter, Metered, OverBudget, READ_CHUNK},
    dispatch::{ConnSession, Later},
    limits::{Slot, TokenBucket, TooManyConnections},
    operator::{self, Claim, Key},
    outbound::{Outbox, OutboxReceiver, outbox},
    parse::parse,
    presence::{Beat, Heartbeat},
    progress::{Progress, Stalled, Watched, bounded},
    refusals::ConnRefusal,
};

/// After asking for a close, how long the hub waits for the close frame to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The writer flushes at least this often while draining a long queue.
const FLUSH_BYTES: usize = 256 << 10;
/// A connection's write buffer ([`crate::batching`]): a flush's frames are collected there
/// and leave in one `sendto` (a busy connection's flush carries a few KiB,
/// docs/BENCHMARKS.md); once written, it is freed. Text frames are framed there from their
/// shared bytes, never copied by tungstenite, and one longer than this goes from its bytes
/// straight to the socket; tungstenite writes only the control frames, straight through
/// (`write_buffer_size(0)`: its own buffer drains without ever shrinking, so it kept the
/// capacity of the largest burst for the connection's whole life — up to ~16 KiB per
/// connection after a registration storm of the Node relay's clients, issue 16). So the
/// connection holds at most this here, whatever was sent, plus in tungstenite's buffer a
/// control frame the socket refused (bound: [`TUNGSTENITE_BUFFER`]). 16 KiB, not 8: a flush
/// of held presence (64 KiB, `router.rs`) leaves in half as many `sendto`s — 1,000
/// Node-protocol clients registering cost ~12 % less CPU, the idle connections kept the
/// same afterwards, and 32 KiB bought no more (docs/BENCHMARKS.md).
const WRITE_BUFFER: usize = 16 << 10;
/// tungstenite's write buffer's hard bound (a write past it fails the connection), for what
/// it holds: control frames (a ping, a pong or a close: at most 125 bytes of payload each)
/// the socket has not taken yet.
const TUNGSTENITE_BUFFER: usize = 4 << 10;
// A control frame tungstenite writes must fit the batch buffer whole, so that no text frame
// can be put in the middle of it (`crate::batching`, `poll_write`).
const _: () = assert!(TUNGSTENITE_BUFFER < WRITE_BUFFER);

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;

/// Serves one accepted TCP connection until it closes or the hub shuts down: per-address
/// cap, TLS (when configured) and the WebSocket handshake, all within
/// `handshake_timeout` (and, on a hub with a token, within its auth timeout), then the
/// session. `slot` is the connection's place under the hub's caps: it is given back only
/// after the socket is closed, so a connection counts for as long as it holds one.
#[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice (issue 16)
pub(crate) fn serve(
    stream: TcpStream,
    addr: SocketAddr,
    conn_id: u64,
    hub: Arc<HubState>,
    shutdown: watch::Receiver<bool>,
    mut slot: Slot,
) -> impl Future<Output = ()> + Send {
    // Not an `async fn`, whose arguments the future would keep twice (as arguments and as
    // the body's locals) for the connection's whole life (issue 16, docs/BENCHMARKS.md).
    async move {
        let _ = stream.set_nodelay(true);
        let admitted = hub.limits.open(addr.ip());
        let accepted = Instant::now();
        // On a hub with a token the whole way from accept to a valid token has one deadline.
        let auth_deadline = (!slot.is_authenticated()).then(|| accepted + hub.config.auth_timeout);
        let handshake_deadline = accepted + hub.config.handshake_timeout;
        let deadline = handshake_deadline.min(auth_deadline.unwrap_or(handshake_deadline));
        let progress = Progress::new();
        let meter = Meter::new(hub.budget.clone());
        let stream = Metered::new(Watched::new(stream, progress.clone()), meter.clone());
        let conn = Conn {
            addr,
            id: conn_id,
            refused: admitted.err(),
            deadline,
            auth_deadline,
            progress,
            meter,
        };
        // Each state machine is boxed on its own: an async fn's size is that of its largest
        // state, and the TLS branch and the handshakes would otherwise make every plain idle
        // connection carry ~12 KiB of dead weight for its whole life. The TLS branch too: held
        // here, the handshake's result (1.2 KiB) made this task 1.7 KiB for every connection,
        // TLS or not (issue 16; `-Zprint-type-sizes`, docs/BENCHMARKS.md).
        match hub.tls.clone() {
            Some(acceptor) => {
                Box::pin(serve_tls(acceptor, stream, conn, &hub, shutdown, &mut slot)).await
            }
            None => Box::pin(run(stream, conn, &hub, shutdown, &mut slot)).await,
        }
        if admitted.is_ok() {
            hub.limits.close(addr.ip());
        }
        // The socket is closed by now (`run` returns only after its writer has ended).
        drop(slot);
    }
}

/// The TLS handshake by `conn.deadline`, then the session over TLS. The TLS stream is moved
/// into the session's own boxed future before it is awaited, so that this one does not
/// keep a second copy of its room for the connection's life.
async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: Metered<Watched<TcpStream>>,
    conn: Conn,
    hub: &Arc<HubState>,
    shutdown: watch::Receiver<bool>,
    slot: &mut Slot,
) {
    let addr = conn.addr;
    let session = {
        let tls =
            match tokio::time::timeout_at(conn.deadline, Box::pin(acceptor.accept(stream))).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    return hub.refusals.connection(
                        addr,
                        ConnRefusal::Tls,
                        &format!("TLS handshake failed: {e}"),
                    );
                }
                Err(_) => {
                    return hub.refusals.connection(
                        addr,
                        ConnRefusal::HandshakeTimeout,
                        "TLS handshake timed out",
                    );
                }
            };
        Box::pin(run(tls, conn, hub, shutdown, slot))
    };
    session.await;
}

/// What the upgrade request said about authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    /// A valid `Authorization: Bearer` header (or no token is configured).
    Authorized,
    /// No header: the client may still present the token on `register`.
    Anonymous,
}

/// One connection's particulars, handed from [`serve`] to [`run`] (and to the HTTP side).
pub(crate) struct Conn {
    pub(crate) addr: SocketAddr,
    id: u64,
    /// Over the per-address cap: the handshake (or HTTP request) is answered 503.
    pub(crate) refused: Option<TooManyConnections>,
    /// The handshake (or the first request head) must be done by then.
    pub(crate) deadline: Instant,
    /// On a hub with a token: the token must have been shown by then.
    pub(crate) auth_deadline: Option<Instant>,
    /// When the socket last took bytes (bounds every write; see [`crate::progress`]).
    progress: Arc<Progress>,
    /// The connection's account with the frame budget (see [`crate::budget`]).
    pub(crate) meter: Arc<Meter>,
}

/// After accept (and TLS): plain HTTP is served by [`crate::http::route`]; an upgrade goes
/// through the WebSocket handshake ([`upgrade`]), then the session is read ([`Reader`]) until
/// it ends, and finished.
///
/// Every idle connection keeps this future for its whole life, so what it holds is kept
/// small (issue 16, docs/BENCHMARKS.md): not an `async fn`, whose arguments the future would
/// keep twice (as arguments and as the body's locals) and for the connection's whole life,
/// and every state that is not the session's idle read is boxed on its own.
#[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice (issue 16)
fn run<'a, S>(
    stream: S,
    conn: Conn,
    hub: &'a Arc<HubState>,
    mut shutdown: watch::Receiver<bool>,
    slot: &'a mut Slot,
) -> impl Future<Output = ()> + Send + 'a
where
    S: AsyncRead + AsyncWrite + crate::batching::Cork + Unpin + Send + 'static,
{
    // What the future captures it keeps to its end: the socket and the connection's
    // particulars come in one box, which the session's start takes apart (and frees).
    let start = Box::new((stream, conn));
    async move {
        let mut reader = {
            // Moved out of the capture first: a box taken apart is freed where it goes out of
            // scope, and the capture's scope is the whole connection.
            let start = start;
            let (stream, conn) = *start;
            // Plain HTTP (console, /metrics, /healthz) is served there; upgrades come back.
            // Boxed, so that the HTTP server's state machine is not carried by every
            // WebSocket's future.
            let Some(stream) = Box::pin(crate::http::route(
                stream,
                &conn,
                hub,
                slot,
                shutdown.clone(),
            ))
            .await
            else {
                return;
            };
            let stream = Batching::new(stream, WRITE_BUFFER);
            let texts = stream.texts();
            let Some(upgraded) = Box::pin(upgrade(stream, &conn, hub, slot)).await else {
                return;
            };
            // The handshake's bytes are done with.
            drop(conn.meter.take());
            hub.metrics.websockets.inc();
            Reader::start(upgraded, conn, hub, texts)
        };
        reader.read(hub, &mut shutdown, slot).await;
        // Boxed: it moves the reader (twice: an argument and a local) and waits on a timer.
        Box::pin(reader.finish(hub)).await;
        hub.metrics.websockets.dec();
    }
}

/// A completed WebSocket handshake and what its request said.
struct Upgraded<S> {
    ws: WebSocketStream<S>,
    upgrade: Upgrade,
    operator: Result<operator::Operator, operator::Denied>,
}

/// The WebSocket handshake, by `conn.deadline`: refused (503) over the per-address cap; on a
/// hub with a token, a bad `Authorization: Bearer` is refused (401) and none moves the
/// connection to the unauthenticated ones (503 when they are full). Decides whether the
/// connection is the hub's operator.
async fn upgrade<S>(
    stream: S,
    conn: &Conn,
    hub: &Arc<HubState>,
    slot: &mut Slot,
) -> Option<Upgraded<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = conn.addr;
    let ws_config = WebSocketConfig::default()
        // Small eager read buffer: 10,000 idle connections must stay cheap (and reads come
        // in chunks of at most this: see `budget::READ_CHUNK`).
        .read_buffer_size(READ_CHUNK)
        // Every frame goes straight to the connection's own buffer (see `WRITE_BUFFER`).
        .write_buffer_size(0)
        .max_write_buffer_size(TUNGSTENITE_BUFFER)
        .max_message_size(Some(hub.config.hard_frame_limit))
        .max_frame_size(Some(hub.config.hard_frame_limit));
    let mut upgrade = Upgrade::Authorized;
    let mut is_operator = Err(operator::Denied::NeedToken);
    // The signature is tungstenite's handshake callback.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if let Some(TooManyConnections { limit }) = conn.refused {
            let why = format!("too many connections from your address (limit {limit})");
            hub.refusals.connection(addr, ConnRefusal::PerAddress, &why);
            return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, why));
        }
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        let authorization = header(AUTHORIZATION);
        if let Some(expected) = &hub.config.token {
            match authorization {
                None => {
                    if let Err(full) = slot.upgraded_anonymous() {
                        hub.refusals.connection(
                            addr,
                            ConnRefusal::Unauthenticated,
                            &full.to_string(),
                        );
                        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, full.to_string()));
                    }
                    upgrade = Upgrade::Anonymous;
                }
                Some(h) => match bearer(h) {
                    Some(t) if token_ok(expected.expose(), t) => {
                        // Already counted under max_connections since accept.
                        let _ = slot.authenticate();
                    }
                    _ => {
                        let why = "invalid hub token in the Authorization header";
                        hub.refusals
                            .connection(addr, ConnRefusal::Unauthorized, why);
                        return Err(refuse(StatusCode::UNAUTHORIZED, why.into()));
                    }
                },
            }
        }
        // Whether this connection may follow the feed and read every task (a hub without a
        // token: loopback, a loopback Host, no foreign Origin; with one: the Bearer token).
        is_operator = operator::decide(
            hub.config.token.as_ref().map(HubToken::expose),
            &Claim {
                peer: addr.ip(),
                host: header(HOST),
                origin: header(ORIGIN),
                tls: hub.tls.is_some(),
                key: authorization.map_or(Key::None, |h| Key::Token(bearer(h).unwrap_or_default())),
            },
        );
        Ok(resp)
    };
    let handshake = Box::pin(accept_hdr_async_with_config(
        stream,
        callback,
        Some(ws_config),
    ));
    match tokio::time::timeout_at(conn.deadline, handshake).await {
        Ok(Ok(ws)) => Some(Upgraded {
            ws,
            upgrade,
            operator: is_operator,
        }),
        Ok(Err(e)) => {
            debug!(%addr, "handshake failed: {e}");
            None
        }
        Err(_) => {
            hub.refusals.connection(
                addr,
                ConnRefusal::HandshakeTimeout,
                "WebSocket handshake not completed in time",
            );
            None
        }
    }
}

/// The reading half of a session (this task), with its writer spawned beside it.
struct Reader<S> {
    stream: SplitStream<WebSocketStream<S>>,
    session: ConnSession,
    outbox: Outbox,
    /// The connection's frame rate limit.
    frames: TokenBucket,
    /// When anything was last read, in nanoseconds since `base` (the writer's heartbeat
    /// reads it).
    last_rx: Arc<AtomicU64>,
    base: Instant,
    meter: Arc<Meter>,
    writer: JoinSet<()>,
    closed: watch::Receiver<bool>,
    addr: SocketAddr,
    conn_id: u64,
    /// On a hub with a token: when a connection that has not shown it is closed.
    auth_deadline: Option<Instant>,
}

/// What woke [`Reader::next`].
enum Woke {
    Shutdown,
    Closed,
    AuthTimeout,
    Read(Option<Result<Message, WsError>>),
}

/// What [`Reader::next`] found.
enum Next {
    /// A message to handle.
    Message(Message),
    /// The session ends (the reason was already logged or queued).
    End,
}

impl<S> Reader<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Splits the socket: the session's outbox feeds a spawned writer (heartbeats, bounded
    /// writes, the close frame); this half reads.
    fn start(upgraded: Upgraded<S>, conn: Conn, hub: &Arc<HubState>, texts: Texts) -> Self {
        let Conn {
            addr,
            id: conn_id,
            auth_deadline,
            progress,
            meter,
            ..
        } = conn;
        let (sink, stream) = upgraded.ws.split();
        let (outbox, rx) = outbox(
            conn_id,
            hub.config.outbound_frames,
            hub.config.outbound_bytes,
        );
        let base = Instant::now();
        let last_rx = Arc::new(AtomicU64::new(0));
        let mut session = ConnSession::new(
            outbox.clone(),
            addr,
            upgraded.upgrade == Upgrade::Authorized,
        );
        session.operator = upgraded.operator;
        let wf = write_loop(
            sink,
            rx,
            Writer {
                outbox: outbox.clone(),
                heartbeat: Heartbeat::new(Instant::now(), hub.config.heartbeat_interval),
                probe: session.probe.clone(),
                last_rx: last_rx.clone(),
                base,
                progress,
                hub: hub.clone(),
                addr,
                texts,
            },
        );
        // In a set of its own so that it is aborted (and its half of the socket dropped) if
        // this task is; in the connection's span, so its lines carry the peer and session.
        let mut writer = JoinSet::new();
        writer.spawn(tracing::Instrument::in_current_span(wf));
        Self {
            stream,
            session,
            closed: outbox.closed_signal(),
            outbox,
            frames: TokenBucket::new(
                hub.config.frame_rate,
                hub.config.frame_burst,
                Instant::now(),
            ),
            last_rx,
            base,
            meter,
            writer,
            addr,
            conn_id,
            auth_deadline,
        }
    }

    /// Reads and handles messages until the session ends.
    #[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice (issue 16)
    fn read(
        &mut self,
        hub: &Arc<HubState>,
        shutdown: &mut watch::Receiver<bool>,
        slot: &mut Slot,
    ) -> impl Future<Output = ()> {
        // Not an `async fn`, which keeps its arguments twice: see [`run`].
        async move {
            // Only where there is an auth deadline, and boxed: a timer is 112 bytes that every
            // idle connection of a hub without a token would keep for nothing (issue 16).
            let mut auth_timer = self
                .auth_deadline
                .map(|at| Box::pin(tokio::time::sleep_until(at)));
            loop {
                let message = match self.next(hub, shutdown, slot, &mut auth_timer).await {
                    Next::Message(m) => m,
                    Next::End => return,
                };
                // The frame's bytes stay charged to the budget until it is handled (a `message`:
                // until it is committed; it takes the charge along).
                let charge = self.meter.take();
                // Nanoseconds, not milliseconds: a pong read in the same millisecond as its ping
                // was sent must still count as later than the ping.
                self.last_rx
                    .store(self.base.elapsed().as_nanos() as u64, Ordering::Relaxed);
                match message {
                    Message::Text(text) => {
                        if let Some(frame) = self.admit(hub, &text, charge) {
                            // What cannot be handled at once is boxed, one allocation per
                            // frame: `handle`'s state machine is ~1.7 KiB (the frame, twice,
                            // and `message`'s store call), and held inline it made the
                            // reader's future — which every idle connection keeps for its
                            // whole life — that much bigger (issue 16, docs/BENCHMARKS.md).
                            // The boxed future is made before the await, so what `now`
                            // returns is not kept across it: held there, it made every
                            // connection's reader ~600 bytes bigger (3 MiB after a storm of
                            // 5,000 registrations).
                            {
                                let later: Option<
                                    std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>,
                                > = match self.session.now(hub, frame) {
                                    Later::Done => None,
                                    Later::Frame(frame) => {
                                        Some(Box::pin(self.session.handle(hub, frame)))
                                    }
                                    Later::Queue(append) => {
                                        Some(Box::pin(self.session.queue(hub, append)))
                                    }
                                };
                                if let Some(later) = later {
                                    later.await;
                                }
                            }
                            self.session.charge = None;
                        }
                        if !self.token_shown(hub, slot) {
                            return;
                        }
                    }
                    Message::Binary(_) => self.session.error(
                        codes::BINARY,
                        "binary frames are not part of the protocol; send JSON text frames",
                        None,
                    ),
                    Message::Close(_) => return,
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
        }
    }

    /// The next message, or the end of the session: the hub shuts down, the writer closed
    /// the outbox, the auth deadline passed without the token, the client left, or a read
    /// failed (a frame over the hard limit, the hub's frame budget spent).
    #[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice (issue 16)
    fn next(
        &mut self,
        hub: &Arc<HubState>,
        shutdown: &mut watch::Receiver<bool>,
        slot: &Slot,
        auth_timer: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    ) -> impl Future<Output = Next> {
        // Not an `async fn`, which keeps its arguments twice: see [`run`].
        async move {
            let woke = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => Woke::Shutdown,
                _ = self.closed.wait_for(|c| *c) => Woke::Closed,
                // Without a timer (no auth deadline) this branch never fires, whatever the guard.
                _ = async {
                    match auth_timer {
                        Some(t) => t.await,
                        None => std::future::pending().await,
                    }
                }, if !slot.is_authenticated() => Woke::AuthTimeout,
                read = self.stream.next() => Woke::Read(read),
            };
            let read = match woke {
                Woke::Shutdown => {
                    self.outbox.finish(1001, "hub shutting down");
                    return Next::End;
                }
                Woke::Closed => return Next::End,
                Woke::AuthTimeout => {
                    self.auth_timed_out(hub);
                    return Next::End;
                }
                Woke::Read(read) => read,
            };
            match read {
                None => Next::End,
                Some(Ok(m)) => Next::Message(m),
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                    self.outbox.close(
                        1009,
                        &format!("frame of {size} bytes is over the hard limit of {max_size}"),
                    );
                    Next::End
                }
                Some(Err(WsError::Io(e))) if over_budget(&e) => {
                    hub.refusals.frame(
                        self.addr,
                        "over_budget",
                        "frame refused: the hub is over its memory budget for frames in flight",
                    );
                    self.outbox.close(
                        1013,
                        "hub over its memory budget for frames in flight; frame NOT processed; retry later",
                    );
                    Next::End
                }
                Some(Err(e)) => {
                    debug!(conn = self.conn_id, "read error: {e}");
                    Next::End
                }
            }
        }
    }

    /// No valid token by the auth deadline: say so and close.
    fn auth_timed_out(&self, hub: &HubState) {
        let secs = hub.config.auth_timeout.as_secs_f64();
        hub.refusals.connection(
            self.addr,
            ConnRefusal::AuthTimeout,
            &format!("no valid hub token within {secs} s: closing"),
        );
        self.session.error(
            codes::UNAUTHORIZED,
            format!("no valid hub token within {secs} s of connecting: closing"),
            None,
        );
        self.outbox.finish(1008, "no valid hub token in time");
    }

    /// One text frame: over `max_frame_bytes` it is refused; else parsed, counted and held
    /// to the connection's frame rate. A frame to handle is returned, its budget charge
    /// given to the session (the caller takes it back once the frame is handled). Not
    /// async, so that the frame is not kept in the reader's future (see [`Reader::read`]).
    fn admit(&mut self, hub: &HubState, text: &str, charge: Charge) -> Option<ClientFrame> {
        if text.len() > hub.config.max_frame_bytes {
            self.session.error(
                codes::TOO_LARGE,
                format!(
                    "frame is {} bytes; the limit is {} — send a file path or commit instead",
                    text.len(),
                    hub.config.max_frame_bytes
                ),
                None,
            );
            return None;
        }
        let frame = match parse(text) {
            Ok(frame) => frame,
            Err(e) => {
                self.session.parse_error(e);
                return None;
            }
        };
        hub.metrics.frame_in(&frame);
        match self.frames.take(Instant::now()) {
            Ok(()) => {
                self.session.charge = Some(charge);
                Some(frame)
            }
            Err(wait) => {
                self.session
                    .rate_limited(frame.rid().cloned(), wait, hub.config.frame_rate);
                None
            }
        }
    }

    /// A token shown in a frame (`register`, …) moves the connection to the token holders;
    /// false when there is no room there (the connection is closed).
    fn token_shown(&self, hub: &HubState, slot: &mut Slot) -> bool {
        if !self.session.authorized || slot.is_authenticated() {
            return true;
        }
        match slot.authenticate() {
            Ok(()) => true,
            Err(full) => {
                hub.refusals
                    .connection(self.addr, ConnRefusal::MaxConnections, &full.to_string());
                self.outbox
                    .finish(1013, "hub is at its connection limit; try again later");
                false
            }
        }
    }

    /// The session is over: the others are told, the writer sends what is left and the
    /// close frame (each write bounded) — one that still has not finished after
    /// [`CLOSE_TIMEOUT`] is aborted, which drops its half of the socket.
    async fn finish(mut self, hub: &HubState) {
        self.session.disconnected(hub);
        self.outbox.finish(1000, "");
        if tokio::time::timeout(CLOSE_TIMEOUT, self.writer.join_next())
            .await
            .is_err()
        {
            debug!(
                conn = self.conn_id,
                "writer did not finish in time: aborting it"
            );
            self.writer.shutdown().await;
        }
        if self.outbox.overflowed() {
            hub.metrics.outbox_overflow();
        }
    }
}

/// Whether a read failed because the frame budget is spent (see [`crate::budget`]).
fn over_budget(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<OverBudget>())
}

/// What the writer task needs besides the socket and the queue.
struct Writer {
    outbox: Outbox,
    heartbeat: Heartbeat,
    probe: Arc<Notify>,
    last_rx: Arc<AtomicU64>,
    base: Instant,
    progress: Arc<Progress>,
    hub: Arc<HubState>,
    addr: SocketAddr,
    /// Where the text frames go: framed under tungstenite ([`crate::batching`]).
    texts: Texts,
}

/// Why the writer stopped before the connection was asked to close.
enum WriteEnd {
    /// The socket failed.
    Failed,
    /// The socket took no byte for a heartbeat interval: the client does not read.
    Stalled,
    /// No answer to the heartbeat.
    Dead,
}

/// The writer task: [`pump`] until the connection closes, then closes the outbox with the
/// reason. Every connection keeps this task for its whole life, so its future is kept small
/// (issue 16, docs/BENCHMARKS.md): not an `async fn`, whose arguments the future would keep
/// twice (and [`pump`]'s, had they been moved on to it, twice more); an `async move` block
/// keeps them once and lends them to [`pump`].
#[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice (issue 16)
fn write_loop<S>(
    mut sink: Sink<S>,
    mut rx: OutboxReceiver,
    mut w: Writer,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async move {
        let end = pump(&mut sink, &mut rx, &mut w).await;
        // The queue is gone (cleared, the reader told) and the socket's half dropped before
        // the close wakes the reader.
        drop(rx);
        drop(sink);
        let Writer {
            outbox, hub, addr, ..
        } = w;
        match end {
            Ok(()) => {}
            Err(WriteEnd::Failed) => outbox.close(1011, "write failed"),
            Err(WriteEnd::Stalled) => {
                let secs = hub.config.heartbeat_interval.as_secs_f64();
                hub.refusals.connection(
                    addr,
                    ConnRefusal::NotReading,
                    &format!("client not reading: nothing written for {secs} s; closing"),
                );
                outbox.close(
                    1008,
                    "client not reading; mail is stored, reconnect to catch up",
                );
            }
            Err(WriteEnd::Dead) => {
                warn!(conn = outbox.id(), %addr, "no answer to heartbeat: dropping connection");
                outbox.close(1011, "heartbeat timeout");
            }
        }
    }
}

/// Drains the outbox to the socket and keeps the heartbeat, every write bounded by the
/// heartbeat interval of no progress. Returns when the connection closes.
#[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice (issue 16)
fn pump<S>(
    sink: &mut Sink<S>,
    rx: &mut OutboxReceiver,
    w: &mut Writer,
) -> impl Future<Output = Result<(), WriteEnd>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Not an `async fn`, which keeps its arguments twice: see [`write_loop`].
    async move {
        let limit = w.hub.config.heartbeat_interval;
        let (progress, metrics) = (&w.progress, &w.hub.metrics);
        let texts = &w.texts;
        let queue = |frame: tokio_tungstenite::tungstenite::Utf8Bytes| {
            metrics.frame_out(frame.as_str());
            texts.push(frame);
        };
        let write = async |sink: &mut Sink<S>, op: Op| {
            let done = match op {
                Op::Flush => bounded(sink.flush(), progress, limit).await,
                Op::Send(m) => bounded(sink.send(m), progress, limit).await,
            };
            match done {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(WriteEnd::Failed),
                Err(Stalled(_)) => Err(WriteEnd::Stalled),
            }
        };
        let last_rx_at = || w.base + Duration::from_nanos(w.last_rx.load(Ordering::Relaxed));
        loop {
            let beat = tokio::select! {
                biased;
                frame = rx.recv() => {
                    let Some(frame) = frame else {
                        if let Some(c) = rx.take_close() {
                            let close = Message::Close(Some(CloseFrame {
                                code: c.code.into(),
                                reason: truncate_reason(&c.reason).into(),
                            }));
                            // Boxed, as the writes below are. When the client closed first,
                            // tungstenite refuses a close of ours and holds its answer to the
                            // client's: a flush writes that answer (RFC 6455 §5.5.1).
                            let send = tokio::time::timeout(CLOSE_TIMEOUT, async {
                                if sink.send(close).await.is_err() {
                                    let _ = sink.flush().await;
                                }
                            });
                            let _ = Box::pin(send).await;
                        }
                        return Ok(());
                    };
                    // The batch's frames are queued for the layer under tungstenite, which
                    // frames and writes them at this flush (`crate::batching`).
                    let mut bytes = frame.len();
                    queue(frame);
                    while bytes < FLUSH_BYTES {
                        let Some(more) = rx.try_recv() else { break };
                        bytes += more.len();
                        queue(more);
                    }
                    // Boxed, one allocation per batch: the flush's state (and its timer) is
                    // bigger than the idle wait below, and held inline it made every
                    // connection's writer that much bigger for its whole life (issue 16,
                    // docs/BENCHMARKS.md).
                    Box::pin(async {
                        write(sink, Op::Flush).await?;
                        Ok::<(), WriteEnd>(())
                    })
                    .await?;
                    if !texts.flushed() {
                        // The peer's close was read: tungstenite no longer flushes the layer
                        // below it (and says it did), so nothing more is written.
                        return Ok(());
                    }
                    rx.written(bytes);
                    continue;
                }
                _ = tokio::time::sleep_until(w.heartbeat.next_wake()) => {
                    w.heartbeat.on_wake(Instant::now(), last_rx_at())
                }
                _ = w.probe.notified() => w.heartbeat.probe(Instant::now()),
            };
            match beat {
                Beat::Idle => {}
                Beat::Ping => Box::pin(write(sink, Op::Send(Message::Ping(Bytes::new())))).await?,
                Beat::Dead => return Err(WriteEnd::Dead),
            }
        }
    }
}

/// One bounded write of the writer.
enum Op {
    /// What is queued, through to the socket.
    Flush,
    /// A control frame, then a flush.
    Send(Message),
}

fn refuse(status: StatusCode, why: String) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why));
    *r.status_mut() = status;
    r
}

/// Close reasons must fit in 123 bytes.
fn truncate_reason(s: &str) -> String {
    let mut end = s.len().min(123);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes every plain connection's future may hold while its session reads: `run`'s
    /// state (the reader, its read loop, what the loop keeps across its awaits). 1,008 on
    /// 2026-12-07 (x86_64, Rust 1.95, debug and release alike). Keeping `ConnSession::now`'s
    /// result across the read loop's await, as a first version did, made it 1,696; so would
    /// a handler's future held inline instead of boxed. Raise it only with the figure it
    /// buys in docs/BENCHMARKS.md: every idle connection keeps these bytes.
    const MAX_RUN_FUTURE: usize = 1_100;

    #[tokio::test]
    async fn a_connection_keeps_a_small_future_for_its_whole_life() {
        let dir = tempfile::tempdir().unwrap();
        let hub = crate::Hub::open(crate::HubConfig::new(dir.path()))
            .unwrap()
            .state();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (socket, addr) = listener.accept().await.unwrap();
        let progress = Progress::new();
        let meter = Meter::new(hub.budget.clone());
        let stream = Metered::new(Watched::new(socket, progress.clone()), meter.clone());
        let conn = Conn {
            addr,
            id: 1,
            refused: None,
            deadline: Instant::now(),
            auth_deadline: None,
            progress,
            meter,
        };
        let (_stop, shutdown) = watch::channel(false);
        let mut slot = hub.caps.admit().unwrap();
        let future = run(stream, conn, &hub, shutdown, &mut slot);
        let size = std::mem::size_of_val(&future);
        assert!(
            size <= MAX_RUN_FUTURE,
            "a connection's future is {size} bytes; the bound is {MAX_RUN_FUTURE}"
        );
    }
}
