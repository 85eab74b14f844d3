//! One client connection: the WebSocket handshake, then a reader (this task) and a writer
//! (a spawned task) joined by the connection's bounded [`Outbox`].
//!
//! The reader parses each frame and hands it to [`ConnSession`]; nothing it does can block
//! another connection. The writer drains the outbox to the socket in batches (many queued
//! frames, one flush), sends heartbeats, and sends the close frame when the connection must
//! end. Either side ending closes the outbox, which ends the other.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use sessions::wire::codes;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::Notify,
    sync::watch,
    time::Instant,
};
use tokio_tungstenite::{
    WebSocketStream, accept_hdr_async_with_config,
    tungstenite::{
        Bytes, Message,
        error::{CapacityError, Error as WsError},
        handshake::server::{ErrorResponse, Request, Response},
        http::{StatusCode, header::AUTHORIZATION},
        protocol::{CloseFrame, WebSocketConfig},
    },
};
use tracing::{debug, warn};

use crate::{
    HubState,
    auth::{bearer, token_ok},
    dispatch::ConnSession,
    limits::{TokenBucket, TooManyConnections},
    metrics::{ConnRefusal, Metrics},
    outbound::{Outbox, OutboxReceiver, outbox},
    parse::parse,
    presence::{Beat, Heartbeat},
};

/// A client has this long to complete the WebSocket handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After asking for a close, how long the hub waits for the close frame to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The writer flushes at least this often while draining a long queue.
const FLUSH_BYTES: usize = 256 << 10;

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;

/// Serves one accepted TCP connection until it closes or the hub shuts down: per-address
/// cap, TLS (when configured) and the WebSocket handshake, all within
/// [`HANDSHAKE_TIMEOUT`], then the session.
pub async fn serve(
    stream: TcpStream,
    addr: SocketAddr,
    conn_id: u64,
    hub: Arc<HubState>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let admitted = hub.limits.open(addr.ip());
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    // Each state machine is boxed on its own: an async fn's size is that of its largest
    // state, and the TLS branch and the handshakes would otherwise make every plain idle
    // connection carry ~12 KiB of dead weight for its whole life.
    match hub.tls.clone() {
        Some(acceptor) => {
            match tokio::time::timeout_at(deadline, Box::pin(acceptor.accept(stream))).await {
                Ok(Ok(tls)) => {
                    Box::pin(run(
                        tls,
                        addr,
                        conn_id,
                        &hub,
                        shutdown,
                        admitted.err(),
                        deadline,
                    ))
                    .await
                }
                Ok(Err(e)) => debug!(%addr, "TLS handshake failed: {e}"),
                Err(_) => debug!(%addr, "TLS handshake timed out"),
            }
        }
        None => {
            Box::pin(run(
                stream,
                addr,
                conn_id,
                &hub,
                shutdown,
                admitted.err(),
                deadline,
            ))
            .await
        }
    }
    if admitted.is_ok() {
        hub.limits.close(addr.ip());
    }
}

/// What the upgrade request said about authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    /// A valid `Authorization: Bearer` header (or no token is configured).
    Authorized,
    /// No header: the client may still present the token on `register`.
    Anonymous,
}

