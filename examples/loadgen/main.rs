//! `loadgen`: a rerunnable load generator for the claude-relay hub, and its report.
//!
//! It speaks the hub's wire protocol over loopback from ONE thread (a current-thread tokio
//! runtime), so that on a small machine the hub gets the rest and the generator's own cost is
//! known: it reports its CPU next to the hub's. By default it starts the hub itself — the
//! release binary, `--port 0`, a fresh temporary data dir, the durable store on as shipped —
//! once per scenario run, and kills it afterwards; `--url` (and `--hub-pid`) measure a hub
//! that is already running.
//!
//! Scenarios (see docs/BENCHMARKS.md for what each one stands for):
//! - `direct`: 10 clients in a ring (i → i+1), 32 messages in flight each, 100-byte bodies;
//! - `broadcast`: 10 clients, each broadcasting to the other 9, 32 in flight each;
//! - `fanout`: 1 client broadcasting to 9, 32 in flight;
//! - `latency`: a ring of 2 with 1 message in flight each (an unloaded hub);
//! - `register`: N sessions registered one after another, all staying connected;
//! - `idle`: 10,000 registered idle sessions: memory per connection and idle CPU.
//!
//! Every message body carries its sender, target, per-sender counter and send time, so each
//! delivery is checked (exactly once, in order, to the right session) and timed one-way on
//! this process's monotonic clock. Hub CPU and memory come from `/proc/PID` (Linux).
//!
//! Module map: [`body`] (what a message carries), [`scan`] (reading hub frames cheaply),
//! [`hist`] (latency percentiles), [`client`] (connect + register), [`traffic`] (the message
//! scenarios) and [`ledger`] (their books and checks), [`sessions`] (register, idle),
//! [`hubproc`] (the hub under test), [`floor`] (the bare relay `--floor` compares it with), [`procfs`] (CPU, RSS, limits), [`report`] (medians,
//! tables, JSON).

mod body;
mod client;
mod floor;
mod hist;
mod hubproc;
mod ledger;
mod procfs;
mod report;
mod scan;
mod sessions;
mod traffic;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use client::Presence;
use hubproc::HubUnderTest;
use report::Row;
use traffic::{Spec, Target};

const AFTER_HELP: &str = "\
Build the hub first — the generator starts target/release/claude-relay by default:
  cargo build --release
  cargo run --release --example loadgen -- --scenario all --runs 3

Against a hub that is already running (CPU and RSS need its pid):
  cargo run --release --example loadgen -- --url ws://127.0.0.1:9999 --hub-pid PID

The registration storm of old clients (full peer lists) grows with N³ bytes; keep N small:
  cargo run --release --example loadgen -- --scenario register --presence full --sessions 500

Run on a quiet machine (check `uptime`): the hub and the generator share its cores.";

/// Above this share of a core used by other processes during a run, the run is flagged.
const DISTURBED_PCT: f64 = 10.0;

/// Which scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// 10 clients in a ring, 32 in flight each, 100-byte bodies.
    Direct,
    /// All-to-all broadcast: 10 clients each broadcasting, 32 in flight each.
    Broadcast,
    /// One client broadcasting to 9.
    Fanout,
    /// Unloaded latency: a ring of 2, 1 in flight each.
    Latency,
    /// Register --sessions sessions one after another (all stay connected).
    Register,
    /// --idle-conns registered idle connections: RSS per connection, idle CPU.
    Idle,
    /// Every scenario above, in this order: latency, direct, broadcast, fanout, register, idle.
    All,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Direct => "direct",
            Scenario::Broadcast => "broadcast",
            Scenario::Fanout => "fanout",
            Scenario::Latency => "latency",
            Scenario::Register => "register",
            Scenario::Idle => "idle",
            Scenario::All => "all",
        }
    }
}

