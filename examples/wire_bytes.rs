//! `wire_bytes`: bytes on the wire per agent message and per idle minute, through the real
//! hub, over `ws://` and `wss://` — and what WebSocket compression (permessage-deflate,
//! RFC 7692) would make of the same frames.
//!
//! Setup: the hub runs in this process (the `hub` library, default limits, a temporary data
//! dir; for `wss://` a throwaway CA and certificate made with rcgen). Two clients, A and B,
//! connect as the bridge does (`mcp_bridge::dial::connect_with`: the bridge's own rustls
//! configuration) — each through its own transparent impairment proxy
//! (`tests/common/impair.rs`), which counts the bytes it forwards: WebSocket frames plus, on
//! `wss://`, TLS records. TCP/IP headers are not counted (see docs/BENCHMARKS.md).
//!
//! Per message: A sends the bridge's `message` frame (with `key` and `rid`) to B; the counts
//! are A's uplink (the frame), A's downlink (the `sent` ack) and B's downlink (the pushed
//! `message`). The corpus is a small set of typical agent messages (paths, commit ids, short
//! prose, one handoff note).
//!
//! Idle: the hub's WebSocket ping/pong and the bridge's application `ping`/`pong`, each
//! measured over several exchanges (hub heartbeat shortened to 1 s for this, the counting
//! window running from one received ping to a later one so every exchange is whole), then
//! scaled to a minute at the default intervals (hub 25 s, bridge 20 s).
//!
//! Compression: tungstenite 0.30 (the version we lock, and the latest) has no
//! permessage-deflate, so the compressed figures are computed, not measured: each frame's
//! payload is deflated exactly as RFC 7692 prescribes (raw DEFLATE, 32 KiB window, sync flush,
//! the trailing `00 00 ff ff` removed), once with context takeover (one compressor per
//! direction per connection — the RFC's default) and once without, and the measured wire
//! bytes are corrected by the payload and frame-header difference. TLS adds the same record
//! overhead either way (every frame here fits one record). Control frames (ping/pong) are
//! never compressed.
//!
//! Run: `cargo run --release --example wire_bytes` (a few seconds).

#[path = "../tests/common/impair.rs"]
mod impair;

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use flate2::{Compress, Compression, FlushCompress};
use futures_util::{SinkExt, StreamExt};
use impair::Impair;
use mcp_bridge::dial::{ClientAuth, HubSocket, connect_with};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use relay_proto::wire::{Bare, ClientFrame, PresenceMode, Register, RequestId, SendMessage};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

