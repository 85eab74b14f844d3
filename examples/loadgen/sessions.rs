//! The session scenarios: registering many sessions one after another, and holding many
//! registered sessions idle.
//!
//! Every registered connection stays open, read by a small task that drains whatever the
//! hub pushes (presence, heartbeat pings — tungstenite answers those while reading) and
//! counts it, so the hub never sees a stuck reader and the presence traffic a join causes is
//! measured, not guessed.

use std::{
    cell::RefCell,
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use relay_proto::wire::{Registered, ServerFrame};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    client::{self, Presence, RegisterStats, Ws},
    hubproc::HubUnderTest,
    procfs,
    report::{self, Row},
};

/// tungstenite's read buffer for these mostly idle connections.
const READ_BUFFER: usize = 4096;
/// Once presence traffic stops arriving for this long, it is taken as complete.
const QUIET: Duration = Duration::from_secs(2);
/// Longest wait for the presence traffic of a registration storm to arrive.
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(600);

/// What the open connections received.
#[derive(Default)]
struct Pushed {
    frames: u64,
    bytes: u64,
    /// Sessions announced as joined by name: one per `peer_joined`, `joined.len()` per
    /// batched `presence` frame.
    joins: u64,
    /// Batched `presence` frames that named no one but said `resync` (more changed than a
    /// page).
    resyncs: u64,
    /// Clients that know the whole fleet is online (by the joins they were told) or were
    /// told their list is stale (a `resync`, or a `registered` that held only the first
    /// page: reading `get_sessions` would tell them). Every client must end up one or the
    /// other.
    informed: u64,
    /// Of those, the ones told their list is stale.
    stale: u64,
    closed: u64,
    last: Option<Instant>,
}

/// What a presence frame changes in a client's view of how many sessions are online.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    /// Not a presence frame.
    Nothing,
    /// Named changes: `joined` came online and `left` went offline, of which `later`
    /// (joined minus left) are sessions registered after this client. Only those change its
    /// count: a delta batch may also name the client itself and joins its `registered`
    /// already listed.
    Named { joined: u64, left: u64, later: i64 },
    /// Too many to name: this many are online now.
    Resync(u64),
}