async fn run<S>(
    stream: S,
    addr: SocketAddr,
    conn_id: u64,
    hub: &Arc<HubState>,
    mut shutdown: watch::Receiver<bool>,
    refused: Option<TooManyConnections>,
    deadline: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Plain HTTP (console, /metrics, /healthz) is served there; upgrades come back.
    let Some(stream) =
        crate::http::route(stream, addr, hub, deadline, refused, shutdown.clone()).await
    else {
        return;
    };
    let ws_config = WebSocketConfig::default()
        // Small eager read buffer: 10,000 idle connections must stay cheap.
        .read_buffer_size(4096)
        .max_message_size(Some(hub.config.hard_frame_limit))
        .max_frame_size(Some(hub.config.hard_frame_limit));
    let mut upgrade = Upgrade::Authorized;
    // The signature is tungstenite's handshake callback.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if let Some(TooManyConnections { limit }) = refused {
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("too many connections from your address (limit {limit})"),
            ));
        }
        if let Some(expected) = &hub.config.token {
            match req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
            {
                None => upgrade = Upgrade::Anonymous,
                Some(h) => match bearer(h) {
                    Some(t) if token_ok(expected, t) => {}
                    _ => {
                        hub.metrics.connection_refused(ConnRefusal::Unauthorized);
                        return Err(refuse(
                            StatusCode::UNAUTHORIZED,
                            "invalid hub token in the Authorization header".into(),
                        ));
                    }
                },
            }
        }
        Ok(resp)
    };
    let ws = match tokio::time::timeout_at(
        deadline,
        Box::pin(accept_hdr_async_with_config(
            stream,
            callback,
            Some(ws_config),
        )),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            debug!(%addr, "handshake failed: {e}");
            return;
        }
        Err(_) => {
            debug!(%addr, "handshake timed out");
            return;
        }
    };
    hub.metrics.websockets.inc();
    let (sink, mut stream) = ws.split();
    let (outbox, rx) = outbox(
        conn_id,
        hub.config.outbound_frames,
        hub.config.outbound_bytes,
    );
    let base = Instant::now();
    let last_rx = Arc::new(AtomicU64::new(0));
    let mut session = ConnSession::new(outbox.clone(), addr, upgrade == Upgrade::Authorized);
    let mut frames = TokenBucket::new(
        hub.config.frame_rate,
        hub.config.frame_burst,
        Instant::now().into_std(),
    );
    let wf = write_loop(
        sink,
        rx,
        outbox.clone(),
        Heartbeat::new(Instant::now(), hub.config.heartbeat_interval),
        session.probe.clone(),
        last_rx.clone(),
        base,
        hub.metrics.clone(),
    );
    let writer = tokio::spawn(tracing::Instrument::in_current_span(wf));
    let mut closed = outbox.closed_signal();
    loop {
        let msg = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => {
                outbox.finish(1001, "hub shutting down");
                break;
            }
            _ = closed.wait_for(|c| *c) => break,
            msg = stream.next() => msg,
        };
        let msg = match msg {
            None => break,
            Some(Ok(m)) => m,
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                outbox.close(
                    1009,
                    &format!("frame of {size} bytes is over the hard limit of {max_size}"),
                );
                break;
            }
            Some(Err(e)) => {
                debug!(conn = conn_id, "read error: {e}");
                break;
            }
        };
        // Nanoseconds, not milliseconds: a pong read in the same millisecond as its ping was
        // sent must still count as later than the ping.
        last_rx.store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
        match msg {
            Message::Text(text) => {
                if text.len() > hub.config.max_frame_bytes {
                    session.error(
                        codes::TOO_LARGE,
                        format!(
                            "frame is {} bytes; the limit is {} — send a file path or commit instead",
                            text.len(),
                            hub.config.max_frame_bytes
                        ),
                        None,
                    );
                    continue;
                }
                match parse(&text) {
                    Ok(frame) => {
                        hub.metrics.frame_in(&frame);
                        match frames.take(std::time::Instant::now()) {
                            Ok(()) => session.handle(hub, frame).await,
                            Err(wait) => session.rate_limited(
                                frame.rid().cloned(),
                                wait,
                                hub.config.frame_rate,
                            ),
                        }
                    }
                    Err(e) => session.parse_error(e),
                }
            }
            Message::Binary(_) => session.error(
                codes::BINARY,
                "binary frames are not part of the protocol; send JSON text frames",
                None,
            ),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    session.disconnected(hub);
    outbox.finish(1000, "");
    if tokio::time::timeout(CLOSE_TIMEOUT, writer).await.is_err() {
        debug!(conn = conn_id, "writer did not finish in time");
    }
    if outbox.overflowed() {
        hub.metrics.outbox_overflow();
    }
    hub.metrics.websockets.dec();
}

// One argument per thing the writer owns or shares; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
async fn write_loop<S>(
    mut sink: Sink<S>,
    mut rx: OutboxReceiver,
    outbox: Outbox,
    mut heartbeat: Heartbeat,
    probe: Arc<Notify>,
    last_rx: Arc<AtomicU64>,
    base: Instant,
    metrics: Arc<Metrics>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let last_rx_at = || base + Duration::from_nanos(last_rx.load(Ordering::Relaxed));
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
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(close)).await;
                    }
                    return;
                };
                let mut bytes = frame.len();
                metrics.frame_out(&frame);
                if sink.feed(Message::Text(frame)).await.is_err() {
                    break;
                }
                while bytes < FLUSH_BYTES {
                    let Some(more) = rx.try_recv() else { break };
                    bytes += more.len();
                    metrics.frame_out(&more);
                    if sink.feed(Message::Text(more)).await.is_err() {
                        outbox.close(1011, "write failed");
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    break;
                }
                rx.written(bytes);
                continue;
            }
            _ = tokio::time::sleep_until(heartbeat.next_wake()) => {
                heartbeat.on_wake(Instant::now(), last_rx_at())
            }
            _ = probe.notified() => heartbeat.probe(Instant::now()),
        };
        match beat {
            Beat::Idle => {}
            Beat::Ping => {
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    break;
                }
            }
            Beat::Dead => {
                warn!(
                    conn = outbox.id(),
                    "no answer to heartbeat: dropping connection"
                );
                outbox.close(1011, "heartbeat timeout");
                return;
            }
        }
    }
    outbox.close(1011, "write failed");
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
