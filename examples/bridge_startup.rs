//! Bridge start-up benchmark: how long from spawning `claude-relay mcp` until its
//! `initialize` answer arrives, and how much memory the bridge holds once it has connected
//! to a hub — the costs that multiply by the number of agents on a machine.
//!
//! ```sh
//! cargo build --release && cargo run --release --example bridge_startup -- [RUNS]
//! ```
//!
//! It starts its own hub (the release binary next to this example) on a free port, then runs
//! the bridge RUNS times (default 30), each with a fresh session name, and prints the
//! median / p90 / max time to `initialize` and the median RSS after the bridge reports
//! itself connected (`relay_status`).

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/release/examples/bridge_startup → target/release/claude-relay
    exe.parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("claude-relay"))
        .expect("target dir")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(30);
    let bin = binary();
    assert!(
        bin.exists(),
        "{} not found: run `cargo build --release` first",
        bin.display()
    );
    let home = std::env::temp_dir().join(format!("bridge-startup-{}", std::process::id()));
    let mut hub = Command::new(&bin)
        .args(["hub", "--port", "0", "--data-dir"])
        .arg(home.join("hub"))
        .env("CLAUDE_RELAY_HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hub");
    let mut lines = BufReader::new(hub.stderr.take().expect("piped stderr")).lines();
    let url = loop {
        let line = lines.next().expect("hub exited").expect("hub stderr");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    let mut init_ms = Vec::new();
    let mut rss = Vec::new();
    for i in 0..runs {
        let start = Instant::now();
        let mut child = Command::new(&bin)
            .arg("mcp")
            .env("CLAUDE_RELAY_HOME", &home)
            .env("CLAUDE_RELAY_SESSION_ID", format!("BENCH-{i}"))
            .env("RELAY_URL", &url)
            .env_remove("CLAUDE_CODE_SESSION_ID")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bridge");
        let mut stdin = child.stdin.take().expect("piped stdin");
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        writeln!(stdin, "{INIT}").expect("write initialize");
        let mut line = String::new();
        out.read_line(&mut line).expect("read initialize reply");
        init_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        assert!(line.contains("\"serverInfo\""), "unexpected answer: {line}");
        writeln!(stdin, "{INITIALIZED}").expect("write initialized");
        // Wait (bounded) until the bridge is registered with the hub, then read its RSS.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut id = 2;
        loop {
            writeln!(
                stdin,
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"relay_status","arguments":{{}}}}}}"#
            )
            .expect("write tools/call");
            id += 1;
            line.clear();
            out.read_line(&mut line).expect("read tools/call reply");
            if line.contains("connected for") || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        rss.push(rss_kib(child.id()) as f64 / 1024.0);
        drop(stdin);
        let _ = child.wait();
    }
    let _ = hub.kill();
    let _ = hub.wait();
    let _ = std::fs::remove_dir_all(&home);
    println!(
        "bridge start-up over {runs} runs: initialize answered p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms; RSS when connected p50 {:.1} MiB, max {:.1} MiB",
        percentile(&mut init_ms.clone(), 0.5),
        percentile(&mut init_ms.clone(), 0.9),
        percentile(&mut init_ms, 1.0),
        percentile(&mut rss.clone(), 0.5),
        percentile(&mut rss, 1.0),
    );
}
