//! Attacks on the hub's connections: clients that ask for big pages and never read them,
//! a client that keeps writing (so it looks alive) but never reads, clients without the
//! token holding every slot of a token hub, and many near-limit frames at once. Each
//! attacker costs a bounded amount and for a bounded time; the hub's slots come back and
//! well-behaved clients get in.
//!
//! The hub's own view is read from /proc (its TCP sockets, its peak memory), so this file is
//! Linux's.
#![cfg(target_os = "linux")]

use crate::common;

use std::{collections::HashSet, time::Duration};

use common::{
    hub::{Hub, HubOpts, WAIT},
    inproc::InProcHub,
    ws::{Ws, bearer_request},
};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::{
    MaybeTlsStream,
    tungstenite::{Message, protocol::frame::coding::CloseCode},
};

fn opts(args: &[&str]) -> HubOpts {
    HubOpts {
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// TCP connections the hub process holds open (its listener excluded): sockets in its fd
/// table that the kernel's TCP table lists with a remote end.
fn hub_tcp_connections(pid: u32) -> usize {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut n = 0;
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let remote_port = cols[2].rsplit(':').next().unwrap();
            if remote_port != "0000" && inodes.contains(cols[9]) {
                n += 1;
            }
        }
    }
    n
}

/// Polls `f` until it is true (bounded by `WAIT`).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    common::eventually(
        what,
        WAIT,
        async || if f() { Ok(()) } else { Err("not yet".into()) },
    )
    .await
}

#[tokio::test]
async fn clients_that_never_read_are_closed_their_slots_come_back_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start_with(
        dir.path(),
        opts(&["--max-connections", "3", "--heartbeat-secs", "1"]),
    )
    .await;
    // Ten broadcasts of 400 KiB: every history page of 500 is a 4 MiB frame.
    {
        let (mut filler, _) = Ws::register(&hub.url, "Filler").await;
        let body = "b".repeat(400 << 10);
        for _ in 0..10 {
            filler
                .send(json!({"type": "message", "to": "all", "content": body}))
                .await;
            filler.until("sent").await;
        }
    }
    eventually("the filler's connection is gone", || {
        hub_tcp_connections(hub.pid()) == 0
    })
    .await;
    let before = common::hub::proc_status_kib(hub.pid(), "VmHWM");

    // Two waves of three clients (the whole cap) that each ask for eight 4 MiB pages and
    // never read another byte. They keep their sockets open: only the hub can end them.
    let mut attackers = Vec::new();
    for wave in 0..2 {
        for i in 0..3 {
            let (mut ws, _) = Ws::register(&hub.url, &format!("Sink{wave}x{i}")).await;
            for _ in 0..8 {
                ws.send(json!({"type": "get_history", "count": 500})).await;
            }
            attackers.push(ws);
        }
        // The hub notices they do not read, drops their sockets and gives the slots back.
        eventually(
            "the hub closed the sockets of clients that do not read",
            || hub_tcp_connections(hub.pid()) == 0,
        )
        .await;
    }

    // A well-behaved client gets in and is served.
    let (mut good, reg) = Ws::register(&hub.url, "Good").await;
    assert_eq!(reg["type"], "registered");
    good.send(json!({"type": "get_history", "count": 1})).await;
    assert_eq!(
        good.until("history").await["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Memory: what six non-readers cost is bounded by the caps (3 connections at a time,
    // each at most its 8 MiB outbound queue and a page in the writer), not by how much they
    // asked for (192 MiB of pages).
    let after = common::hub::proc_status_kib(hub.pid(), "VmHWM");
    println!("hub peak RSS: {before} KiB before the attack, {after} KiB after");
    let bound = before + 3 * (8 + 2 * 4) * 1024 + 64 * 1024;
    assert!(after < bound, "peak RSS {after} KiB over {bound} KiB");
    drop(attackers);
}

/// The most a TCP socket's send buffer grows to on this machine (`net.ipv4.tcp_wmem`'s
/// maximum), in bytes.
fn tcp_wmem_max() -> usize {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap();
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .expect("three numbers in net.ipv4.tcp_wmem")
}

/// The value of the `/metrics` line that starts with `name` (labels included).
fn metric(scrape: &str, name: &str) -> Option<String> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(str::to_string)
}

