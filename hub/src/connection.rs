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
use tokio::{net::TcpStream, sync::Notify, sync::watch, time::Instant};
use tokio_tungstenite::{
    WebSocketStream, accept_async_with_config,
    tungstenite::{
        Bytes, Message,
        error::{CapacityError, Error as WsError},
        protocol::{CloseFrame, WebSocketConfig},
    },
};
use tracing::{debug, warn};

use crate::{
    HubState,
    dispatch::ConnSession,
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

type Sink = SplitSink<WebSocketStream<TcpStream>, Message>;

/// Serves one accepted TCP connection until it closes or the hub shuts down.
pub async fn serve(
    stream: TcpStream,
    addr: SocketAddr,
    conn_id: u64,
    hub: Arc<HubState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let ws_config = WebSocketConfig::default()
        // Small eager read buffer: 10,000 idle connections must stay cheap.
        .read_buffer_size(4096)
        .max_message_size(Some(hub.config.hard_frame_limit))
        .max_frame_size(Some(hub.config.hard_frame_limit));
    let ws = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        accept_async_with_config(stream, Some(ws_config)),
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
    let (sink, mut stream) = ws.split();
    let (outbox, rx) = outbox(
        conn_id,
        hub.config.outbound_frames,
        hub.config.outbound_bytes,
    );
    let base = Instant::now();
    let last_rx = Arc::new(AtomicU64::new(0));
    let mut session = ConnSession::new(outbox.clone(), addr);
    let writer = tokio::spawn(write_loop(
        sink,
        rx,
        outbox.clone(),
        Heartbeat::new(
            Instant::now(),
            hub.config.heartbeat_interval,
            hub.config.heartbeat_timeout,
        ),
        session.probe.clone(),
        last_rx.clone(),
        base,
    ));
    let mut closed = outbox.closed_signal();
    loop {
        let msg = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => {
                outbox.close(1001, "hub shutting down");
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
        last_rx.store(base.elapsed().as_millis() as u64, Ordering::Relaxed);
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
                    Ok(frame) => session.handle(&hub, frame).await,
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
    session.disconnected(&hub);
    outbox.close(1000, "");
    if tokio::time::timeout(CLOSE_TIMEOUT, writer).await.is_err() {
        debug!(conn = conn_id, "writer did not finish in time");
    }
}

async fn write_loop(
    mut sink: Sink,
    mut rx: OutboxReceiver,
    outbox: Outbox,
    mut heartbeat: Heartbeat,
    probe: Arc<Notify>,
    last_rx: Arc<AtomicU64>,
    base: Instant,
) {
    let last_rx_at = || base + Duration::from_millis(last_rx.load(Ordering::Relaxed));
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
                if sink.feed(Message::Text(frame)).await.is_err() {
                    break;
                }
                while bytes < FLUSH_BYTES {
                    let Some(more) = rx.try_recv() else { break };
                    bytes += more.len();
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

/// Close reasons must fit in 123 bytes.
fn truncate_reason(s: &str) -> String {
    let mut end = s.len().min(123);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
