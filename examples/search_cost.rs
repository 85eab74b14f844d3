//! `search_cost`: what full-text search costs (docs/BENCHMARKS.md, "Search").
//!
//! Each round starts the release hub binary on a fresh temporary data dir — alternately with
//! the search index (the default) and with `--no-search-index` — and stores `--messages`
//! messages through it: 4 clients in a ring (i → i+1), each with `--window` messages in
//! flight, every message delivered live. It reports, per mode and as a ratio of the medians
//! of the same invocation:
//!
//! - **hub CPU per 1,000 stored and delivered messages** (user + system time of the hub
//!   process from `/proc/PID/stat`, over the fill);
//! - **store size** (`relay.db` and the index's `search.db`, with any WAL, after a clean
//!   shutdown).
//!
//! With the index on it then times `search` round trips over the full store (one client,
//! one query at a time, 200 per kind): a word in one message, a word in ~1 % of them, a word
//! in every one, a two-word phrase, and a prefix.
//!
//! Message bodies are agent-like text: one of a few dozen sentences about code, plus a few
//! words drawn from a 2,000-word vocabulary and a unique token, so word frequencies range
//! from one message to all of them.
//!
//! Run: `cargo build --release && cargo run --release --example search_cost` (about a
//! minute; `--messages`, `--rounds`, `--window`, `--hub-bin`).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use mcp_bridge::dial::{ClientAuth, HubSocket, connect_with};
use relay_proto::{
    wire::{ClientFrame, PresenceMode, Register, SendMessage},
    wire_search::Search,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tokio_tungstenite::tungstenite::Message;

/// Sentences agents send each other (the phrase query is taken from one of them).
const SENTENCES: &[&str] = &[
    "tests pass on main, taking the parser next",
    "found the bug in the auth migration: the token compare is not constant time",
    "can you review the pull request for the store schema",
    "build broken on CI after the lexer change, reverting unless someone objects",
    "the deploy to staging is green, metrics look normal",
    "who owns the websocket reconnect logic",
    "handing over the retention work, the brief is in the task",
    "rebased on main and the conflicts in router are resolved",
];

const CLIENTS: usize = 4;

struct Args {
    messages: usize,
    rounds: usize,
    window: usize,
    hub_bin: PathBuf,
}

fn args() -> Result<Args> {
    let mut a = Args {
        messages: 100_000,
        rounds: 3,
        window: 64,
        hub_bin: default_hub_bin()?,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--messages" => a.messages = value()?.parse()?,
            "--rounds" => a.rounds = value()?.parse()?,
            "--window" => a.window = value()?.parse()?,
            "--hub-bin" => a.hub_bin = value()?.into(),
            other => bail!("unknown flag {other}; see the top of examples/search_cost.rs"),
        }
    }
    Ok(a)
}

/// `target/release/claude-relay` next to this example's own binary.
fn default_hub_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("example binary has no target dir")?;
    Ok(dir.join("claude-relay"))
}

/// A tiny deterministic generator (xorshift), so every round stores the same text.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A pronounceable word for vocabulary entry `n` (`n < 2000`).
fn vocab(n: u64) -> String {
    const C: &[u8] = b"bdfgklmnprstvz";
    const V: &[u8] = b"aeiou";
    let mut w = String::new();
    let mut n = n + 7;
    for _ in 0..3 {
        w.push(C[(n % C.len() as u64) as usize] as char);
        n /= C.len() as u64;
        w.push(V[(n % V.len() as u64) as usize] as char);
        n /= V.len() as u64;
    }
    w
}

fn body(i: usize, rng: &mut Rng) -> String {
    let mut s = SENTENCES[i % SENTENCES.len()].to_string();
    for _ in 0..4 {
        s.push(' ');
        s.push_str(&vocab(rng.next() % 2000));
    }
    s.push_str(&format!(" ticket{i}"));
    s
}

struct HubProc {
    child: Child,
    url: String,
    data: tempfile::TempDir,
}