/// Load generator for the claude-relay hub (one thread; reports deliveries/s, one-way
/// latency, loss/duplication/misrouting, and the hub's CPU per 1,000 deliveries and RSS).
#[derive(Debug, Parser)]
#[command(name = "loadgen", after_help = AFTER_HELP)]
struct Args {
    /// Scenario to run.
    #[arg(long, value_enum, default_value = "direct")]
    scenario: Scenario,
    /// Hub binary to start [default: claude-relay next to this example's target dir, i.e.
    /// target/release/claude-relay for a release build].
    #[arg(long, conflicts_with = "url")]
    hub_bin: Option<PathBuf>,
    /// An extra argument for the hub it starts (repeatable), e.g. `--hub-arg=--no-search-index`
    /// to measure what the search index costs.
    #[arg(long, conflicts_with = "url", allow_hyphen_values = true)]
    hub_arg: Vec<String>,
    /// Measure a hub that is already running at this ws:// URL instead of starting one.
    #[arg(long)]
    url: Option<String>,
    /// Process id of the hub at --url (for its CPU and RSS; without it they are not reported).
    #[arg(long, requires = "url")]
    hub_pid: Option<u32>,
    /// Runs of each scenario (each against a fresh hub); the report shows each and the median.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Seconds of traffic before the measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 10.0)]
    measure: f64,
    /// Seconds to wait after the window for messages still in flight before counting them lost.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Clients of the message scenarios [default: 10; latency: 2].
    #[arg(long)]
    clients: Option<usize>,
    /// Messages in flight per sender [default: 32; latency: 1].
    #[arg(long)]
    window: Option<usize>,
    /// Content bytes per message (at least 38: the body's header).
    #[arg(long, default_value_t = 100)]
    body: usize,
    /// Sessions the register scenario registers.
    #[arg(long, default_value_t = 5000)]
    sessions: usize,
    /// Presence mode of registering sessions [default: delta for register, none for idle].
    #[arg(long, value_enum)]
    presence: Option<Presence>,
    /// Connections the idle scenario holds.
    #[arg(long, default_value_t = 10_000)]
    idle_conns: usize,
    /// Seconds of the idle window. The hub pings every 25 s and wants the answer within the
    /// next 20–25 s: 60 s covers a whole cycle (ping, answer, deadline) for every connection.
    #[arg(long, default_value_t = 60.0)]
    idle_secs: f64,
    /// Print one JSON object per scenario on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Also run every scenario against the floor relay (routing plus the hub's write policy,
    /// nothing else; see examples/loadgen/floor.rs), alternating floor and hub run by run,
    /// and print the hub's figures as ratios to the floor's.
    #[arg(long, conflicts_with = "url")]
    floor: bool,
    /// With `--floor`: the floor also sends the Node relay's presence (`peer_joined` and
    /// `peer_left` with the whole list) to clients that register without a `presence` field,
    /// the bytes any relay must push to keep them working. For `--presence node`.
    #[arg(long)]
    floor_presence: bool,
    /// Internal: serve as the floor relay with its log in DIR (how `--floor` starts it).
    #[arg(long, hide = true, value_name = "DIR")]
    serve_floor: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.floor_presence && !args.floor && args.serve_floor.is_none() {
        eprintln!("loadgen: --floor-presence is for --floor (the floor's presence)");
        return std::process::ExitCode::from(2);
    }
    let result = match &args.serve_floor {
        Some(dir) => floor::serve(dir, args.floor_presence),
        None => start(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn start(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    anyhow::ensure!(
        args.body >= body::HEADER,
        "--body must be at least {} bytes",
        body::HEADER
    );
    if cfg!(debug_assertions) {
        eprintln!(
            "loadgen: warning: this is a debug build; use `cargo run --release --example loadgen`"
        );
    }
    let nofile = procfs::raise_nofile().context("raising the open-files limit")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(&runtime, async {
        // Ctrl-C or SIGTERM drops the run, and with it the hub it started (kill_on_drop).
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = run(args, nofile) => r,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            _ = term.recv() => anyhow::bail!("terminated"),
        }
    })
}

/// One scenario's results.
struct Outcome {
    scenario: Scenario,
    runs: Vec<Row>,
    median: Row,
    /// With `--floor`: the floor relay's runs (paired with `runs`) and their median.
    floor: Option<(Vec<Row>, Row)>,
}

async fn run(args: Args, nofile: u64) -> anyhow::Result<()> {
    let scenarios = match args.scenario {
        Scenario::All => vec![
            Scenario::Latency,
            Scenario::Direct,
            Scenario::Broadcast,
            Scenario::Fanout,
            Scenario::Register,
            Scenario::Idle,
        ],
        s => vec![s],
    };
    let hub_bin = match &args.hub_bin {
        Some(p) => p.clone(),
        None => {
            hubproc::default_hub_bin().context("cannot locate the hub binary: pass --hub-bin")?
        }
    };
    let tag = relay_local::identity::base36(u64::from(std::process::id()));
    let mut outcomes = Vec::new();
    for scenario in scenarios {
        let mut runs = Vec::new();
        let mut floor_runs = Vec::new();
        for run in 0..args.runs {
            if args.floor {
                let floor = HubUnderTest::start_floor(args.floor_presence).await?;
                let prefix = format!("lg{tag}f{}{run}", &scenario.name()[..1]);
                let result = one(&args, scenario, &floor, &prefix, nofile).await;
                floor.stop().await;
                let row =
                    result.with_context(|| format!("scenario {} (floor)", scenario.name()))?;
                eprintln!(
                    "loadgen: {} floor run {}/{}: {}",
                    scenario.name(),
                    run + 1,
                    args.runs,
                    summary(&row)
                );
                warn_if_disturbed(&row);
                floor_runs.push(row);
            }
            let hub = match &args.url {
                Some(url) => HubUnderTest::external(url.clone(), args.hub_pid),
                None => HubUnderTest::start(&hub_bin, &args.hub_arg).await?,
            };
            let prefix = format!("lg{tag}{}{run}", &scenario.name()[..1]);
            let result = one(&args, scenario, &hub, &prefix, nofile).await;
            let log = hub.log.clone();
            hub.stop().await;
            let mut row = result.with_context(|| format!("scenario {}", scenario.name()))?;
            {
                let log = log.borrow();
                report::put(&mut row, "hub_log_warnings", log.warnings);
                report::put(&mut row, "hub_log_errors", log.errors);
                if !log.first.is_empty() {
                    report::put(&mut row, "hub_log_first", log.first.join(" | "));
                }
            }
            eprintln!(
                "loadgen: {} run {}/{}: {}",
                scenario.name(),
                run + 1,
                args.runs,
                summary(&row)
            );
            warn_if_disturbed(&row);
            runs.push(row);
        }
        let floor = (!floor_runs.is_empty()).then(|| {
            let median = report::median_row(&floor_runs);
            (floor_runs, median)
        });
        let median = report::median_row(&runs);
        if args.json {
            let mut obj = median.clone();
            report::put(&mut obj, "runs", runs.len() as u64);
            obj.insert(
                "each".into(),
                serde_json::Value::Array(runs.iter().cloned().map(Into::into).collect()),
            );
            if let Some((each, m)) = &floor {
                let mut f = m.clone();
                f.insert(
                    "each".into(),
                    serde_json::Value::Array(each.iter().cloned().map(Into::into).collect()),
                );
                report::put(&mut f, "node_presence", args.floor_presence);
                obj.insert("floor".into(), f.into());
                let mut ratios = serde_json::Map::new();
                for v in report::versus(&runs, each, versus_figures(scenario)) {
                    ratios.insert(v.key.into(), v.ratio.into());
                }
                obj.insert("versus_floor".into(), ratios.into());
            }
            println!("{}", serde_json::Value::Object(obj));
        }
        outcomes.push(Outcome {
            scenario,
            runs,
            median,
            floor,
        });
    }
    if args.json {
        print_tables(&mut std::io::stderr(), &outcomes)?;
    } else {
        print_tables(&mut std::io::stdout(), &outcomes)?;
    }
    Ok(())
}

/// Runs one scenario once against `hub`.
async fn one(
    args: &Args,
    scenario: Scenario,
    hub: &HubUnderTest,
    prefix: &str,
    nofile: u64,
) -> anyhow::Result<Row> {
    let clients = args.clients.unwrap_or(10);
    let window = args.window.unwrap_or(32);
    let mut spec = match scenario {
        Scenario::Direct => Spec::ring("direct", clients, window),
        Scenario::Broadcast => Spec::new(
            "broadcast",
            clients,
            (0..clients).map(|i| (i, Target::All)).collect(),
            window,
        ),
        Scenario::Fanout => Spec::new("fanout", clients, vec![(0, Target::All)], window),
        Scenario::Latency => Spec::ring(
            "latency",
            args.clients.unwrap_or(2),
            args.window.unwrap_or(1),
        ),
        Scenario::Register => {
            let presence = args.presence.unwrap_or(Presence::Delta);
            return sessions::register(hub, prefix, args.sessions, presence).await;
        }
        Scenario::Idle => {
            let presence = args.presence.unwrap_or(Presence::None);
            let idle = Duration::from_secs_f64(args.idle_secs);
            return sessions::idle(hub, prefix, args.idle_conns, presence, idle, nofile).await;
        }
        Scenario::All => unreachable!("expanded by the caller"),
    };
    anyhow::ensure!(
        spec.clients >= 2,
        "message scenarios need at least 2 clients"
    );
    anyhow::ensure!(spec.window >= 1, "--window must be at least 1");
    spec.body = args.body;
    spec.warmup = Duration::from_secs_f64(args.warmup);
    spec.measure = Duration::from_secs_f64(args.measure);
    spec.drain = Duration::from_secs_f64(args.drain);
    traffic::run(&spec, hub, prefix).await
}

/// The figures of `scenario` compared with the floor relay.
fn versus_figures(scenario: Scenario) -> &'static [(&'static str, &'static str)] {
    match scenario {
        Scenario::Register => report::VERSUS_REGISTER,
        Scenario::Idle => report::VERSUS_IDLE,
        _ => report::VERSUS_TRAFFIC,
    }
}

/// Warns when other processes disturbed a run.
fn warn_if_disturbed(row: &Row) {
    if let Some(other) = row.get("other_cpu_pct").and_then(|v| v.as_f64())
        && other > DISTURBED_PCT
    {
        eprintln!(
            "loadgen: warning: other processes used {other:.0}% of a core during this run; \
             it is not a clean measurement (rerun when `uptime` is quiet)"
        );
    }
}

/// One progress line for stderr.
fn summary(row: &Row) -> String {
    let f = |k: &str| row.get(k).and_then(|v| v.as_f64());
    if let Some(d) = f("deliveries_per_sec") {
        format!(
            "{} deliv/s, p50 {:.3} ms, p99 {:.3} ms, hub {:.2} ms/1k, lost {}, dup {}, misrouted {}, generator CPU {:.0}%, other CPU {:.0}%",
            report::group(d.round() as i64),
            f("p50_ms").unwrap_or(f64::NAN),
            f("p99_ms").unwrap_or(f64::NAN),
            f("hub_cpu_ms_per_1k").unwrap_or(f64::NAN),
            f("lost").unwrap_or(f64::NAN),
            f("duplicated").unwrap_or(f64::NAN),
            f("misrouted").unwrap_or(f64::NAN),
            f("gen_cpu_pct").unwrap_or(f64::NAN),
            f("other_cpu_pct").unwrap_or(f64::NAN),
        )
    } else if let Some(k) = f("hub_kib_per_connection") {
        format!(
            "{k:.1} KiB/conn, rest {:.1} MiB, idle CPU {:.0} ms",
            f("hub_rss_rest_mib").unwrap_or(f64::NAN),
            f("idle_hub_cpu_ms").unwrap_or(f64::NAN)
        )
    } else {
        format!(
            "{:.2} s wall, hub CPU {:.0} ms, {} presence frames",
            f("register_wall_s").unwrap_or(f64::NAN),
            f("hub_cpu_ms").unwrap_or(f64::NAN),
            f("presence_frames").unwrap_or(f64::NAN)
        )
    }
}

fn print_tables(w: &mut impl std::io::Write, outcomes: &[Outcome]) -> anyhow::Result<()> {
    let rows = |pick: &dyn Fn(Scenario) -> bool| -> Vec<(String, Row)> {
        let mut rows = Vec::new();
        for o in outcomes.iter().filter(|o| pick(o.scenario)) {
            let floor = o.floor.as_ref().map(|(r, m)| (" floor", r, m));
            for (tag, runs, median) in floor.into_iter().chain([("", &o.runs, &o.median)]) {
                let name = format!("{}{tag}", o.scenario.name());
                if runs.len() > 1 {
                    for (i, r) in runs.iter().enumerate() {
                        rows.push((format!("{name} #{}", i + 1), r.clone()));
                    }
                    rows.push((format!("{name} median"), median.clone()));
                } else {
                    rows.push((name.to_string(), median.clone()));
                }
            }
        }
        rows
    };
    let traffic = rows(&|s| !matches!(s, Scenario::Register | Scenario::Idle));
    let register = rows(&|s| s == Scenario::Register);
    let idle = rows(&|s| s == Scenario::Idle);
    for (columns, rows) in [
        (report::TRAFFIC, traffic),
        (report::REGISTER, register),
        (report::IDLE, idle),
    ] {
        if !rows.is_empty() {
            writeln!(w)?;
            report::table(w, columns, &rows)?;
        }
    }
    let mut first = true;
    for o in outcomes {
        let Some((floor, _)) = &o.floor else { continue };
        if first {
            writeln!(
                w,
                "\nhub ÷ floor (median of the per-run ratios; hub and floor medians):"
            )?;
            first = false;
        }
        for v in report::versus(&o.runs, floor, versus_figures(o.scenario)) {
            writeln!(
                w,
                "  {:<10} {:<32} {:>6.2}×   hub {:>10.3}   floor {:>10.3}",
                o.scenario.name(),
                v.figure,
                v.ratio,
                v.hub,
                v.floor
            )?;
        }
    }
    Ok(())
}
