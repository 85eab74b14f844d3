//! Attacks on the hub's connections: clients that ask for big pages and never read them,
//! clients without the token holding every slot of a token hub, and many near-limit frames
//! at once. Each attacker costs a bounded amount and for a bounded time; the hub's slots
//! come back and well-behaved clients get in.
//!
//! The hub's own view is read from /proc (its TCP sockets, its peak memory), so this file is
//! Linux's.
#![cfg(target_os = "linux")]

use crate::common;

use std::collections::HashSet;

use common::{
    hub::{Hub, HubOpts, WAIT},
    ws::{Ws, bearer_request},
};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};

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

/// The hub's peak resident memory, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
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
    let before = peak_rss_kib(hub.pid());

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
    let after = peak_rss_kib(hub.pid());
    println!("hub peak RSS: {before} KiB before the attack, {after} KiB after");
    let bound = before + 3 * (8 + 2 * 4) * 1024 + 64 * 1024;
    assert!(after < bound, "peak RSS {after} KiB over {bound} KiB");
    drop(attackers);
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
    let before = peak_rss_kib(hub.pid());

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
    let after = peak_rss_kib(hub.pid());
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
