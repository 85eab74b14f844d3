//! The impairment proxy of `tests/common/impair.rs`, tested on its own in front of a plain
//! TCP echo server: it forwards faithfully, adds latency, caps the rate, holds data during a
//! stall until told to resume, cuts and refuses connections, and stops when dropped.
//!
//! Timing is asserted only as lower bounds the proxy guarantees by construction (a delay
//! cannot be shorter than the one added; a capped transfer cannot be faster than the cap) and
//! as "nothing arrived while stalled"; neither can fail on a slow, loaded machine.

use crate::common;

use std::{
    io::ErrorKind,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use common::{
    hub::WAIT,
    impair::{Cut, Impair},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
    time::Instant,
};

/// A TCP echo server on 127.0.0.1:0. Reports each connection's end on `ended`.
struct Echo {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    ended: mpsc::UnboundedReceiver<std::io::Result<()>>,
    task: JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Echo {
    async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let (tx, ended) = mpsc::unbounded_channel();
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                conns.spawn(async move {
                    let mut buf = vec![0; 4096];
                    let end = loop {
                        match s.read(&mut buf).await {
                            Ok(0) => break Ok(()),
                            Ok(n) => {
                                if let Err(e) = s.write_all(&buf[..n]).await {
                                    break Err(e);
                                }
                            }
                            Err(e) => break Err(e),
                        }
                    };
                    let _ = tx.send(end);
                });
            }
        });
        Echo {
            addr,
            accepted,
            ended,
            task,
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn connect(p: &Impair) -> TcpStream {
    let s = tokio::time::timeout(WAIT, TcpStream::connect(p.addr()))
        .await
        .expect("connect in time")
        .expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

/// A connection through `p` that has carried one echoed byte (so it is fully set up).
async fn echoing(p: &Impair) -> TcpStream {
    let mut s = connect(p).await;
    s.write_all(b"x").await.unwrap();
    assert_eq!(read_n(&mut s, 1).await, b"x");
    s
}

/// Reads exactly `n` bytes within [`WAIT`].
async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    tokio::time::timeout(WAIT, s.read_exact(&mut buf))
        .await
        .expect("data in time")
        .expect("read");
    buf
}

/// How the next read on `s` ends (bytes, EOF or an error), failing the test after [`WAIT`]
/// with "`what` in time".
async fn next_read(s: &mut TcpStream, what: &str) -> std::io::Result<usize> {
    let mut buf = [0; 16];
    tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{what} in time"))
}

/// Asserts that nothing arrives on `s` (and it stays open) for `ms` milliseconds.
async fn assert_silent(s: &mut TcpStream, ms: u64) {
    let mut buf = vec![0; 4096];
    match tokio::time::timeout(Duration::from_millis(ms), s.read(&mut buf)).await {
        Err(_) => {}
        Ok(Ok(0)) => panic!("the connection closed"),
        Ok(Ok(n)) => panic!("{n} bytes arrived: {:?}", &buf[..n]),
        Ok(Err(e)) => panic!("read failed: {e}"),
    }
}

/// Polls `f` until it holds, failing the test after [`WAIT`].
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    common::eventually(
        what,
        WAIT,
        async || if f() { Ok(()) } else { Err("not yet".into()) },
    )
    .await
}

/// A recognisable pattern: byte i is i mod 251 (a prime, so chunk boundaries never align).
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn forwards_faithfully_and_counts_bytes() {
    let echo = Echo::start().await;
    let p = Impair::start(echo.addr).await.unwrap();
    let mut s = connect(&p).await;
    let data = pattern(100_000);
    let (mut r, mut w) = s.split();
    let (got, _) = tokio::join!(
        async {
            let mut buf = vec![0; data.len()];
            r.read_exact(&mut buf).await.unwrap();
            buf
        },
        async { w.write_all(&data).await.unwrap() }
    );
    assert!(got == data, "echo differs from what was sent");
    assert_eq!(p.bytes_up(), 100_000);
    until("the down count", || p.bytes_down() == 100_000).await;
    assert_eq!((p.accepted(), p.open_connections()), (1, 1));
}

#[tokio::test]
async fn latency_is_added_each_way_and_order_kept() {
    let echo = Echo::start().await;
    let p = Impair::start(echo.addr).await.unwrap();
    p.set_latency(Duration::from_millis(150));
    let mut s = connect(&p).await;
    let t = Instant::now();
    s.write_all(b"ping").await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, b"ping");
    let rtt = t.elapsed();
    assert!(rtt >= Duration::from_millis(300), "round trip {rtt:?}");
    // Many small writes in flight at once come back whole and in order.
    let mut sent = Vec::new();
    for i in 0..50u8 {
        let msg = [b'<', i, b'>'];
        s.write_all(&msg).await.unwrap();
        sent.extend_from_slice(&msg);
    }
    assert_eq!(read_n(&mut s, sent.len()).await, sent);
}

