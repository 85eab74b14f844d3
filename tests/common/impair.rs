//! A TCP impairment proxy for tests: 127.0.0.1 port 0 in front of a hub (or any TCP server),
//! making the link between them as bad as a laptop's — added latency, a bandwidth cap, a stall
//! (both sockets held open, nothing forwarded: an SSH tunnel that died silently), an abrupt
//! cut (RST or close of every current connection) and a spell of refused connections — all
//! switchable at runtime through the [`Impair`] handle. The kernels these tests run on have
//! no netem, so the impairment lives in user space.
//!
//! It also counts the bytes it forwards each way, which is how `examples/wire_bytes.rs`
//! measures bytes on the wire (that example includes this file with `#[path]`, so it depends
//! on tokio alone).
//!
//! Shape: one accept task owns a `JoinSet` of connection tasks; each connection task owns
//! both sockets and runs two pumps (client → upstream = "up", upstream → client = "down").
//! A pump is a reader and a writer joined by a bounded channel: the reader stamps each chunk
//! with the time it was read, the writer holds it until `stamp + latency`, waits while the
//! link is stalled, takes tokens from the direction's bucket, then writes. Dropping the
//! handle aborts the accept task, which drops the `JoinSet` and so every connection.
//!
//! Bounds (what memory a misbehaving link can pin here):
//! - per connection and direction at most [`QUEUE_CHUNKS`] chunks of at most [`CHUNK`] bytes
//!   wait in the pump's channel (128 KiB) — when it is full the reader stops reading and TCP
//!   backpressure reaches the sender, exactly as on a slow link;
//! - at most [`MAX_CONNECTIONS`] connections at once; further ones are reset at accept.
#![allow(dead_code)]

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{mpsc, watch},
    task::{JoinHandle, JoinSet},
    time::Instant,
};

/// Largest chunk one read takes from a socket.
pub(crate) const CHUNK: usize = 8 << 10;
/// Chunks that may wait in one direction of one connection (so ≤ 128 KiB).
pub(crate) const QUEUE_CHUNKS: usize = 16;
/// Connections open through the proxy at once; more are reset at accept.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Largest write while a rate cap is on, so the cap is smooth rather than bursty.
const PIECE: usize = 2 << 10;
/// How long connecting to the upstream may take before the client is reset.
const UPSTREAM_CONNECT: Duration = Duration::from_secs(5);

/// How [`Impair::cut`] ends the current connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Abortive close (`SO_LINGER` 0): both peers see a reset, like a router that dropped the
    /// flow or a tunnel process that was killed.
    Reset,
    /// Ordinary close of both sockets (FIN; the kernel still sends RST where unread data was
    /// pending).
    Close,
}

/// The impairments in force. Every field applies to both directions.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Knobs {
    /// Added one-way delay: a chunk is forwarded no sooner than this after it was read.
    /// 150 ms makes a 300 ms round trip.
    pub latency: Duration,
    /// Bandwidth cap in bytes per second, each direction (shared by all connections, like a
    /// link's); `None` = uncapped.
    pub rate: Option<u64>,
    /// Nothing is forwarded while set; sockets stay open and new connections are accepted
    /// (and stall too), as through a tunnel whose far end has silently gone.
    pub stalled: bool,
    /// New connections are reset at accept until this time.
    refuse_until: Option<Instant>,
    /// Connections accepted before this many (their sequence numbers below it) are stalled,
    /// whatever `stalled` says: [`Impair::stall_current`].
    frozen_below: u64,
    /// Bumped by every cut; a connection ends when it differs from the value it was born with.
    cut_gen: u64,
    /// How the latest cut ends connections.
    cut_how: Option<Cut>,
}

/// Bytes and connections the proxy has seen, for assertions and for measuring.
#[derive(Debug, Default)]
struct Counters {
    up: AtomicU64,
    down: AtomicU64,
    accepted: AtomicU64,
    open: AtomicUsize,
}