/// Reads a presence frame of either format; `is_later` tells a session registered after
/// the reader.
fn change_in(text: &str, is_later: impl Fn(&str) -> bool) -> Change {
    for (kind, joined) in [
        (r#"{"type":"peer_joined""#, true),
        (r#"{"type":"peer_left""#, false),
    ] {
        if let Some(rest) = text.strip_prefix(kind) {
            // The hub writes `clientId` right after the type (`frames::presence_full`);
            // the loadgen's ids need no escaping.
            let id = rest
                .strip_prefix(r#","clientId":""#)
                .and_then(|r| r.split('"').next())
                .unwrap_or("");
            let later = i64::from(is_later(id));
            return Change::Named {
                joined: u64::from(joined),
                left: u64::from(!joined),
                later: if joined { later } else { -later },
            };
        }
    }
    if text.starts_with(r#"{"type":"presence""#)
        && let Ok(ServerFrame::Presence(b)) = serde_json::from_str::<ServerFrame>(text)
    {
        if b.resync == Some(true) {
            return Change::Resync(b.online.unwrap_or(0));
        }
        let later = |ids: &[String]| ids.iter().filter(|id| is_later(id)).count() as i64;
        return Change::Named {
            joined: b.joined.len() as u64,
            left: b.left.len() as u64,
            later: later(&b.joined) - later(&b.left),
        };
    }
    Change::Nothing
}

/// Whether `id` is `{prefix}-{j}` with `j > i`: a session registered after session `i`.
fn registered_after(id: &str, prefix: &str, i: usize) -> bool {
    id.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|j| j > i)
}

/// What one client knows of who is online.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct View {
    /// How many are online, itself included, as far as it was told.
    online: u64,
    /// It was told its list is stale: it knows to read `get_sessions`.
    stale: bool,
}

impl View {
    /// What `registered` told session `i` of a fleet registering one after another.
    fn registered(i: usize, r: &Registered) -> Self {
        let listed = r.peers.len() as u64;
        let total = r.peers_total.unwrap_or(listed);
        Self {
            online: total.max(i as u64) + 1,
            stale: total > listed,
        }
    }

    fn informed(self, fleet: u64) -> bool {
        self.stale || self.online == fleet
    }

    fn apply(self, change: &Change) -> Self {
        match *change {
            Change::Nothing => self,
            Change::Named { later, .. } => Self {
                online: self.online.saturating_add_signed(later),
                ..self
            },
            Change::Resync(online) => Self {
                online,
                stale: true,
            },
        }
    }
}

/// Reads what the hub pushes to one client until it closes; `fleet` is how many sessions
/// there will be.
async fn drain(
    mut ws: Ws,
    pushed: Rc<RefCell<Pushed>>,
    (prefix, i): (String, usize),
    mut view: View,
    fleet: u64,
) {
    let count = |p: &mut Pushed, v: View, by: i64| {
        if v.informed(fleet) {
            p.informed = p.informed.saturating_add_signed(by);
            if v.stale {
                p.stale = p.stale.saturating_add_signed(by);
            }
        }
    };
    count(&mut pushed.borrow_mut(), view, 1);
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(t)) => {
                let mut p = pushed.borrow_mut();
                p.frames += 1;
                p.bytes += t.len() as u64;
                p.last = Some(Instant::now());
                let change = change_in(&t, |id| registered_after(id, &prefix, i));
                match change {
                    Change::Nothing => continue,
                    Change::Named { joined, .. } => p.joins += joined,
                    Change::Resync(_) => p.resyncs += 1,
                }
                count(&mut p, view, -1);
                view = view.apply(&change);
                count(&mut p, view, 1);
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    pushed.borrow_mut().closed += 1;
}

/// Open, registered connections and what they were pushed.
struct Fleet {
    tasks: Vec<JoinHandle<()>>,
    pushed: Rc<RefCell<Pushed>>,
    stats: RegisterStats,
}

impl Fleet {
    /// Connects and registers `n` sessions one after another (each waits for its
    /// `registered` before the next connects).
    async fn register(
        hub: &HubUnderTest,
        prefix: &str,
        n: usize,
        presence: Presence,
    ) -> anyhow::Result<Self> {
        let pushed: Rc<RefCell<Pushed>> = Rc::default();
        let mut stats = RegisterStats::default();
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let id = format!("{prefix}-{i}");
            let mut ws = client::connect(&hub.url, READ_BUFFER)
                .await
                .with_context(|| format!("session {i} of {n}"))?;
            let registered = client::register(&mut ws, &id, presence, &mut stats).await?;
            tasks.push(tokio::task::spawn_local(drain(
                ws,
                pushed.clone(),
                (prefix.to_string(), i),
                View::registered(i, &registered),
                n as u64,
            )));
        }
        Ok(Self {
            tasks,
            pushed,
            stats,
        })
    }

    /// Waits until every client knows the whole fleet is online or was told its list is
    /// stale ([`Pushed::informed`]), or nothing came for [`QUIET`] (then whatever is missing
    /// shows in the report as fewer informed clients than sessions). `presence: "none"`
    /// clients are told nothing, so there is nothing to wait for.
    async fn settle(&self, presence: Presence) {
        if presence == Presence::None {
            return;
        }
        let start = Instant::now();
        let n = self.tasks.len() as u64;
        loop {
            let (informed, last) = {
                let p = self.pushed.borrow();
                (p.informed, p.last)
            };
            if informed >= n {
                return;
            }
            let since = last.map_or(start, |t| t.max(start));
            if since.elapsed() >= QUIET || start.elapsed() >= PRESENCE_TIMEOUT {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn close(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Joins announced to `n` sessions registered one after another: session i hears of the
/// n − 1 − i that come after it.
fn expected_joins(presence: Presence, n: usize) -> u64 {
    match presence {
        Presence::None => 0,
        _ => (n as u64) * (n as u64).saturating_sub(1) / 2,
    }
}

fn require_pid(hub: &HubUnderTest, what: &str) -> anyhow::Result<u32> {
    hub.pid
        .with_context(|| format!("the {what} scenario measures the hub process: pass --hub-pid"))
}

/// `register`: `n` sessions, one after another, all staying connected. Hub CPU covers the
/// registrations and the presence traffic they cause, up to when it has all arrived.
pub(crate) async fn register(
    hub: &HubUnderTest,
    prefix: &str,
    n: usize,
    presence: Presence,
) -> anyhow::Result<Row> {
    let pid = require_pid(hub, "register")?;
    let cpu0 = procfs::cpu(pid)?;
    let gen0 = procfs::self_cpu_us();
    let busy0 = procfs::machine_busy()?;
    let t0 = Instant::now();
    let fleet = Fleet::register(hub, prefix, n, presence).await?;
    let registered = t0.elapsed();
    let expected = expected_joins(presence, n);
    fleet.settle(presence).await;
    let cpu1 = procfs::cpu(pid)?;
    let gen1 = procfs::self_cpu_us();
    let busy1 = procfs::machine_busy()?;
    let settled = t0.elapsed();
    let (rss, peak) = procfs::rss_kib(pid)?;
    let p = fleet.pushed.borrow();
    let hub_ms = procfs::ticks_ms(cpu1.total() - cpu0.total());
    let mut row = Row::new();
    report::put(&mut row, "scenario", "register");
    report::put(&mut row, "presence", serde_json::to_value(presence)?);
    report::put(&mut row, "sessions", n as u64);
    report::put(&mut row, "register_wall_s", registered.as_secs_f64());
    report::put(&mut row, "settled_wall_s", settled.as_secs_f64());
    report::put(&mut row, "hub_cpu_ms", hub_ms);
    report::put(&mut row, "hub_cpu_ticks", cpu1.total() - cpu0.total());
    report::put(
        &mut row,
        "hub_user_ms",
        procfs::ticks_ms(cpu1.user - cpu0.user),
    );
    report::put(
        &mut row,
        "hub_sys_ms",
        procfs::ticks_ms(cpu1.system - cpu0.system),
    );
    report::put(
        &mut row,
        "hub_cpu_us_per_session",
        hub_ms * 1000.0 / n as f64,
    );
    report::put(&mut row, "presence_frames", p.frames);
    report::put(&mut row, "presence_joins", p.joins);
    report::put(&mut row, "presence_joins_expected", expected);
    report::put(&mut row, "presence_resyncs", p.resyncs);
    report::put(&mut row, "presence_informed", p.informed);
    report::put(&mut row, "presence_told_stale", p.stale);
    report::put(&mut row, "presence_mib", p.bytes as f64 / (1 << 20) as f64);
    report::put(&mut row, "connections_closed", p.closed);
    report::put(&mut row, "register_rate_limited", fleet.stats.rate_limited);
    report::put(&mut row, "register_rate_wait_ms", fleet.stats.waited_ms);
    report::put(&mut row, "hub_rss_mib", rss as f64 / 1024.0);
    report::put(&mut row, "hub_rss_peak_mib", peak as f64 / 1024.0);
    report::put(&mut row, "gen_cpu_ms", (gen1 - gen0) as f64 / 1000.0);
    report::put(
        &mut row,
        "other_cpu_pct",
        procfs::other_cpu_pct(
            busy1 - busy0,
            cpu1.total() - cpu0.total(),
            gen1 - gen0,
            settled.as_secs_f64(),
        ),
    );
    drop(p);
    fleet.close();
    Ok(row)
}

/// `idle`: the hub's RSS at rest, then with `n` registered idle sessions (per connection),
/// its CPU over `idle` seconds of doing nothing but heartbeats, and its RSS once they closed.
pub(crate) async fn idle(
    hub: &HubUnderTest,
    prefix: &str,
    n: usize,
    presence: Presence,
    idle: Duration,
    nofile: u64,
) -> anyhow::Result<Row> {
    let pid = require_pid(hub, "idle")?;
    if nofile < n as u64 + 64 {
        bail!(
            "the open-files limit is {nofile}, too low for {n} connections: raise the hard limit \
             (ulimit -Hn) or pass --idle-conns"
        );
    }
    let (rest, _) = procfs::rss_kib(pid)?;
    let cpu0 = procfs::cpu(pid)?;
    let t0 = Instant::now();
    let fleet = Fleet::register(hub, prefix, n, presence).await?;
    let registered = t0.elapsed();
    fleet.settle(presence).await;
    let cpu1 = procfs::cpu(pid)?;
    // Memory per connection is read now, with every connection open (a hub that wrongly
    // drops idle connections must not look smaller for it).
    let (connected, _) = procfs::rss_kib(pid)?;
    let closed_before = fleet.pushed.borrow().closed;
    // The quiet window: only heartbeats (the hub pings every connection every 25 s by
    // default; a 60 s window sees each connection's ping, pong and answer deadline, so a hub
    // that drops live idle connections shows it here).
    let gen0 = procfs::self_cpu_us();
    let busy0 = procfs::machine_busy()?;
    let idle0 = procfs::cpu(pid)?;
    tokio::time::sleep(idle).await;
    let idle1 = procfs::cpu(pid)?;
    let busy1 = procfs::machine_busy()?;
    let gen1 = procfs::self_cpu_us();
    let (idle_end, peak) = procfs::rss_kib(pid)?;
    let closed_in_window = fleet.pushed.borrow().closed - closed_before;
    let stats = fleet.stats;
    fleet.close();
    // Give the hub a moment to notice the closes and free what it can.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (after, _) = procfs::rss_kib(pid)?;
    let mut row = Row::new();
    report::put(&mut row, "scenario", "idle");
    report::put(&mut row, "presence", serde_json::to_value(presence)?);
    report::put(&mut row, "connections", n as u64);
    report::put(&mut row, "register_wall_s", registered.as_secs_f64());
    report::put(
        &mut row,
        "hub_cpu_ms",
        procfs::ticks_ms(cpu1.total() - cpu0.total()),
    );
    report::put(&mut row, "hub_rss_rest_mib", rest as f64 / 1024.0);
    report::put(&mut row, "hub_rss_connected_mib", connected as f64 / 1024.0);
    report::put(&mut row, "hub_rss_idle_end_mib", idle_end as f64 / 1024.0);
    report::put(&mut row, "hub_rss_peak_mib", peak as f64 / 1024.0);
    report::put(
        &mut row,
        "hub_kib_per_connection",
        (connected.saturating_sub(rest)) as f64 / n as f64,
    );
    report::put(&mut row, "idle_s", idle.as_secs_f64());
    report::put(
        &mut row,
        "idle_hub_cpu_ms",
        procfs::ticks_ms(idle1.total() - idle0.total()),
    );
    report::put(
        &mut row,
        "idle_hub_cpu_ticks",
        idle1.total() - idle0.total(),
    );
    report::put(&mut row, "idle_gen_cpu_ms", (gen1 - gen0) as f64 / 1000.0);
    report::put(
        &mut row,
        "other_cpu_pct",
        procfs::other_cpu_pct(
            busy1 - busy0,
            idle1.total() - idle0.total(),
            gen1 - gen0,
            idle.as_secs_f64(),
        ),
    );
    report::put(&mut row, "hub_rss_after_close_mib", after as f64 / 1024.0);
    report::put(&mut row, "closed_by_hub_while_registering", closed_before);
    report::put(&mut row, "closed_by_hub_in_idle_window", closed_in_window);
    report::put(&mut row, "register_rate_limited", stats.rate_limited);
    report::put(&mut row, "register_rate_wait_ms", stats.waited_ms);
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_read_in_both_presence_formats() {
        let later = |id: &str| registered_after(id, "s", 1);
        let named = |joined, left, later| Change::Named {
            joined,
            left,
            later,
        };
        assert_eq!(
            change_in(
                r#"{"type":"peer_joined","clientId":"s-2","peers":["s-1","s-2"]}"#,
                later
            ),
            named(1, 0, 1)
        );
        assert_eq!(
            change_in(
                r#"{"type":"peer_joined","clientId":"s-0","peers":["s-0"]}"#,
                later
            ),
            named(1, 0, 0),
            "an earlier session"
        );
        assert_eq!(
            change_in(
                r#"{"type":"presence","joined":["s-1","s-2","s-3"],"left":["s-0"]}"#,
                later
            ),
            named(3, 1, 2),
            "itself and an earlier one do not count"
        );
        assert_eq!(
            change_in(r#"{"type":"peer_left","clientId":"s-5"}"#, later),
            named(0, 1, -1)
        );
        assert_eq!(
            change_in(
                r#"{"type":"presence","joined":[],"left":[],"resync":true,"online":7}"#,
                later
            ),
            Change::Resync(7)
        );
        assert_eq!(
            change_in(r#"{"type":"presence","joined":"#, later),
            Change::Nothing,
            "garbled"
        );
        assert_eq!(change_in(r#"{"type":"pong"}"#, later), Change::Nothing);
        assert!(!registered_after("s-10x", "s", 1) && !registered_after("t-9", "s", 1));
    }

    #[test]
    fn a_client_is_informed_by_the_whole_count_or_by_being_told_it_is_stale() {
        let reg = |peers: usize, total: Option<u64>| Registered {
            client_id: "x".into(),
            peers: vec!["p".into(); peers],
            peers_total: total,
            epoch: None,
            unread: None,
            owner_secret: None,
            owned: None,
            rid: None,
        };
        let whole = View::registered(2, &reg(2, None));
        assert_eq!(
            whole,
            View {
                online: 3,
                stale: false
            }
        );
        assert!(!whole.informed(5));
        let named = whole.apply(&Change::Named {
            joined: 3,
            left: 0,
            later: 2,
        });
        assert!(named.informed(5));
        assert!(
            !named
                .apply(&Change::Named {
                    joined: 0,
                    left: 1,
                    later: -1
                })
                .informed(5)
        );
        assert!(
            whole.apply(&Change::Resync(4)).informed(5),
            "told to re-read"
        );
        let paged = View::registered(300, &reg(256, Some(300)));
        assert!(
            paged.stale && paged.informed(500),
            "a first page only: {paged:?}"
        );
    }

    #[test]
    fn expected_joins_are_a_triangle() {
        assert_eq!(expected_joins(Presence::Delta, 5000), 12_497_500);
        assert_eq!(expected_joins(Presence::Full, 1), 0);
        assert_eq!(expected_joins(Presence::None, 5000), 0);
    }
}