/// The write bound on its own (hub/src/progress.rs): a client that sends a frame every
/// 200 ms — so the heartbeat always sees it alive and its reader never ends — but never reads
/// a byte, while mail for it fills the socket's buffers and stays well under its outbound
/// queue's bounds (so no overflow ends the reader and no writer abort cleans up). Only the
/// writer's bounded write can notice it: the socket takes nothing for a heartbeat interval.
/// The hub closes it within a few intervals, counts it as `not_reading`, its socket is gone
/// (its own writes fail), and the name is free for a fresh client.
#[tokio::test]
async fn a_client_that_writes_but_never_reads_is_closed_by_the_write_bound_alone() {
    const BEAT: Duration = Duration::from_secs(1);
    const MESSAGE: usize = 64 << 10;
    // More than the kernel holds: the hub's send buffer (at most tcp_wmem's maximum) and the
    // non-reader's receive buffer (pinned to 64 KiB below, so autotuning cannot grow it to
    // tcp_rmem's maximum), with 8 MiB to spare.
    let total = tcp_wmem_max() + (8 << 20);
    let n = total.div_ceil(MESSAGE);
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start_with(dir.path(), |c| {
        c.heartbeat_interval = BEAT;
        // Everything sent fits in the queue twice over, in bytes and in frames (with room
        // for a pong per keep-alive): the queue never overflows.
        c.outbound_bytes = 2 * total + (16 << 20);
        c.outbound_frames = c.outbound_frames.max(2 * n + 1024);
        c.search_index = false;
    })
    .await;

    // The non-reader: registers, then only writes.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 << 10).unwrap();
    let stream = socket.connect(hub.addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(&hub.url, MaybeTlsStream::Plain(stream))
        .await
        .expect("connect to hub");
    let mut sink = Ws { ws };
    sink.send(json!({"type": "register", "clientId": "Sink"}))
        .await;
    sink.expect("registered").await;
    let (mut keepalive_tx, _never_read) = sink.ws.split();
    let keepalive = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut sent = 0u32;
        loop {
            tick.tick().await;
            let ping = Message::text(json!({"type": "ping"}).to_string());
            if let Err(e) = keepalive_tx.send(ping).await {
                return (sent, e.to_string());
            }
            sent += 1;
        }
    });

    // The sender pipelines n messages of 64 KiB to it and reads its acks.
    let (sender, _) = Ws::register(&hub.url, "Sender").await;
    let (mut tx, mut rx) = sender.ws.split();
    let started = tokio::time::Instant::now();
    let writer = tokio::spawn(async move {
        let body = "m".repeat(MESSAGE - 16);
        for i in 0..n {
            let f = json!({"type": "message", "to": "Sink", "content": format!("{i} {body}")});
            tx.send(Message::text(f.to_string())).await.unwrap();
        }
        tx
    });
    // Every send is acked; the hub drops the non-reader within a few heartbeat intervals of
    // the last ack (the sender is told `peer_left`). Mail sent after the drop is stored.
    let mut deadline = started + WAIT;
    let (mut acked, mut left) = (0, None);
    while acked < n || left.is_none() {
        let f = tokio::time::timeout_at(deadline, rx.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{acked} of {n} acked; the non-reader {} after {:?}",
                    if left.is_some() {
                        "was dropped"
                    } else {
                        "was not dropped"
                    },
                    started.elapsed()
                )
            })
            .expect("the sender's connection stays open")
            .unwrap();
        let Message::Text(t) = f else { continue };
        let f: serde_json::Value = serde_json::from_str(&t).unwrap();
        match f["type"].as_str() {
            Some("sent") => {
                acked += 1;
                if acked == n {
                    deadline = deadline.min(tokio::time::Instant::now() + 5 * BEAT);
                }
            }
            Some("peer_left") if f["clientId"] == "Sink" => left = Some(started.elapsed()),
            _ => {}
        }
    }
    let _tx = writer.await.unwrap();
    println!("{n} messages of 64 KiB; the non-reader was dropped {left:?} after the sends began");

    // The write bound did it (counted as `not_reading`), not an overflow of the queue.
    let scrape = common::http::get(hub.addr.port(), "/metrics", &[])
        .await
        .body;
    assert_eq!(
        metric(
            &scrape,
            r#"relay_connections_refused_total{reason="not_reading"}"#
        )
        .as_deref(),
        Some("1"),
        "{scrape}"
    );
    assert_eq!(
        metric(&scrape, "relay_outbox_overflows_total").as_deref(),
        Some("0"),
        "{scrape}"
    );
    // Its socket is really gone: the non-reader's own writes fail.
    let (pings, error) = tokio::time::timeout(WAIT, keepalive)
        .await
        .expect("the non-reader's writes keep succeeding: the hub kept its socket")
        .unwrap();
    println!("the non-reader sent {pings} pings, then: {error}");

    // A fresh client takes the name at once.
    let (_again, reg) = Ws::register(&hub.url, "Sink").await;
    assert_eq!(reg["clientId"], "Sink", "{reg}");
    hub.stop().await;
}

const TOKEN: &str = "t0k3n-for-the-slot-test";

