//! The message scenarios (direct ring, all-to-all broadcast, fan-out, unloaded latency): a
//! closed loop of senders, each keeping a fixed number of messages in flight, and receivers
//! that check every delivery (the books and the checks are in [`crate::ledger`]).
//!
//! Everything runs on one thread (a `LocalSet` on a current-thread runtime): per client one
//! reader task and, if it sends, one writer task, sharing one [`State`] through a `RefCell`
//! that is never borrowed across an `.await`. A run is: connect and register every client,
//! warm up, measure (hub and generator CPU read from /proc at both edges), stop the writers,
//! drain what is in flight, and account.

use std::{
    cell::RefCell,
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    client::{self, Presence, RegisterStats, Ws},
    hubproc::HubUnderTest,
    ledger::{Batch, Books, Phase, State},
    procfs,
    report::{self, Row},
};

/// tungstenite's read buffer for traffic clients (many frames per read under load).
const READ_BUFFER: usize = 64 << 10;

/// Whom a sender addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// One client, by index.
    One(usize),
    /// Every other client (`to: "all"`).
    All,
}

/// One message scenario.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// Scenario name for the report.
    pub name: &'static str,
    /// Clients connected and registered.
    pub clients: usize,
    /// Which clients send, and to whom.
    pub senders: Vec<(usize, Target)>,
    /// Messages in flight per sender.
    pub window: usize,
    /// Content bytes per message.
    pub body: usize,
    /// Traffic before the measured window (connections warm, store past its first pages).
    pub warmup: Duration,
    /// The measured window.
    pub measure: Duration,
    /// After the window: how long to wait for what is still in flight before counting it lost.
    pub drain: Duration,
}

impl Spec {
    /// A ring: client `i` sends to `i + 1`.
    pub(crate) fn ring(name: &'static str, clients: usize, window: usize) -> Self {
        Self::new(
            name,
            clients,
            (0..clients)
                .map(|i| (i, Target::One((i + 1) % clients)))
                .collect(),
            window,
        )
    }

    /// A skeleton with default timings; the caller sets them.
    pub(crate) fn new(
        name: &'static str,
        clients: usize,
        senders: Vec<(usize, Target)>,
        window: usize,
    ) -> Self {
        Self {
            name,
            clients,
            senders,
            window,
            body: 100,
            warmup: Duration::from_secs(2),
            measure: Duration::from_secs(10),
            drain: Duration::from_secs(10),
        }
    }

    /// The recipients of a sender's messages.
    pub(crate) fn recipients(&self, sender: usize, target: Target) -> Vec<usize> {
        match target {
            Target::One(r) => vec![r],
            Target::All => (0..self.clients).filter(|&r| r != sender).collect(),
        }
    }
}

