//! A laptop on a bad network (issue 15, docs/BRIDGE.md "Offline outbox" and "Dead links"):
//! the hub behind the impairment proxy (`common::impair`, the kernel has no netem) with a
//! 300 ms round trip and a 32 KiB/s cap, then a 30 s stall (sockets held open, nothing
//! forwarded), then an abrupt cut (RST) while a send's ack is in flight. Through it a real bridge
//! sends 100 messages and receives 100. What must hold: every message arrives exactly once
//! and in the order sent, both ways; the sends made during the stall are answered "Queued on
//! this machine" and arrive after it; the outbox ends empty.
//!
//! Heartbeats are shortened so the test does not wait on production defaults (hub: 1 s;
//! bridge: `RELAY_PING_INTERVAL_MS=1000`); the stall itself lasts the full 30 s.

use crate::common;

use std::time::Duration;

use common::{
    bridge::{Bridge, BridgeOpts},
    hub::WAIT,
    impair::{Cut, Impair},
    inproc::InProcHub,
};
use serde_json::{Value, json};

/// Messages each way.
const EACH_WAY: usize = 100;
/// The stall the issue asks for.
const STALL: Duration = Duration::from_secs(30);

/// A typical agent message: a tag (`a042`: the 42nd from CC-1) and a line of paths and ids.
fn text(tag: &str) -> String {
    format!("{tag} fixed the retry in mcp-bridge/src/hub_client/link.rs:142, commit 3f2a9c1d")
}

/// The tags (`a042`, `b007`) of the message bodies in a `relay_receive` result, in order
/// (every body line is quoted with `> `).
fn tags(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("> "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|t| {
            t.len() == 4
                && (t.starts_with('a') || t.starts_with('b'))
                && t[1..].chars().all(|c| c.is_ascii_digit())
        })
        .map(str::to_string)
        .collect()
}

/// Reads `b`'s unread mail until `want` messages were shown in all (bounded by `limit`).
async fn read_all(b: &Bridge, want: usize, limit: Duration) -> Vec<String> {
    let mut got = Vec::new();
    common::eventually(
        &format!("{} reads {want} messages", b.id),
        limit,
        async || {
            let out = b.call("relay_receive", json!({"count": 50})).await;
            if !out.is_error {
                got.extend(tags(&out.text));
            }
            if got.len() >= want {
                Ok(())
            } else {
                Err(format!("{} so far; last: {}", got.len(), out.text))
            }
        },
    )
    .await;
    got
}

fn expected(prefix: char, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i:03}")).collect()
}

async fn send(b: &Bridge, tag: &str, to: &str) -> String {
    let out = b
        .call("relay_send", json!({"message": text(tag), "to": to}))
        .await;
    assert!(!out.is_error, "{tag}: {}", out.text);
    out.text
}