/// Typical agent messages: what sessions tell each other while working.
const CORPUS: &[&str] = &[
    "Tests pass on main @ 3f2c1a9 — cargo test: 412 passed, 0 failed. Taking the parser next.",
    "Found the bug: src/auth/session.rs:142 compares the token with == instead of a constant-time compare. Fix is 9b1e0c4 on branch fix/auth-timing.",
    "who is working on the parser?",
    "Me — crates/parser/src/lexer.rs, branch feat/lexer-unicode, WIP commit a41d2e7. Should be done in ~30 min.",
    "ok, thanks",
    "CC-2: can you review PR #87? hub/src/store/sqlite.rs (+214 −37): the migration adds an index on (sender, key).",
    "Reviewed #87: one issue — the index must be created before the backfill in migrate_v4(), otherwise the UPDATE at sqlite.rs:388 scans the whole table. Otherwise LGTM.",
    "Build broken on CI: error[E0382]: borrow of moved value: `frame` at mcp-bridge/src/actions.rs:262:31. Reverting 77c0ab2 unless someone objects in 5 min.",
    "Don't revert, I have the fix: clone before the first request (5d0e9f1, pushed to main).",
    "CI green again on 5d0e9f1.",
    "Done with the migration. Left for you: frontend/src/components/Inbox.tsx still calls /api/v1/messages; switch to /api/v2/messages and drop the polling loop (docs/API.md#streaming).",
    "On it.",
    "FYI the staging DB was reset at 14:05 UTC; anything you wrote there before that is gone.",
    "Benchmark after the batching change: 48.2k msg/s → 61.7k msg/s on the direct scenario, p99 latency 3.1 ms → 2.4 ms (docs/BENCHMARKS.md, run 2026-11-23).",
    "Can someone with the laptop on the VPN check whether https://internal.example/build/1432 finished?",
    "It finished: artifacts in /srv/builds/1432/, sha256 of claude-relay-x86_64-linux.tar.gz is 0c4f3b9a1e7d5c2b8a6f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b.",
    "Heads up: I'm rebasing feat/outbox onto main (conflicts in mcp-bridge/src/hub_client.rs and tests/common/mod.rs). Please don't push to that branch for 10 minutes.",
    "Rebased and force-pushed feat/outbox @ e82c7d0.",
    "Question: should relay_status show the outbox's oldest age in seconds or as '5 min ago'? I'd go with the latter.",
    "Latter, agreed.",
    "Handing over the wire-bytes work.\n\nWhat: measure bytes per message and per idle minute, with and without compression.\nWhere: repo claude-relay, branch netbad, commit 45dd352 (clean tree).\nDone: impairment proxy (tests/common/impair.rs) with its tests; outbox module (mcp-bridge/src/outbox/) with 12 tests.\nLeft: 1) examples/wire_bytes.rs — corpus and counting through the proxy; 2) the BENCHMARKS.md section; 3) report what enabling deflate needs on both sides.\nNotes: tungstenite 0.30 has no permessage-deflate; compute the compressed sizes with flate2 (raw deflate, sync flush). Don't touch hub_client.rs.",
    "Got it, continuing from 45dd352.",
    "tests/bridge_reconnect.rs::reconnects_after_hub_restart is flaky on the 2-core box (failed 1 of 20); looks like the 3 s connecting grace. Not touching it, just noting.",
    "src/cli/hub_cmd.rs:77 still says RELAY_HOST defaults to 0.0.0.0 in the help text; it is 127.0.0.1. Fixed in 1b2c3d4.",
    "Merged netbad into main @ 6e5f4a3. Full suite: 287 passed, 0 failed, 142 s.",
    "Stopping for today. Open: tasks/19 (handoff bundle size cap), tasks/21 (console auth). Both unclaimed.",
    "I'll take tasks/19.",
    "Permission prompt on CC-3 waiting for a human: Bash(rm -rf target/) — not mine to answer.",
    "ping me when the hub restart is done",
    "Hub restarted (epoch 3ae061b7 → 91c4d2f0 was NOT a reset: same store, new process). All 6 sessions reconnected within 2 s.",
];

/// One side of the measurement: a client socket behind its own counting proxy.
struct Client {
    ws: HubSocket,
    proxy: Impair,
}

impl Client {
    async fn connect(hub: SocketAddr, scheme: &str, auth: &ClientAuth, id: &str) -> Result<Self> {
        let proxy = Impair::start(hub).await?;
        let url = format!("{scheme}://{}", proxy.addr());
        let ws = connect_with(&url, auth, Duration::from_secs(10))
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let mut c = Client { ws, proxy };
        c.send(&ClientFrame::Register(Register {
            client_id: Some(id.to_string()),
            presence: Some(PresenceMode::None),
            ..Default::default()
        }))
        .await?;
        let reg = c.next_text().await?;
        if !reg.contains("\"registered\"") {
            bail!("{id} was not registered: {reg}");
        }
        Ok(c)
    }

    async fn send(&mut self, frame: &ClientFrame) -> Result<String> {
        let text = serde_json::to_string(frame)?;
        self.ws.send(Message::text(text.clone())).await?;
        Ok(text)
    }

