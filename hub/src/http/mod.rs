//! HTTP on the hub's own port: `/healthz`, `/metrics`, the web console and its live feed
//! (docs/CONSOLE.md; who may see what: docs/SECURITY.md, "The console, metrics and tail").
//!
//! One listener, one TLS set-up: every accepted connection (after TLS, when configured)
//! comes here first. [`route`] reads the request head itself — bounded in size, and within
//! the connection's handshake deadline — and looks for `Upgrade: websocket`:
//! - an upgrade goes back to the WebSocket path with the bytes already read replayed in
//!   front ([`io::Rewind`]), so tungstenite's handshake and everything after it are exactly
//!   what they were before HTTP existed;
//! - anything else is served here by hyper's HTTP/1 server (hyper writes every response
//!   head, body framing and chunked encoding; this module never does).
//!
//! Bounds (all in [`crate::HubConfig`]): the request head (`http_max_header_bytes`), the body
//! (`http_max_body_bytes`), HTTP connections open at once (`max_http_connections`, over it a
//! 503), feed subscribers (`max_feed_subscribers`), and an idle timeout
//! (`http_idle_timeout`) for kept-alive connections between requests — no byte moved either
//! way for that long, which also closes a client that stops reading an event stream.
//!
//! An HTTP connection lives inside the same hardened lifecycle as a WebSocket (see
//! [`crate::connection`] and docs/CONSOLE.md, "One listener"): it holds its place under
//! `max_connections` (and the per-address cap) until its socket is closed, its head must
//! arrive within the handshake deadline, its reads are charged to the frame budget (released
//! at each request), and every refusal goes through [`crate::refusals`]. On a hub with a
//! token, a connection whose first request does not show the token (a Bearer header or the
//! login cookie) counts among the connections that have not shown it (`max_unauthenticated`,
//! over it a 503) until a later request does; one that has not shown it within the auth
//! timeout is closed once its current answer is written. So `/healthz` and the login page
//! stay open to anyone, but clients without the token never hold the places of those who
//! have it, and a token holder's connection never waits for theirs.

mod approvals;
mod auth;
mod console;
mod health;
pub(crate) mod io;
mod routes;
mod sse;

use relay_proto::token::HubToken;
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite},
    sync::{Notify, watch},
    time::Instant,
};
use tracing::debug;

use crate::{
    HubState,
    budget::Meter,
    connection::Conn,
    limits::{Slot, TooManyConnections},
    progress::{Progress, Watched},
    refusals::ConnRefusal,
};
use io::Rewind;

/// Every response body: a whole buffer or an event stream.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How long a closing HTTP connection (hub shutdown, idle timeout) may take to finish the
/// response it is writing.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Most headers parsed in a request head.
const MAX_HEADERS: usize = 64;

/// State the HTTP side keeps for the whole hub.
pub(crate) struct HttpState {
    open: AtomicUsize,
    health: health::Cache,
    logins: auth::Logins,
}

impl Default for HttpState {
    fn default() -> Self {
        Self {
            open: AtomicUsize::new(0),
            health: health::Cache::default(),
            logins: auth::Logins::default(),
        }
    }
}

/// What one request knows about its connection.
pub(crate) struct Ctx {
    pub hub: Arc<HubState>,
    pub addr: SocketAddr,
    /// Served over TLS (cookies get `Secure`).
    pub tls: bool,
    pub shutdown: watch::Receiver<bool>,
    /// The connection's account with the frame budget (released at each request).
    meter: Arc<Meter>,
    /// Rung when a request turns out to be the operator's (it authenticates the connection).
    authenticated: Notify,
}

impl Ctx {
    /// This connection's request was the operator's (see [`serve`]).
    pub(crate) fn authenticated(&self) {
        self.authenticated.notify_one();
    }
}

/// Holds one of the hub's HTTP connection places and its gauge.
struct HttpPlace(Arc<HubState>);

impl Drop for HttpPlace {
    fn drop(&mut self) {
        self.0.http.open.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.http_connections.dec();
    }
}

/// Reads the request head of a fresh connection. A WebSocket upgrade is handed back (with
/// the head replayed) for the WebSocket path; any other request is served here to the end
/// of the connection and `None` is returned, as it is for a connection that sent no complete
/// head before `conn.deadline`.
pub(crate) async fn route<S>(
    mut stream: S,
    conn: &Conn,
    hub: &Arc<HubState>,
    slot: &mut Slot,
    shutdown: watch::Receiver<bool>,
) -> Option<Rewind<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = conn.addr;
    let max = hub.config.http_max_header_bytes.max(1024);
    let mut buf = BytesMut::with_capacity(1024);
    // (a WebSocket upgrade, whether the first request shows the token)
    let (upgrade, shows_token) = loop {
        let read = tokio::time::timeout_at(conn.deadline, async {
            if buf.capacity() == buf.len() {
                buf.reserve((buf.len()).min(max - buf.len()).max(512));
            }
            stream.read_buf(&mut buf).await
        })
        .await;
        match read {
            Err(_) => {
                hub.refusals.connection(
                    addr,
                    ConnRefusal::HandshakeTimeout,
                    "no complete request head (WebSocket upgrade or HTTP request) in time",
                );
                return None;
            }
            Ok(Ok(0)) | Ok(Err(_)) if buf.is_empty() => return None,
            // EOF or an error mid-head: let hyper answer what it can.
            Ok(Ok(0)) | Ok(Err(_)) => break (false, false),
            Ok(Ok(_)) => {}
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    is_websocket_upgrade(req.headers),
                    shows_token(hub, conn, req.headers),
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < max => {}
            // Too big or not HTTP: hyper answers 431 / 400.
            _ => break (false, false),
        }
    };
    let stream = Rewind::new(stream, buf.freeze());
    if upgrade {
        // The WebSocket handshake answers the caps and the token itself.
        return Some(stream);
    }
    if shows_token {
        // Counted under max_connections since accept; now known to be a token holder's.
        let _ = slot.authenticate();
    }
    serve(stream, conn, hub, slot, shutdown).await;
    None
}