#[tokio::test]
async fn rate_cap_bounds_throughput() {
    let echo = Echo::start().await;
    let p = Impair::start(echo.addr).await.unwrap();
    let rate = 32 << 10;
    p.set_rate(Some(rate));
    let mut s = connect(&p).await;
    let data = pattern(48 << 10);
    let t = Instant::now();
    let (mut r, mut w) = s.split();
    let (got, _) = tokio::join!(
        async {
            let mut buf = vec![0; data.len()];
            tokio::time::timeout(WAIT, r.read_exact(&mut buf))
                .await
                .expect("capped transfer finished in time")
                .unwrap();
            buf
        },
        async { w.write_all(&data).await.unwrap() }
    );
    let took = t.elapsed();
    assert!(got == data, "capped transfer corrupted or reordered data");
    // Each direction may start with one 2 KiB piece of burst; the rest must wait for tokens.
    let floor = Duration::from_secs_f64((data.len() - (2 << 10)) as f64 / rate as f64);
    assert!(took >= floor, "48 KiB at 32 KiB/s took only {took:?}");
}

#[tokio::test]
async fn a_stall_forwards_nothing_until_resumed() {
    let echo = Echo::start().await;
    let p = Impair::start(echo.addr).await.unwrap();
    let mut s = echoing(&p).await;
    let up = p.bytes_up();

    p.stall();
    s.write_all(b"during-1").await.unwrap();
    // A connection made during the stall is accepted, and stalls too.
    let mut late = connect(&p).await;
    late.write_all(b"late").await.unwrap();
    assert_silent(&mut s, 400).await;
    assert_silent(&mut late, 100).await;
    s.write_all(b"during-2").await.unwrap();
    assert_silent(&mut s, 100).await;
    assert_eq!(
        p.bytes_up(),
        up,
        "bytes reached the upstream during the stall"
    );
    assert_eq!(p.open_connections(), 2, "the stall closed a connection");

    p.resume();
    assert_eq!(read_n(&mut s, 16).await, b"during-1during-2");
    assert_eq!(read_n(&mut late, 4).await, b"late");
}

#[tokio::test]
async fn a_reset_cut_resets_both_sides_and_new_connections_work() {
    let mut echo = Echo::start().await;
    let p = Impair::start(echo.addr).await.unwrap();
    let mut s = echoing(&p).await;

    p.cut(Cut::Reset);
    let r = next_read(&mut s, "the cut reached the client").await;
    assert_eq!(
        r.map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionReset),
        "client side"
    );
    let server_side = tokio::time::timeout(WAIT, echo.ended.recv())
        .await
        .expect("the cut reached the server")
        .unwrap();
    assert_eq!(
        server_side.map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionReset),
        "server side"
    );
    until("no open connection", || p.open_connections() == 0).await;

    let mut again = connect(&p).await;
    again.write_all(b"y").await.unwrap();
    assert_eq!(read_n(&mut again, 1).await, b"y");
}

#[tokio::test]
async fn a_close_cut_ends_connections_with_eof() {
    let echo = Echo::start().await;
    let p = Impair::start(echo.addr).await.unwrap();
    let mut s = echoing(&p).await;
    p.cut(Cut::Close);
    let n = next_read(&mut s, "the cut reached the client")
        .await
        .expect("an orderly close, not a reset");
    assert_eq!(n, 0);
}

#[tokio::test]
async fn refusing_resets_new_connections_until_accepting_again() {
    let echo = Echo::start().await;
    let p = Impair::start(echo.addr).await.unwrap();
    p.refuse_for(Duration::from_secs(600));
    // The kernel completes the handshake; the proxy then resets without reaching upstream.
    if let Ok(Ok(mut s)) = tokio::time::timeout(WAIT, TcpStream::connect(p.addr())).await {
        let r = next_read(&mut s, "the refusal").await;
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
    assert_eq!((echo.accepted(), p.accepted()), (0, 0));

    p.accept_again();
    let mut s = connect(&p).await;
    s.write_all(b"z").await.unwrap();
    assert_eq!(read_n(&mut s, 1).await, b"z");
    assert_eq!(echo.accepted(), 1);
}

#[tokio::test]
async fn dropping_the_handle_stops_every_task() {
    let echo = Echo::start().await;
    let p = Impair::start(echo.addr).await.unwrap();
    let addr = p.addr();
    let mut s = echoing(&p).await;
    drop(p);
    // The connection ends…
    let r = next_read(&mut s, "the end of the connection").await;
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    // …and the listener is gone.
    common::eventually(
        "the proxy's listener is gone",
        WAIT,
        async || match TcpStream::connect(addr).await {
            Ok(_) => Err("it still accepts".into()),
            Err(_) => Ok(()),
        },
    )
    .await;
}