    /// The next frame `pick` accepts (tungstenite answers pings while we read).
    async fn next_where<T>(&mut self, pick: impl Fn(Message) -> Option<T>) -> Result<T> {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .context("no frame from the hub within 10 s")?
                .context("the hub closed the connection")??;
            if let Some(t) = pick(m) {
                return Ok(t);
            }
        }
    }

    /// The next text frame.
    async fn next_text(&mut self) -> Result<String> {
        self.next_where(|m| match m {
            Message::Text(t) => Some(t.to_string()),
            _ => None,
        })
        .await
    }

    /// Waits for the next WebSocket ping from the hub.
    async fn next_ping(&mut self) -> Result<()> {
        self.next_where(|m| matches!(m, Message::Ping(_)).then_some(()))
            .await
    }
}

/// A hub serving `listener` in this process until `stop` fires.
async fn start_hub(
    dir: &Path,
    tls: Option<hub::TlsFiles>,
    heartbeat: Duration,
) -> Result<(SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut config = hub::HubConfig::new(dir);
    config.tls = tls;
    config.heartbeat_interval = heartbeat;
    let hub = hub::Hub::open(config)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = hub
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok((addr, stop, task))
}

/// A CA and a server certificate for 127.0.0.1 in `dir`; returns (hub TLS files, CA path).
fn make_pki(dir: &Path) -> Result<(hub::TlsFiles, std::path::PathBuf)> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "wire_bytes CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;
    let files = hub::TlsFiles {
        cert: dir.join("hub.crt"),
        key: dir.join("hub.key"),
    };
    std::fs::write(&files.cert, cert.pem())?;
    std::fs::write(&files.key, key.serialize_pem())?;
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem())?;
    Ok((files, ca_path))
}

/// Bytes of a WebSocket frame header for a payload of `len` (client frames are masked).
fn header(len: usize, masked: bool) -> usize {
    let ext = match len {
        0..=125 => 0,
        126..=65535 => 2,
        _ => 8,
    };
    2 + ext + if masked { 4 } else { 0 }
}

/// permessage-deflate for one direction of one connection.
struct Deflater {
    c: Compress,
    takeover: bool,
}

impl Deflater {
    fn new(takeover: bool) -> Self {
        Self {
            c: Compress::new(Compression::default(), false),
            takeover,
        }
    }

    /// The compressed payload length of one message (RFC 7692 §7.2.1).
    fn len(&mut self, payload: &[u8]) -> usize {
        if !self.takeover {
            self.c.reset();
        }
        let mut out = Vec::with_capacity(payload.len() + 64);
        let start_in = self.c.total_in();
        loop {
            let consumed = (self.c.total_in() - start_in) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity());
            }
            self.c
                .compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
                .expect("deflate");
            let done = (self.c.total_in() - start_in) as usize == payload.len();
            if done && out.ends_with(&[0, 0, 0xff, 0xff]) && out.len() < out.capacity() {
                break;
            }
        }
        out.len() - 4
    }
}

/// One frame kind's books over a run: payload bytes, measured wire bytes, and the wire
/// bytes the same frames would take deflated (with / without context takeover).
#[derive(Default)]
struct Books {
    frames: usize,
    payload: usize,
    wire: u64,
    wire_takeover: u64,
    wire_fresh: u64,
}

impl Books {
    /// Adds one frame: its payload, the bytes the proxy counted for it, and the two
    /// compressors of its stream.
    fn add(&mut self, payload: &str, wire: u64, masked: bool, streams: &mut [Deflater; 2]) {
        let p = payload.as_bytes();
        let raw_frame = (header(p.len(), masked) + p.len()) as u64;
        let framing = wire.saturating_sub(raw_frame); // TLS records (0 on ws://)
        let [takeover, fresh] = streams;
        let (t, f) = (takeover.len(p), fresh.len(p));
        self.frames += 1;
        self.payload += p.len();
        self.wire += wire;
        self.wire_takeover += framing + (header(t, masked) + t) as u64;
        self.wire_fresh += framing + (header(f, masked) + f) as u64;
    }