/// Whether a request head presents the hub token (a Bearer header or a login cookie) on a
/// hub that has one — decided by [`crate::operator::decide`], like every request after it.
fn shows_token(hub: &HubState, conn: &Conn, headers: &[httparse::Header<'_>]) -> bool {
    let Some(token) = hub.config.token.as_ref().map(HubToken::expose) else {
        return false;
    };
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
    };
    let (key, _) = auth::credential(hub, values("authorization").next(), values("cookie"));
    let claim = crate::operator::Claim {
        peer: conn.addr.ip(),
        host: None,
        origin: None,
        tls: hub.tls.is_some(),
        key,
    };
    crate::operator::decide(Some(token), &claim).is_ok()
}

/// `Upgrade: websocket` (the token, case-insensitively, in any `Upgrade` header).
fn is_websocket_upgrade(headers: &[httparse::Header<'_>]) -> bool {
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("upgrade")
            && std::str::from_utf8(h.value).is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
            })
    })
}

/// Serves HTTP/1 requests on one connection until it closes, idles out, is closed for not
/// showing the token in time, or the hub stops. A connection over a cap gets one 503 with
/// the reason and is closed.
async fn serve<S>(
    stream: Rewind<S>,
    conn: &Conn,
    hub: &Arc<HubState>,
    slot: &mut Slot,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = conn.addr;
    let taken = hub.http.open.fetch_add(1, Ordering::AcqRel);
    hub.metrics.http_connections.inc();
    let _place = HttpPlace(hub.clone());
    // The head just read is done with; each request releases what came since.
    drop(conn.meter.take());
    let refused = if let Some(TooManyConnections { limit }) = conn.refused {
        let why = format!("too many connections from your address (limit {limit})");
        hub.refusals.connection(addr, ConnRefusal::PerAddress, &why);
        Some(why)
    } else if taken >= hub.config.max_http_connections {
        let why = format!(
            "the hub is serving its maximum of {} HTTP connections; try again later",
            hub.config.max_http_connections
        );
        hub.refusals.connection(addr, ConnRefusal::HttpBusy, &why);
        Some(why)
    } else if let Err(full) = slot.upgraded_anonymous() {
        // A hub with a token, full of connections that have not shown it (a connection
        // whose first request showed it is authenticated already: this does nothing).
        let why = full.to_string();
        hub.refusals
            .connection(addr, ConnRefusal::Unauthenticated, &why);
        Some(why)
    } else {
        None
    };
    let cx = Arc::new(Ctx {
        hub: hub.clone(),
        addr,
        tls: hub.tls.is_some(),
        shutdown: shutdown.clone(),
        meter: conn.meter.clone(),
        authenticated: Notify::new(),
    });
    let service = {
        let cx = cx.clone();
        let refused: Option<Arc<str>> = refused.as_deref().map(Arc::from);
        service_fn(move |req| {
            let cx = cx.clone();
            let refused = refused.clone();
            async move {
                drop(cx.meter.take());
                let resp = match refused {
                    Some(why) => routes::unavailable(&why),
                    None => routes::handle(req, &cx).await,
                };
                Ok::<_, Infallible>(resp)
            }
        })
    };
    // When bytes last moved either way, for the idle timeout.
    let last = Progress::new();
    let io = Watched::both_ways(stream, last.clone());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(hub.config.http_idle_timeout)
        .max_buf_size(hub.config.http_max_header_bytes.max(8192))
        .max_headers(MAX_HEADERS)
        // One request per connection when refusing: the answer is the same every time.
        .keep_alive(refused.is_none());
    let http = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(http);
    let idle = hub.config.http_idle_timeout;
    let auth_timer = tokio::time::sleep_until(conn.auth_deadline.unwrap_or(conn.deadline));
    tokio::pin!(auth_timer);
    let ended = loop {
        tokio::select! {
            r = http.as_mut() => break Some(r),
            _ = tokio::time::sleep_until(last.last() + idle) => {
                if last.last() + idle <= Instant::now() {
                    debug!(%addr, "HTTP connection idle: closing");
                    break None;
                }
            }
            _ = cx.authenticated.notified(), if !slot.is_authenticated() => {
                // Back among the token holders, or closed when their places are full.
                if let Err(full) = slot.authenticate() {
                    hub.refusals.connection(addr, ConnRefusal::MaxConnections, &full.to_string());
                    break None;
                }
            }
            _ = &mut auth_timer, if conn.auth_deadline.is_some() && !slot.is_authenticated() => {
                let secs = hub.config.auth_timeout.as_secs_f64();
                hub.refusals.connection(
                    addr,
                    ConnRefusal::AuthTimeout,
                    &format!("no valid hub token within {secs} s on an HTTP connection: closing"),
                );
                break None;
            }
            _ = shutdown.wait_for(|s| *s) => break None,
        }
    };
    if ended.is_none() {
        http.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(CLOSE_GRACE, http.as_mut()).await;
    } else if let Some(Err(e)) = ended {
        debug!(%addr, "HTTP connection ended: {e}");
    }
}