async fn write_loop(
    state: Rc<RefCell<State>>,
    me: usize,
    body_len: usize,
    mut sink: SplitSink<Ws, Message>,
    wake: Rc<Notify>,
) {
    loop {
        let batch = state.borrow_mut().next_batch(me, body_len);
        match batch {
            Batch::Ready(frames) => {
                for f in frames {
                    if sink.feed(Message::text(f)).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            Batch::Wait => wake.notified().await,
            Batch::PauseUntil(t) => tokio::time::sleep_until(t.into()).await,
            Batch::Stop => return,
        }
    }
}

async fn read_loop(
    state: Rc<RefCell<State>>,
    me: usize,
    mut stream: futures_util::stream::SplitStream<Ws>,
) {
    while let Some(msg) = stream.next().await {
        match msg {
            Ok(Message::Text(t)) => state.borrow_mut().on_frame(me, &t),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    state.borrow_mut().tally.closed += 1;
}

/// Runs one message scenario against `hub` and returns its figures. `prefix` makes the
/// session ids unique on a shared hub.
pub(crate) async fn run(spec: &Spec, hub: &HubUnderTest, prefix: &str) -> anyhow::Result<Row> {
    let n = spec.clients;
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let mut conns = Vec::with_capacity(n);
    let mut reg = RegisterStats::default();
    for name in &names {
        let mut ws = client::connect(&hub.url, READ_BUFFER).await?;
        client::register(&mut ws, name, Presence::None, &mut reg).await?;
        conns.push(ws);
    }
    let state = Rc::new(RefCell::new(State::new(spec, names.clone())));
    let mut tasks = Vec::new();
    for (i, ws) in conns.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        tasks.push(tokio::task::spawn_local(read_loop(
            state.clone(),
            i,
            stream,
        )));
        let wake = state.borrow().senders[i].as_ref().map(|s| s.wake.clone());
        if let Some(wake) = wake {
            tasks.push(tokio::task::spawn_local(write_loop(
                state.clone(),
                i,
                spec.body,
                sink,
                wake,
            )));
        } else {
            drop(sink);
        }
    }

    tokio::time::sleep(spec.warmup).await;
    let cpu0 = hub_cpu(hub)?;
    let threads0 = hub.pid.map(procfs::threads_cpu).transpose()?;
    let gen0 = procfs::self_cpu_us();
    let busy0 = procfs::machine_busy()?;
    let t0 = Instant::now();
    {
        let mut st = state.borrow_mut();
        st.phase = Phase::Measure;
        st.hist.clear();
        st.tally.in_window = 0;
    }
    tokio::time::sleep(spec.measure).await;
    let cpu1 = hub_cpu(hub)?;
    let threads1 = hub.pid.map(procfs::threads_cpu).transpose()?;
    let gen1 = procfs::self_cpu_us();
    let busy1 = procfs::machine_busy()?;
    let window = t0.elapsed();
    let rss = hub.pid.map(procfs::rss_kib).transpose()?;
    {
        let mut st = state.borrow_mut();
        st.phase = Phase::Drain;
        for s in st.senders.iter().flatten() {
            s.wake.notify_one();
        }
    }
    // Let what is in flight arrive, and its acks, before counting anything as lost.
    let drain_deadline = Instant::now() + spec.drain;
    loop {
        let done = {
            let st = state.borrow();
            st.in_flight == 0
                && st
                    .senders
                    .iter()
                    .flatten()
                    .all(|s| s.acks + s.rejected >= s.next)
        };
        if done || Instant::now() >= drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in &tasks {
        t.abort();
    }

    let st = state.borrow();
    let Books {
        sent,
        acks,
        undelivered,
        rejected,
        lost,
    } = st.books(spec);
    let secs = window.as_secs_f64();
    let mut row = Row::new();
    report::put(&mut row, "scenario", spec.name);
    report::put(&mut row, "clients", n as u64);
    report::put(&mut row, "senders", spec.senders.len() as u64);
    report::put(&mut row, "window", spec.window as u64);
    report::put(&mut row, "body_bytes", spec.body as u64);
    report::put(&mut row, "measured_s", secs);
    report::put(&mut row, "deliveries", st.tally.in_window);
    report::put(
        &mut row,
        "deliveries_per_sec",
        st.tally.in_window as f64 / secs,
    );
    let ms = |v: Option<u64>| v.map(|ns| ns as f64 / 1e6);
    report::put_opt(&mut row, "p50_ms", ms(st.hist.percentile(50.0)));
    report::put_opt(&mut row, "p99_ms", ms(st.hist.percentile(99.0)));
    report::put_opt(
        &mut row,
        "max_ms",
        ms(Some(st.hist.max()).filter(|_| st.hist.count() > 0)),
    );
    report::put(&mut row, "sent", sent);
    report::put(&mut row, "lost", lost);
    report::put(&mut row, "duplicated", st.tally.duplicated);
    report::put(&mut row, "misrouted", st.tally.misrouted);
    report::put(&mut row, "gaps", st.tally.gaps);
    report::put(&mut row, "rejected", rejected);
    report::put(&mut row, "unacked", (sent - rejected).saturating_sub(acks));
    report::put(&mut row, "acks_undelivered", undelivered);
    report::put(&mut row, "errors", st.tally.errors);
    report::put(&mut row, "connections_closed", st.tally.closed);
    if let Some(e) = &st.tally.first_error {
        report::put(&mut row, "first_error", e.as_str());
    }
    if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
        let ticks = c1.total() - c0.total();
        let cpu_ms = procfs::ticks_ms(ticks);
        report::put(&mut row, "hub_cpu_ms", cpu_ms);
        report::put(&mut row, "hub_cpu_ticks", ticks);
        report::put(&mut row, "hub_user_ms", procfs::ticks_ms(c1.user - c0.user));
        report::put(
            &mut row,
            "hub_sys_ms",
            procfs::ticks_ms(c1.system - c0.system),
        );
        report::put(&mut row, "hub_cpu_pct", cpu_ms / 10.0 / secs);
        if st.tally.in_window > 0 {
            report::put(
                &mut row,
                "hub_cpu_ms_per_1k",
                cpu_ms * 1000.0 / st.tally.in_window as f64,
            );
        }
    }
    if let (Some(t0), Some(t1)) = (&threads0, &threads1) {
        // Per thread name, % of one core: is the store actor (one thread) the bottleneck?
        let mut by_name = serde_json::Map::new();
        for (name, end) in t1 {
            let ms = procfs::ticks_ms(end.saturating_sub(t0.get(name).copied().unwrap_or(0)));
            by_name.insert(name.clone(), (ms / 10.0 / secs).into());
            // The search index's thread, per 1,000 deliveries: what the index costs in this
            // run (`--hub-arg=--no-search-index` runs without it).
            if name == "relay-search" && st.tally.in_window > 0 {
                report::put(
                    &mut row,
                    "hub_search_ms_per_1k",
                    ms * 1000.0 / st.tally.in_window as f64,
                );
            }
        }
        if let Some(store) = by_name.get("relay-store").and_then(|v| v.as_f64()) {
            report::put(&mut row, "hub_store_thread_pct", store);
        }
        row.insert("hub_threads_pct".into(), by_name.into());
    }
    if let Some((now, peak)) = rss {
        report::put(&mut row, "hub_rss_mib", now as f64 / 1024.0);
        report::put(&mut row, "hub_rss_peak_mib", peak as f64 / 1024.0);
    }
    let gen_ms = (gen1 - gen0) as f64 / 1000.0;
    report::put(&mut row, "gen_cpu_ms", gen_ms);
    report::put(&mut row, "gen_cpu_pct", gen_ms / 10.0 / secs);
    if st.tally.in_window > 0 {
        report::put(
            &mut row,
            "gen_cpu_ms_per_1k",
            gen_ms * 1000.0 / st.tally.in_window as f64,
        );
    }
    let hub_ticks = match (cpu0, cpu1) {
        (Some(c0), Some(c1)) => c1.total() - c0.total(),
        _ => 0,
    };
    report::put(
        &mut row,
        "other_cpu_pct",
        procfs::other_cpu_pct(busy1 - busy0, hub_ticks, gen1 - gen0, secs),
    );
    report::put(&mut row, "register_rate_limited", reg.rate_limited);
    Ok(row)
}

fn hub_cpu(hub: &HubUnderTest) -> anyhow::Result<Option<procfs::Ticks>> {
    hub.pid
        .map(|pid| procfs::cpu(pid).with_context(|| format!("reading the hub's CPU (pid {pid})")))
        .transpose()
}