    fn per_frame(&self, v: u64) -> f64 {
        v as f64 / self.frames.max(1) as f64
    }
}

/// Two compressors (context takeover, none) for one stream.
fn streams() -> [Deflater; 2] {
    [Deflater::new(true), Deflater::new(false)]
}

/// The corpus sent A → B once: books for A's `message`, A's `sent` ack, B's pushed `message`.
async fn measure_messages(hub: SocketAddr, scheme: &str, auth: &ClientAuth) -> Result<[Books; 3]> {
    let mut a = Client::connect(hub, scheme, auth, "A").await?;
    let mut b = Client::connect(hub, scheme, auth, "B").await?;
    let mut books: [Books; 3] = Default::default();
    let mut z = [streams(), streams(), streams()];
    let prefix = format!(
        "b{:x}-{:x}",
        std::process::id(),
        relay_proto::time::now_ms()
    );
    for (i, content) in CORPUS.iter().enumerate() {
        let (up0, ack0, push0) = (
            a.proxy.bytes_up(),
            a.proxy.bytes_down(),
            b.proxy.bytes_down(),
        );
        let frame = ClientFrame::Message(SendMessage {
            to: Some("B".into()),
            content: content.to_string(),
            key: Some(format!("{prefix}-{}", i + 1)),
            reply_to: None,
            rid: Some(RequestId::Int(i as i64 + 1)),
        });
        let sent = a.send(&frame).await?;
        let ack = a.next_text().await?;
        let push = b.next_text().await?;
        if !ack.contains("\"sent\"") || !push.contains("\"message\"") {
            bail!("unexpected frames: {ack} / {push}");
        }
        // Each count is complete here: the hub answered (so it had the whole frame) and
        // each client read its frame (so the proxy had forwarded all of it).
        books[0].add(&sent, a.proxy.bytes_up() - up0, true, &mut z[0]);
        books[1].add(&ack, a.proxy.bytes_down() - ack0, false, &mut z[1]);
        books[2].add(&push, b.proxy.bytes_down() - push0, false, &mut z[2]);
    }
    Ok(books)
}

/// Idle traffic: bytes per hub heartbeat (WebSocket ping + pong) and per bridge `ping`
/// exchange (JSON ping + pong), the latter also deflated with context takeover.
struct Idle {
    hub_exchange: f64,
    app_exchange: f64,
    app_exchange_deflated: f64,
}

const IDLE_EXCHANGES: u32 = 8;

async fn measure_idle(
    fast_heartbeat_hub: SocketAddr,
    quiet_hub: SocketAddr,
    scheme: &str,
    auth: &ClientAuth,
) -> Result<Idle> {
    // From one received ping to a later one: N pings down and the N pongs of the pings
    // before, each whole.
    let mut c = Client::connect(fast_heartbeat_hub, scheme, auth, "I").await?;
    c.next_ping().await?;
    let before = c.proxy.bytes_up() + c.proxy.bytes_down();
    for _ in 0..IDLE_EXCHANGES {
        c.next_ping().await?;
    }
    let hub_exchange =
        (c.proxy.bytes_up() + c.proxy.bytes_down() - before) as f64 / f64::from(IDLE_EXCHANGES);

    let mut c = Client::connect(quiet_hub, scheme, auth, "J").await?;
    let (mut up, mut down) = (Books::default(), Books::default());
    let (mut zu, mut zd) = (streams(), streams());
    for _ in 0..IDLE_EXCHANGES {
        let (u0, d0) = (c.proxy.bytes_up(), c.proxy.bytes_down());
        let ping = c.send(&ClientFrame::Ping(Bare::default())).await?;
        let pong = c.next_text().await?;
        up.add(&ping, c.proxy.bytes_up() - u0, true, &mut zu);
        down.add(&pong, c.proxy.bytes_down() - d0, false, &mut zd);
    }
    Ok(Idle {
        hub_exchange,
        app_exchange: up.per_frame(up.wire) + down.per_frame(down.wire),
        app_exchange_deflated: up.per_frame(up.wire_takeover) + down.per_frame(down.wire_takeover),
    })
}