#[tokio::test]
async fn clients_without_the_token_cannot_take_the_slots_of_token_holders() {
    let dir = tempfile::tempdir().unwrap();
    let o = HubOpts::with_token(
        dir.path(),
        TOKEN,
        &[
            "--max-connections",
            "3",
            "--max-unauthenticated",
            "2",
            "--auth-timeout-secs",
            "60",
        ],
    );
    let hub = Hub::start_with(dir.path(), o).await;
    // Anonymous clients try to take every slot: two get in, the rest are refused.
    let mut anonymous = Vec::new();
    let mut refused = 0;
    for _ in 0..6 {
        match tokio_tungstenite::connect_async(&hub.url).await {
            Ok((ws, _)) => anonymous.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 503);
                let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default())
                    .into_owned();
                assert!(body.contains("without the hub token"), "{body}");
                refused += 1;
            }
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    }
    assert_eq!((anonymous.len(), refused), (2, 4));
    // Every token holder still gets in: the anonymous ones hold none of their three slots.
    let mut holders = Vec::new();
    for i in 0..3 {
        let (mut ws, _) = tokio_tungstenite::connect_async(bearer_request(&hub.url, TOKEN))
            .await
            .expect("a token holder is refused while anonymous clients hold slots");
        ws.send(Message::text(
            json!({"type": "register", "clientId": format!("Holder{i}")}).to_string(),
        ))
        .await
        .unwrap();
        holders.push(Ws { ws });
    }
    for h in &mut holders {
        h.expect("registered").await;
    }
    let log = hub.log.lock().unwrap().join("\n");
    assert!(
        log.contains("refused") && log.contains("without the hub token"),
        "the refusals are logged: {log}"
    );
    drop(anonymous);
}

#[tokio::test]
async fn a_client_that_shows_no_token_in_time_is_closed_and_one_that_does_stays() {
    let dir = tempfile::tempdir().unwrap();
    let o = HubOpts::with_token(dir.path(), TOKEN, &["--auth-timeout-secs", "1"]);
    let hub = Hub::start_with(dir.path(), o).await;
    let mut idle = Ws::connect(&hub.url).await;
    let mut late = Ws::connect(&hub.url).await;
    late.send(json!({"type": "register", "clientId": "Late", "token": TOKEN}))
        .await;
    late.expect("registered").await;

    let e = idle.expect("error").await;
    assert_eq!(e["code"], "unauthorized", "{e}");
    let (code, reason) = idle.closed().await.expect("a close frame");
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("token"), "{reason}");
    // The deadline has passed for both; the one that showed the token is still served.
    late.roundtrip().await;
    let log = hub.log.lock().unwrap().join("\n");
    assert!(log.contains("no valid hub token within"), "{log}");
    assert!(!log.contains(TOKEN), "the token is never logged");
}

#[tokio::test]
async fn many_near_limit_frames_at_once_stay_within_the_frame_budget() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start_with(dir.path(), opts(&["--frame-budget-mb", "16"])).await;
    let (mut a, _) = Ws::register(&hub.url, "A").await;
    let before = common::hub::proc_status_kib(hub.pid(), "VmHWM");

    // 24 connections each send a 12 MiB frame (under the 16 MiB hard limit) at once.
    let big = "x".repeat(12 << 20);
    let mut senders = Vec::new();
    for _ in 0..24 {
        let ws = Ws::connect(&hub.url).await;
        let big = big.clone();
        senders.push(tokio::spawn(async move {
            let (mut tx, mut rx) = ws.ws.split();
            // The hub may close the connection while this is still being sent.
            let _ = tx.send(Message::text(big)).await;
            // Every frame is answered: an error, or a close that says why.
            loop {
                match tokio::time::timeout(WAIT, rx.next())
                    .await
                    .expect("no answer")
                {
                    Some(Ok(Message::Text(t))) => {
                        let f: serde_json::Value = serde_json::from_str(&t).unwrap();
                        assert_eq!(f["code"], "too_large", "{f}");
                        return "too_large".to_string();
                    }
                    Some(Ok(Message::Close(Some(c)))) => {
                        assert_eq!(u16::from(c.code), 1013, "{c:?}");
                        assert!(c.reason.contains("memory budget"), "{c:?}");
                        return "over budget".to_string();
                    }
                    Some(Ok(_)) => {}
                    other => return format!("ended: {other:?}"),
                }
            }
        }));
    }
    let mut outcomes = Vec::new();
    for s in senders {
        outcomes.push(s.await.expect("a sender saw the hub misbehave"));
    }
    let after = common::hub::proc_status_kib(hub.pid(), "VmHWM");
    println!("outcomes: {outcomes:?}; hub peak RSS: {before} KiB before, {after} KiB after");
    assert!(
        outcomes.iter().any(|o| o == "over budget"),
        "the budget never refused a frame: {outcomes:?}"
    );
    // The hub held a few times the budget (the WebSocket layer copies a frame as it
    // completes), not 24 × 12 MiB.
    assert!(
        after < before + 96 * 1024,
        "peak RSS grew from {before} to {after} KiB"
    );
    // And the well-behaved session never noticed.
    a.send(json!({"type": "message", "to": "A", "content": "still here"}))
        .await;
    a.until("sent").await;
    a.roundtrip().await;
}
