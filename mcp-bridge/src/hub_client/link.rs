//! The connection task: dial, register, serve the connection, and when it ends wait (with
//! backoff) and dial again. The only writer of the client's [`LinkState`].

use std::{sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use relay_proto::wire::ClientFrame;
use tokio::{
    sync::{mpsc, watch},
    time::{Instant, Interval},
};
use tokio_tungstenite::tungstenite::Message;

use super::{Inner, Link, LinkState, OUTBOUND_QUEUE, Outgoing, register};
use crate::{backoff::Backoff, dial};

/// How long a polite close may take before the socket is simply dropped.
const CLOSE_WAIT: Duration = Duration::from_millis(200);

/// How one connection ended.
pub(super) enum Ended {
    /// Dial, register or traffic failed; retry with backoff.
    Failed(String),
    /// The hub refused our name; retry with backoff.
    Rejected(String),
    /// The hub or this bridge's setup refuses the connection itself (token, TLS, CA, URL,
    /// an HTTP refusal): time alone will not fix it. Retried with backoff, but sends are not
    /// queued meanwhile (docs/BRIDGE.md, "Offline outbox").
    Refused(String),
    /// We are shutting down.
    Stopped,
}

pub(super) type Sink = futures_util::stream::SplitSink<dial::HubSocket, Message>;
pub(super) type Stream = futures_util::stream::SplitStream<dial::HubSocket>;

/// Resolves once shutdown was requested (the guard `wait_for` returns is not `Send`, so it is
/// dropped here rather than held in a `select!`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The connection task: dial, register, serve, and on failure wait and redial.
pub(super) async fn run(inner: Arc<Inner>) {
    let t = inner.timeouts.clone();
    let mut backoff = Backoff::new(t.backoff_start, t.backoff_cap);
    let mut previous_error: Option<String> = None;
    let mut previous_refused = false;
    let mut previous_rejected = false;
    let mut stop = inner.stop.subscribe();
    while !inner.stopping() {
        inner.status.send_replace(LinkState::Connecting {
            attempt: backoff.attempts() + 1,
            last_error: previous_error.clone(),
            refused: previous_refused,
            rejected: previous_rejected,
        });
        let ended = tokio::select! {
            ended = connect_and_serve(&inner, &mut backoff) => ended,
            _ = stopped(&mut stop) => Ended::Stopped,
        };
        let (last_error, rejected, transport) = match ended {
            Ended::Stopped => break,
            Ended::Failed(e) => (e, false, true),
            Ended::Rejected(e) => (e, true, false),
            Ended::Refused(e) => (e, false, false),
        };
        let delay = backoff.next_delay();
        tracing::info!("hub connection: {last_error}; retrying in {delay:?}");
        previous_error = Some(last_error.clone());
        previous_refused = !transport;
        previous_rejected = rejected;
        inner.status.send_replace(LinkState::Waiting {
            retry_at: Instant::now() + delay,
            last_error,
            rejected,
            transport,
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    inner.status.send_replace(LinkState::Stopped);
}

/// One connection from dial to end. Whatever ends it, its pending requests fail at once.
async fn connect_and_serve(inner: &Arc<Inner>, backoff: &mut Backoff) -> Ended {
    let ws = match dial::connect_with(&inner.url, &inner.auth, inner.timeouts.connect).await {
        Ok(ws) => ws,
        Err(
            e @ (dial::ConnectError::Unreachable { .. }
            | dial::ConnectError::Timeout(..)
            | dial::ConnectError::Closed
            | dial::ConnectError::Io(_)
            | dial::ConnectError::Refused { status: 500.., .. }),
        ) => return Ended::Failed(e.to_string()),
        Err(e) => return Ended::Refused(e.to_string()),
    };
    let conn = {
        let mut s = inner.lock();
        s.next_conn += 1;
        s.next_conn
    };
    let (mut sink, mut stream) = ws.split();
    match register::register(inner, &mut sink, &mut stream).await {
        Ok(()) => {}
        Err(ended) => {
            let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Close(None))).await;
            return ended;
        }
    }
    let up_since = Instant::now();
    let (tx, rx) = mpsc::channel::<Outgoing>(OUTBOUND_QUEUE);
    inner.status.send_replace(LinkState::Connected {
        since_ms: relay_proto::time::now_ms(),
        link: Link { conn, tx },
    });
    let mut serving = Serving::new(inner, sink, rx);
    let ended = serving.serve(&mut stream).await;
    // Close the queue first: a request racing this teardown then fails to enqueue (and says
    // "not sent") instead of waiting for a reply that can no longer come. The `Waiting` or
    // `Stopped` state that follows replaces `Connected` and its queue.
    serving.rx.close();
    inner.fail_pending(conn);
    // Only a connection that stayed up proves the link healthy: one that registers and dies
    // at once (a flapping tunnel) keeps the backoff growing (docs/BRIDGE.md, "Dead links").
    if up_since.elapsed() >= inner.timeouts.healthy_after {
        backoff.reset();
    }
    ended
}

/// A registered connection being served: requests out, replies and pushes in, our pings,
/// and the idle watch that notices a half-open connection.
struct Serving<'a> {
    inner: &'a Inner,
    sink: Sink,
    rx: mpsc::Receiver<Outgoing>,
    ping: Interval,
    last_frame: Instant,
}

impl<'a> Serving<'a> {
    fn new(inner: &'a Inner, sink: Sink, rx: mpsc::Receiver<Outgoing>) -> Self {
        let every = inner.timeouts.ping_interval;
        Self {
            inner,
            sink,
            rx,
            ping: tokio::time::interval_at(Instant::now() + every, every),
            last_frame: Instant::now(),
        }
    }

    async fn serve(&mut self, stream: &mut Stream) -> Ended {
        let mut stop = self.inner.stop.subscribe();
        let idle = self.inner.timeouts.idle;
        loop {
            let step = tokio::select! {
                out = self.rx.recv() => self.write_request(out).await,
                msg = stream.next() => self.read(msg),
                _ = self.ping.tick() => self.write_ping().await,
                _ = tokio::time::sleep_until(self.last_frame + idle) => Err(Ended::Failed(format!(
                    "no traffic from the hub for {:.1} s; the connection looked dead",
                    idle.as_secs_f64()
                ))),
                _ = stopped(&mut stop) => {
                    let _ = tokio::time::timeout(CLOSE_WAIT, self.sink.send(Message::Close(None))).await;
                    Err(Ended::Stopped)
                }
            };
            if let Err(ended) = step {
                return ended;
            }
        }
    }

    /// Writes one queued request and marks it written.
    async fn write_request(&mut self, out: Option<Outgoing>) -> Result<(), Ended> {
        let Some(out) = out else {
            return Err(Ended::Failed("outbound queue closed".into()));
        };
        self.write(out.text).await?;
        if let Some(rid) = out.rid {
            self.inner.mark_written(rid);
        }
        Ok(())
    }

    /// Our application-level ping (the hub's reply counts as traffic for the idle watch).
    async fn write_ping(&mut self) -> Result<(), Ended> {
        let text =
            serde_json::to_string(&ClientFrame::Ping(Default::default())).unwrap_or_default();
        self.write(text).await
    }

    async fn write(&mut self, text: String) -> Result<(), Ended> {
        write_text(&mut self.sink, text, self.inner.timeouts.request).await
    }

    /// One message from the hub: text frames are dispatched; a close or error ends the
    /// connection.
    fn read(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), Ended> {
        let m = match msg {
            None => return Err(Ended::Failed("the hub closed the connection".into())),
            Some(Err(e)) => return Err(Ended::Failed(format!("connection error: {e}"))),
            Some(Ok(m)) => m,
        };
        self.last_frame = Instant::now();
        match m {
            Message::Text(text) => self.inner.dispatch(&text),
            Message::Close(frame) => {
                let why = frame
                    .map(|f| format!(" ({})", f.reason))
                    .filter(|s| s != " ()")
                    .unwrap_or_default();
                return Err(Ended::Failed(format!("the hub closed the connection{why}")));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Writes one text frame within `limit`.
pub(super) async fn write_text(
    sink: &mut Sink,
    text: String,
    limit: Duration,
) -> Result<(), Ended> {
    match tokio::time::timeout(limit, sink.send(Message::text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Ended::Failed(format!("writing to the hub failed: {e}"))),
        Err(_) => Err(Ended::Failed("writing to the hub timed out".into())),
    }
}