/// Default intervals: the hub pings every 25 s, the bridge every 20 s.
const HUB_PINGS_PER_MIN: f64 = 60.0 / 25.0;
const BRIDGE_PINGS_PER_MIN: f64 = 60.0 / 20.0;

fn report(scheme: &str, books: &[Books; 3], idle: &Idle) {
    let names = [
        "`message` A→hub",
        "`sent` ack hub→A",
        "`message` push hub→B",
    ];
    let pct = |new: f64, old: f64| 100.0 * (1.0 - new / old);
    println!("\n### {scheme}:// — {} messages", books[0].frames);
    println!(
        "| frame | payload B | wire B now | deflate, context takeover | deflate, no takeover |"
    );
    println!("|---|---:|---:|---:|---:|");
    let (mut now, mut tk, mut fr, mut pl) = (0.0, 0.0, 0.0, 0.0);
    for (b, name) in books.iter().zip(names) {
        let (w, t, f) = (
            b.per_frame(b.wire),
            b.per_frame(b.wire_takeover),
            b.per_frame(b.wire_fresh),
        );
        let p = b.per_frame(b.payload as u64);
        println!(
            "| {name} | {p:.0} | {w:.0} | {t:.0} (−{:.0} %) | {f:.0} (−{:.0} %) |",
            pct(t, w),
            pct(f, w)
        );
        (now, tk, fr, pl) = (now + w, tk + t, fr + f, pl + p);
    }
    println!(
        "| **per message, all three** | {pl:.0} | **{now:.0}** | **{tk:.0}** (−{:.0} %) | {fr:.0} (−{:.0} %) |",
        pct(tk, now),
        pct(fr, now)
    );
    let per_min = idle.hub_exchange * HUB_PINGS_PER_MIN + idle.app_exchange * BRIDGE_PINGS_PER_MIN;
    let per_min_deflated =
        idle.hub_exchange * HUB_PINGS_PER_MIN + idle.app_exchange_deflated * BRIDGE_PINGS_PER_MIN;
    println!(
        "\nidle: hub heartbeat (ping+pong) {:.0} B, bridge ping+pong {:.0} B ({:.0} B deflated) \
         → per idle minute at defaults: {per_min:.0} B now, {per_min_deflated:.0} B with deflate",
        idle.hub_exchange, idle.app_exchange, idle.app_exchange_deflated
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (tls, ca) = make_pki(dir.path())?;
    let plain = ClientAuth::default();
    let with_ca = ClientAuth {
        ca_cert: Some(ca),
        ..Default::default()
    };
    let content: usize = CORPUS.iter().map(|c| c.len()).sum();
    println!(
        "corpus: {} messages, {:.0} B of text on average (shortest {}, longest {})",
        CORPUS.len(),
        content as f64 / CORPUS.len() as f64,
        CORPUS.iter().map(|c| c.len()).min().unwrap_or(0),
        CORPUS.iter().map(|c| c.len()).max().unwrap_or(0),
    );
    for (scheme, tls, auth) in [("ws", None, &plain), ("wss", Some(tls), &with_ca)] {
        let (quiet, stop_quiet, quiet_task) = start_hub(
            &dir.path().join(format!("{scheme}-quiet")),
            tls.clone(),
            Duration::from_secs(3600),
        )
        .await?;
        let (fast, stop_fast, fast_task) = start_hub(
            &dir.path().join(format!("{scheme}-fast")),
            tls,
            Duration::from_secs(1),
        )
        .await?;
        let books = measure_messages(quiet, scheme, auth).await?;
        let idle = measure_idle(fast, quiet, scheme, auth).await?;
        report(scheme, &books, &idle);
        let _ = (stop_quiet.send(()), stop_fast.send(()));
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            let _ = quiet_task.await;
            let _ = fast_task.await;
        })
        .await;
    }
    Ok(())
}