async fn start_hub(bin: &Path, index: bool) -> Result<HubProc> {
    let data = tempfile::Builder::new().prefix("search-cost-").tempdir()?;
    let mut cmd = Command::new(bin);
    cmd.args(["hub", "--host", "127.0.0.1", "--port", "0", "--data-dir"])
        .arg(data.path())
        .env_remove("RELAY_NO_SEARCH_INDEX")
        .env_remove("RELAY_SYNC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if !index {
        cmd.arg("--no-search-index");
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {} (cargo build --release first)", bin.display()))?;
    let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let url = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(at) = line.find("listening on ") {
                return Ok(line[at + "listening on ".len()..].trim().to_string());
            }
        }
        bail!("the hub exited before listening")
    })
    .await
    .context("the hub did not start in time")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(HubProc { child, url, data })
}

/// User + system CPU of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("odd stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}

async fn connect(url: &str, id: &str) -> Result<HubSocket> {
    let mut ws = connect_with(url, &ClientAuth::default(), Duration::from_secs(10)).await?;
    let reg = ClientFrame::Register(Register {
        client_id: Some(id.to_string()),
        presence: Some(PresenceMode::None),
        ..Default::default()
    });
    // The name may still be held by a connection of the last phase that is closing.
    for _ in 0..100 {
        ws.send(Message::text(serde_json::to_string(&reg)?)).await?;
        loop {
            if let Message::Text(t) = next(&mut ws).await? {
                if t.contains("\"registered\"") {
                    return Ok(ws);
                }
                if t.contains("\"register_rejected\"") {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{id} could not register")
}

async fn next(ws: &mut HubSocket) -> Result<Message> {
    Ok(tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .context("no frame from the hub in 30 s")?
        .context("the hub closed the connection")??)
}

/// Client `me` sends `bodies` to `to` with `window` in flight, and reads until every ack and
/// every message from its own sender (`expect` of them) has arrived.
async fn ring_client(
    mut ws: HubSocket,
    to: String,
    bodies: Vec<String>,
    expect: usize,
    window: usize,
) -> Result<()> {
    let (mut sent, mut acked, mut got) = (0usize, 0usize, 0usize);
    let total = bodies.len();
    let mut bodies = bodies.into_iter();
    while acked < total || got < expect {
        while sent < total && sent - acked < window {
            let f = ClientFrame::Message(SendMessage {
                to: Some(to.clone()),
                content: bodies.next().context("body")?,
                ..Default::default()
            });
            ws.feed(Message::text(serde_json::to_string(&f)?)).await?;
            sent += 1;
        }
        ws.flush().await?;
        if let Message::Text(t) = next(&mut ws).await? {
            if t.starts_with(r#"{"type":"sent""#) {
                acked += 1;
            } else if t.starts_with(r#"{"type":"message""#) {
                got += 1;
            } else if t.contains(r#""type":"error""#) {
                bail!("the hub refused a message: {t}");
            }
        }
    }
    Ok(())
}

/// The query text of the i-th query of one kind.
type QueryOf = Box<dyn Fn(usize) -> String>;

struct Round {
    cpu_ms_per_1k: f64,
    store_bytes: u64,
    queries: Vec<(&'static str, Vec<f64>)>,
}

async fn round(a: &Args, index: bool) -> Result<Round> {
    let mut hub = start_hub(&a.hub_bin, index).await?;
    let pid = hub.child.id().context("hub pid")?;
    let ids: Vec<String> = (0..CLIENTS).map(|i| format!("C{i}")).collect();
    let mut socks = Vec::new();
    for id in &ids {
        socks.push(connect(&hub.url, id).await?);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let per = a.messages / CLIENTS;
    let mut work = Vec::new();
    for (i, ws) in socks.into_iter().enumerate() {
        let bodies: Vec<String> = (0..per).map(|k| body(k * CLIENTS + i, &mut rng)).collect();
        work.push((ws, ids[(i + 1) % CLIENTS].clone(), bodies));
    }
    let before = cpu_seconds(pid)?;
    let tasks: Vec<_> = work
        .into_iter()
        .map(|(ws, to, bodies)| tokio::spawn(ring_client(ws, to, bodies, per, a.window)))
        .collect();
    for t in tasks {
        t.await??;
    }
    let cpu = cpu_seconds(pid)? - before;
    let cpu_ms_per_1k = cpu * 1000.0 / (per * CLIENTS) as f64 * 1000.0;

    let mut queries = Vec::new();
    if index {
        let mut ws = connect(&hub.url, "C1").await?;
        let kinds: [(&'static str, QueryOf); 5] = [
            (
                "one message (unique token)",
                Box::new(move |i| format!("ticket{}", (i * 7919) % per)),
            ),
            (
                "~1% of messages (vocabulary word)",
                Box::new(|i| vocab((i % 2000) as u64)),
            ),
            (
                "every message of a sentence (1/8)",
                Box::new(|_| "reconnect".into()),
            ),
            ("two-word phrase", Box::new(|_| "auth migration".into())),
            (
                "prefix",
                Box::new(|i| format!("{}*", &vocab((i % 2000) as u64)[..4])),
            ),
        ];
        for (name, q) in kinds {
            let mut times = Vec::with_capacity(200);
            for i in 0..200 {
                let f = ClientFrame::Search(Search {
                    query: q(i),
                    ..Default::default()
                });
                let started = Instant::now();
                ws.send(Message::text(serde_json::to_string(&f)?)).await?;
                loop {
                    if let Message::Text(t) = next(&mut ws).await? {
                        if t.starts_with(r#"{"type":"found""#) {
                            break;
                        }
                        if t.contains(r#""type":"error""#) {
                            bail!("search refused: {t}");
                        }
                    }
                }
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            queries.push((name, times));
        }
    }
    // A clean stop checkpoints the WAL into relay.db.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    tokio::time::timeout(Duration::from_secs(30), hub.child.wait()).await??;
    // The store and, since the index has its own file, the index: every file they left.
    let store_bytes = ["relay.db", "relay.db-wal", "search.db", "search.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(hub.data.path().join(f)).map_or(0, |m| m.len()))
        .sum();
    Ok(Round {
        cpu_ms_per_1k,
        store_bytes,
        queries,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    let a = args()?;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for r in 0..a.rounds {
        for index in [true, false] {
            let got = round(&a, index).await?;
            eprintln!(
                "round {} index {}: {:.2} ms hub CPU per 1,000 messages, store {:.1} MiB",
                r + 1,
                if index { "on " } else { "off" },
                got.cpu_ms_per_1k,
                got.store_bytes as f64 / (1 << 20) as f64
            );
            if index { on.push(got) } else { off.push(got) }
        }
    }
    let cpu = |v: &[Round]| median(v.iter().map(|r| r.cpu_ms_per_1k).collect());
    let size = |v: &[Round]| median(v.iter().map(|r| r.store_bytes as f64).collect());
    println!("messages per round: {}, rounds: {}", a.messages, a.rounds);
    println!(
        "hub CPU per 1,000 messages (stored + delivered): index on {:.2} ms, off {:.2} ms, ratio {:.2}",
        cpu(&on),
        cpu(&off),
        cpu(&on) / cpu(&off)
    );
    println!(
        "store size: index on {:.1} MiB, off {:.1} MiB, ratio {:.2}",
        size(&on) / (1 << 20) as f64,
        size(&off) / (1 << 20) as f64,
        size(&on) / size(&off)
    );
    let kinds = on[0].queries.len();
    for k in 0..kinds {
        let name = on[0].queries[k].0;
        let all: Vec<f64> = on.iter().flat_map(|r| r.queries[k].1.clone()).collect();
        println!(
            "search, {name}: median {:.2} ms, p99 {:.2} ms",
            median(all.clone()),
            pct(all, 0.99)
        );
    }
    Ok(())
}