/// A token bucket for one direction: reserve-then-sleep, so concurrent writers share the cap.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new() -> Self {
        Self {
            tokens: 0.0,
            at: Instant::now(),
        }
    }

    /// Takes `n` bytes' worth of tokens at `rate` bytes/s and says when they may be sent.
    /// The bucket holds at most 50 ms of traffic (at least one piece), so a cap cannot be
    /// beaten by saving up.
    fn reserve(&mut self, n: usize, rate: u64) -> Instant {
        let now = Instant::now();
        let rate = rate.max(1) as f64;
        let burst = (rate / 20.0).max(PIECE as f64);
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(burst) - n as f64;
        self.at = now;
        if self.tokens >= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(-self.tokens / rate)
        }
    }
}

/// What every connection task shares with the handle.
struct Shared {
    upstream: SocketAddr,
    counters: Counters,
    /// [up, down].
    buckets: [Mutex<Bucket>; 2],
}

/// A running proxy. Dropping it stops the accept task and every connection.
pub(crate) struct Impair {
    addr: SocketAddr,
    knobs: watch::Sender<Knobs>,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Drop for Impair {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Impair {
    /// A transparent proxy (no impairment yet) on 127.0.0.1 port 0 in front of `upstream`.
    pub(crate) async fn start(upstream: SocketAddr) -> io::Result<Impair> {
        Self::start_with(upstream, Knobs::default()).await
    }

    /// A proxy with `knobs` in force from the first byte.
    pub(crate) async fn start_with(upstream: SocketAddr, knobs: Knobs) -> io::Result<Impair> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(knobs);
        let shared = Arc::new(Shared {
            upstream,
            counters: Counters::default(),
            buckets: [Mutex::new(Bucket::new()), Mutex::new(Bucket::new())],
        });
        let accept = tokio::spawn(accept_loop(listener, rx, shared.clone()));
        Ok(Impair {
            addr,
            knobs: tx,
            shared,
            accept,
        })
    }

    /// The address clients connect to.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:PORT`, for a hub behind the proxy.
    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The impairments in force.
    pub(crate) fn knobs(&self) -> Knobs {
        *self.knobs.borrow()
    }

    /// Sets the added one-way delay (each direction).
    pub(crate) fn set_latency(&self, one_way: Duration) {
        self.knobs.send_modify(|k| k.latency = one_way);
    }

    /// Caps each direction at `bytes_per_sec` (`None` lifts the cap).
    pub(crate) fn set_rate(&self, bytes_per_sec: Option<u64>) {
        self.knobs.send_modify(|k| k.rate = bytes_per_sec);
    }

    /// Stops forwarding, holding every socket open, until [`Impair::resume`].
    pub(crate) fn stall(&self) {
        self.knobs.send_modify(|k| k.stalled = true);
    }

    /// Forwards again what was held during a stall, in order (and on the connections
    /// [`Impair::stall_current`] froze).
    pub(crate) fn resume(&self) {
        self.knobs.send_modify(|k| {
            k.stalled = false;
            k.frozen_below = 0;
        });
    }

    /// Stalls only the connections open now, holding them open; new ones work — the old
    /// tunnel died silently and a new one is up (a half-open connection the hub still
    /// counts, next to the client's fresh one).
    pub(crate) fn stall_current(&self) {
        let accepted = self.accepted();
        self.knobs.send_modify(|k| k.frozen_below = accepted);
    }

    /// Ends every current connection at once (both sockets). New connections are unaffected.
    pub(crate) fn cut(&self, how: Cut) {
        self.knobs.send_modify(|k| {
            k.cut_gen += 1;
            k.cut_how = Some(how);
        });
    }

    /// Resets every new connection at accept for `how_long` (a machine whose hub is
    /// unreachable). [`Impair::accept_again`] ends it early.
    pub(crate) fn refuse_for(&self, how_long: Duration) {
        let until = Instant::now() + how_long;
        self.knobs.send_modify(|k| k.refuse_until = Some(until));
    }

    /// Accepts new connections again.
    pub(crate) fn accept_again(&self) {
        self.knobs.send_modify(|k| k.refuse_until = None);
    }

    /// Bytes forwarded client → upstream so far.
    pub(crate) fn bytes_up(&self) -> u64 {
        self.shared.counters.up.load(Ordering::Relaxed)
    }

    /// Bytes forwarded upstream → client so far.
    pub(crate) fn bytes_down(&self) -> u64 {
        self.shared.counters.down.load(Ordering::Relaxed)
    }

    /// Connections accepted and forwarded so far (refused ones not counted).
    pub(crate) fn accepted(&self) -> u64 {
        self.shared.counters.accepted.load(Ordering::Relaxed)
    }

    /// Connections open through the proxy now.
    pub(crate) fn open_connections(&self) -> usize {
        self.shared.counters.open.load(Ordering::Relaxed)
    }
}

/// Closes `s` with a reset rather than a FIN.
fn reset(s: TcpStream) {
    // Zero linger never blocks on drop (the deprecation warns about non-zero values);
    // `set_zero_linger` needs a newer tokio than the workspace promises.
    #[allow(deprecated)]
    let _ = s.set_linger(Some(Duration::ZERO));
    drop(s);
}

async fn accept_loop(listener: TcpListener, knobs: watch::Receiver<Knobs>, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors, say: do not spin on it.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let now = *knobs.borrow();
        let refusing = now.refuse_until.is_some_and(|t| Instant::now() < t);
        if refusing || shared.counters.open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            reset(client);
            continue;
        }
        let seq = shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        shared.counters.open.fetch_add(1, Ordering::Relaxed);
        conns.spawn(connection(
            client,
            seq,
            now.cut_gen,
            knobs.clone(),
            shared.clone(),
        ));
    }
}