#[tokio::test]
async fn two_hundred_messages_cross_a_slow_stalled_and_cut_link_exactly_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start_with(dir.path(), |c| {
        c.heartbeat_interval = Duration::from_secs(1);
    })
    .await;
    let proxy = Impair::start(hub.addr).await.unwrap();
    proxy.set_latency(Duration::from_millis(150));
    proxy.set_rate(Some(32 << 10));

    let mut opts = BridgeOpts::new(dir.path(), &proxy.ws_url(), "CC-1");
    opts.env
        .push(("RELAY_PING_INTERVAL_MS".into(), "1000".into()));
    let laptop = Bridge::start_with(opts, false).await;
    // The other side sits next to the hub.
    let desk = Bridge::start(dir.path(), &hub.url, "CC-2").await;
    laptop.wait_connected().await;
    desk.wait_connected().await;

    // 1. Slow link: 300 ms round trip, 32 KiB/s.
    for i in 0..40 {
        let out = send(&laptop, &format!("a{i:03}"), "CC-2").await;
        assert!(out.starts_with("Delivered to CC-2"), "{out}");
        send(&desk, &format!("b{i:03}"), "CC-1").await;
    }
    let mut laptop_got = read_all(&laptop, 40, WAIT).await;

    // 2. Stall: the link goes silent with every socket open.
    proxy.stall();
    let stall_ends = tokio::time::Instant::now() + STALL;
    let mut queued = Vec::new();
    for i in 40..60 {
        let out = send(&laptop, &format!("a{i:03}"), "CC-2").await;
        assert!(out.starts_with("Queued on this machine"), "a{i:03}: {out}");
        assert!(out.contains("not delivered yet"), "{out}");
        queued.push(out);
        send(&desk, &format!("b{i:03}"), "CC-1").await;
    }
    // The first was on the wire when the link went silent: no ack, so in doubt — kept with
    // its key, to be resent (and stored once). The rest queue behind it.
    assert!(
        queued[0].starts_with("Queued on this machine — the hub did not confirm it"),
        "{}",
        queued[0]
    );
    assert!(
        queued[1].starts_with("Queued on this machine — the hub is unreachable"),
        "{}",
        queued[1]
    );
    assert!(
        tokio::time::Instant::now() < stall_ends,
        "the sends made during the stall were answered during it"
    );
    let s = laptop.ok("relay_status", Value::Null).await;
    assert!(
        s.contains("Outbox: 20 messages queued on this machine, not sent yet"),
        "{s}"
    );
    // Nothing queued reached the other side while the link was stalled.
    let desk_so_far = read_all(&desk, 40, WAIT).await;
    assert_eq!(desk_so_far, expected('a', 0..40));
    tokio::time::sleep_until(stall_ends).await;
    proxy.resume();

    // 3. Back: the queue drains first; later sends go behind it.
    laptop.wait_connected_within(Duration::from_secs(60)).await;
    for i in 60..90 {
        let out = send(&laptop, &format!("a{i:03}"), "CC-2").await;
        assert!(
            out.starts_with("Delivered to CC-2") || out.starts_with("Queued on this machine"),
            "a{i:03}: {out}"
        );
        send(&desk, &format!("b{i:03}"), "CC-1").await;
    }

    // 4. An abrupt cut while a send is on the wire (150 ms each way).
    for i in 90..EACH_WAY {
        if i == 92 {
            let tag = format!("a{i:03}");
            let sending = send(&laptop, &tag, "CC-2");
            tokio::pin!(sending);
            tokio::select! {
                // After the frame reached the hub (150 ms), before the ack is back (300 ms).
                _ = tokio::time::sleep(Duration::from_millis(250)) => proxy.cut(Cut::Reset),
                out = &mut sending => panic!("a send through a 300 ms round trip took under 250 ms: {out}"),
            }
            let out = sending.await;
            eprintln!("the send cut on the wire: {out}");
            assert!(
                out.starts_with("Delivered to CC-2")
                    || out.starts_with("Stored for CC-2")
                    || out.starts_with("Queued on this machine"),
                "a{i:03}: {out}"
            );
        } else {
            send(&laptop, &format!("a{i:03}"), "CC-2").await;
        }
        send(&desk, &format!("b{i:03}"), "CC-1").await;
    }

    // Everything arrives, once, in order — both ways.
    laptop.wait_connected_within(Duration::from_secs(60)).await;
    let desk_rest = read_all(&desk, EACH_WAY - 40, Duration::from_secs(120)).await;
    let mut desk_got = desk_so_far;
    desk_got.extend(desk_rest);
    assert_eq!(desk_got, expected('a', 0..EACH_WAY), "CC-2 got CC-1's mail");
    laptop_got.extend(read_all(&laptop, EACH_WAY - 40, Duration::from_secs(120)).await);
    assert_eq!(
        laptop_got,
        expected('b', 0..EACH_WAY),
        "CC-1 got CC-2's mail"
    );

    // Nothing left behind, nothing more to come.
    let s = laptop.ok("relay_status", Value::Null).await;
    assert!(s.contains("Outbox: empty"), "{s}");
    let more = desk.ok("relay_receive", Value::Null).await;
    assert!(more.starts_with("No unread messages"), "{more}");
    // The hub stored each of CC-1's messages once (its history from CC-1, oldest first).
    let mut history = Vec::new();
    let mut after = "2000-01-01T00:00:00Z".to_string();
    loop {
        let args = json!({"replay": true, "from": "CC-1", "count": 50, "after": after});
        let out = desk.ok("relay_receive", args).await;
        history.extend(tags(&out));
        match out.split("\"after\":\"").nth(1) {
            Some(rest) => after = rest.split('"').next().unwrap().to_string(),
            None => break,
        }
    }
    assert_eq!(history, expected('a', 0..EACH_WAY), "stored once each");
}