/// Decrements the open-connection count however the connection task ends (even aborted).
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(
    client: TcpStream,
    seq: u64,
    born: u64,
    mut knobs: watch::Receiver<Knobs>,
    shared: Arc<Shared>,
) {
    let _open = OpenGuard(shared.clone());
    let upstream =
        match tokio::time::timeout(UPSTREAM_CONNECT, TcpStream::connect(shared.upstream)).await {
            Ok(Ok(s)) => s,
            _ => return reset(client),
        };
    // Latency should be the proxy's, not Nagle's.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let c = &shared.counters;
    let [up_bucket, down_bucket] = &shared.buckets;
    let (up_knobs, down_knobs) = (knobs.clone(), knobs.clone());
    let how = tokio::select! {
        _ = async {
            tokio::join!(
                pump(&mut cr, &mut uw, up_knobs, up_bucket, &c.up, seq),
                pump(&mut ur, &mut cw, down_knobs, down_bucket, &c.down, seq),
            )
        } => None,
        cut = knobs.wait_for(|k| k.cut_gen != born) => cut.ok().and_then(|k| k.cut_how),
    };
    if how == Some(Cut::Reset)
        && let (Ok(client), Ok(upstream)) = (cr.reunite(cw), ur.reunite(uw))
    {
        reset(client);
        reset(upstream);
    }
}

/// Forwards `src` to `dst` through the knobs until `src` ends (then forwards the FIN) or
/// `dst` fails.
async fn pump(
    src: &mut OwnedReadHalf,
    dst: &mut OwnedWriteHalf,
    mut knobs: watch::Receiver<Knobs>,
    bucket: &Mutex<Bucket>,
    forwarded: &AtomicU64,
    seq: u64,
) {
    let open = move |k: &Knobs| !k.stalled && seq >= k.frozen_below;
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    let reader = async move {
        loop {
            let mut buf = vec![0; CHUNK];
            match src.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send((Instant::now(), buf)).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((read_at, buf)) = rx.recv().await {
            let latency = knobs.borrow().latency;
            tokio::time::sleep_until(read_at + latency).await;
            let piece = if knobs.borrow().rate.is_some() {
                PIECE
            } else {
                CHUNK
            };
            for part in buf.chunks(piece) {
                if knobs.wait_for(open).await.is_err() {
                    return;
                }
                let rate = knobs.borrow().rate;
                if let Some(rate) = rate {
                    let when = bucket
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .reserve(part.len(), rate);
                    tokio::time::sleep_until(when).await;
                    // A stall that began while waiting for tokens holds this piece too.
                    if knobs.wait_for(open).await.is_err() {
                        return;
                    }
                }
                if dst.write_all(part).await.is_err() {
                    return;
                }
                forwarded.fetch_add(part.len() as u64, Ordering::Relaxed);
            }
        }
        let _ = dst.shutdown().await;
    };
    tokio::join!(reader, writer);
}
