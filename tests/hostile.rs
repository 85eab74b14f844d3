//! Hostile input changes nothing: while a pair of well-behaved sessions exchange messages,
//! other connections throw a corpus of bad frames at the hub. Each bad frame is answered
//! with an error (or only its own connection is closed), the hub stays up, and the pair sees
//! every message, in order.
//!
//! The hub is served in this process (`common::inproc`); connections that never finish their
//! handshake are dropped on tokio's paused clock, so the 10 s timeout costs no time.
//!
//! More classes of attack live next to this file: clients that never read, clients without
//! the token holding slots, and parallel near-limit frames (`hostile_conns.rs`); a second
//! hub on the same store and world-readable mail files (`hostile_store.rs`).

use crate::common;

use std::time::{Duration, Instant};

use common::{
    inproc::{InProcHub, hold_clock},
    ws::Ws,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::Message;

/// Registers a pair of well-behaved sessions.
async fn pair(url: &str, a: &str, b: &str) -> (Ws, Ws, String, String) {
    let (wa, _) = Ws::register(url, a).await;
    let (wb, _) = Ws::register(url, b).await;
    (wa, wb, a.to_string(), b.to_string())
}

/// The well-behaved pair: A sends `n` numbered messages to B, B echoes each back; both
/// check order. Returns the round-trip times.
async fn well_behaved_pair((a, b, an, bn): (Ws, Ws, String, String), n: usize) -> Vec<Duration> {
    let (mut a_tx, mut a_rx) = a.ws.split();
    let (mut b_tx, mut b_rx) = b.ws.split();
    let an2 = an.clone();
    let echo = tokio::spawn(async move {
        let an = an2;
        let mut expect = 0usize;
        while expect < n {
            let t = match b_rx.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                other => panic!("B's connection ended at message {expect}: {other:?}"),
            };
            let f: Value = serde_json::from_str(&t).unwrap();
            if f["type"] != "message" {
                continue;
            }
            assert_eq!(f["from"], json!(an));
            assert_eq!(
                f["content"],
                format!("ping {expect}"),
                "B saw a gap or reorder"
            );
            expect += 1;
            let back =
                json!({"type": "message", "to": an, "content": format!("pong {}", expect - 1)});
            b_tx.send(Message::text(back.to_string())).await.unwrap();
        }
    });
    let mut rtts = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        let f = json!({"type": "message", "to": bn, "content": format!("ping {i}")});
        a_tx.send(Message::text(f.to_string())).await.unwrap();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), a_rx.next())
                .await
                .expect("Alice waited 10 s for a pong");
            let t = match next {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                other => panic!("A's connection ended at message {i}: {other:?}"),
            };
            let f: Value = serde_json::from_str(&t).unwrap();
            if f["type"] == "message" {
                assert_eq!(
                    f["content"],
                    format!("pong {i}"),
                    "Alice saw a gap or reorder"
                );
                break;
            }
        }
        rtts.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    echo.await.unwrap();
    rtts
}

fn p(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * q) as usize]
}

async fn attack(url: String, me: String) {
    // Frames that must each get an `error` (or `register_rejected`) and leave the
    // connection open.
    let mut deep = String::new();
    for _ in 0..10_000 {
        deep.push('[');
    }
    let corpus: Vec<String> = vec![
        "{".into(),
        "{\"type\":\"message\",\"content\":\"trunc".into(),
        "null".into(),
        "42".into(),
        "\"just a string\"".into(),
        "".into(),
        deep.clone(),
        format!("{{\"type\":\"ping\",\"x\":{deep}}}"),
        json!({"type": "message", "content": ["not", "a", "string"]}).to_string(),
        json!({"type": "message", "to": 7, "content": "x"}).to_string(),
        json!({"type": "get_history", "count": -1}).to_string(),
        json!({"type": "get_history", "count": 1e300}).to_string(),
        json!({"type": "mark_read", "seqs": "all"}).to_string(),
        json!({"type": ["register"]}).to_string(),
        json!({"type": "register", "clientId": ""}).to_string(),
        json!({"type": "register", "clientId": "x".repeat(10_000)}).to_string(),
        json!({"type": "register", "clientId": "Ĉ-ünïcödé"}).to_string(),
        json!({"type": "register", "clientId": "all"}).to_string(),
        json!({"type": "register", "clientId": "Carol"}).to_string(),
        json!({"type": "register", "clientId": "Dave\u{0}"}).to_string(),
        json!({"type": "message", "to": "Dave", "from": "Carol", "content": "spoofed"}).to_string(),
        json!({"type": "receive"}).to_string(),
        json!({"type": "get_status"}).to_string(),
        json!({"type": "teleport", "to": "Bob"}).to_string(),
        "x".repeat(10 << 20),
    ];
    let mut ws = Ws::connect(&url).await;
    for frame in &corpus {
        ws.send_text(frame.clone()).await;
        let reply = ws.next().await;
        assert!(
            reply["type"] == "error" || reply["type"] == "register_rejected",
            "{:.60} got {reply}",
            frame
        );
    }
    ws.ws.send(Message::binary(vec![0u8; 1024])).await.unwrap();
    assert_eq!(ws.expect("error").await["code"], "binary_frame");
    ws.roundtrip().await;

    // A registered attacker: spoofed `from` is ignored, other pairs' mail stays private.
    ws.send(json!({"type": "register", "clientId": me})).await;
    ws.until("registered").await;
    ws.send(json!({"type": "get_history", "count": 500, "from": "Carol"}))
        .await;
    assert_eq!(ws.until("history").await["messages"], json!([]));
    ws.send(json!({"type": "receive", "from": "Carol"})).await;
    assert_eq!(ws.until("inbox").await["messages"], json!([]));

    // A register flood on one connection: every one answered, none succeeds.
    for i in 0..2000 {
        ws.send(json!({"type": "register", "clientId": format!("Flood{i}")}))
            .await;
    }
    for _ in 0..2000 {
        let r = ws.until("register_rejected").await;
        assert!(
            r["code"] == "already_registered" || r["code"] == "rate_limited",
            "{r}"
        );
    }
    ws.roundtrip().await;
}

#[tokio::test]
async fn hostile_input_changes_nothing_for_well_behaved_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;

    // Baseline latency of a pair with nothing else going on.
    let mut quiet = well_behaved_pair(pair(&hub.url, "Alice", "Bob").await, 100).await;

    // The pair under attack holds its names before the attackers start (they try to take
    // "Carol" and must be refused).
    let carol_dave = pair(&hub.url, "Carol", "Dave").await;
    let pair = tokio::spawn(well_behaved_pair(carol_dave, 300));
    let attackers: Vec<_> = (0..3)
        .map(|i| tokio::spawn(attack(hub.url.clone(), format!("Mallory{i}"))))
        .collect();
    for a in attackers {
        a.await.expect("attacker saw the hub misbehave");
    }
    let mut loaded = pair
        .await
        .expect("the well-behaved pair lost or reordered a message");

    // The hub is still up and serving.
    let (mut late, _) = Ws::register(&hub.url, "Late").await;
    late.roundtrip().await;

    println!(
        "pair round trip: quiet p50 {:?} p99 {:?}; under attack p50 {:?} p99 {:?}",
        p(&mut quiet, 0.5),
        p(&mut quiet, 0.99),
        p(&mut loaded, 0.5),
        p(&mut loaded, 0.99)
    );
    hub.stop().await;
}

/// True once the peer closed `s` (a read gives 0 bytes or an error); false while it is open
/// with nothing to read.
fn closed(s: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match s.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::test]
async fn connections_that_never_finish_the_handshake_are_dropped_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let timeout = hub::HubConfig::new(dir.path()).handshake_timeout;
    tokio::time::pause();
    // Raw TCP that sends nothing, one that sends half an HTTP request, and a client that
    // finishes its handshake at the same moment.
    let (mut silent, mut half, mut good) = hold_clock(async {
        let silent = TcpStream::connect(hub.addr).await.unwrap();
        let mut half = TcpStream::connect(hub.addr).await.unwrap();
        half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            .await
            .unwrap();
        let good = Ws::connect(&hub.url).await;
        (silent, half, good)
    })
    .await;
    // Just before the timeout all three are open (a round trip lets the hub catch up first).
    tokio::time::advance(timeout - Duration::from_secs(1)).await;
    hold_clock(good.roundtrip()).await;
    assert!(
        !closed(&silent) && !closed(&half),
        "dropped before the timeout"
    );
    // At the timeout the two without a handshake are dropped (read returns 0 / error)...
    tokio::time::advance(Duration::from_secs(2)).await;
    let mut buf = [0u8; 64];
    for (name, s) in [("silent", &mut silent), ("half", &mut half)] {
        let end = hold_clock(s.read(&mut buf)).await;
        assert!(
            matches!(end, Ok(0) | Err(_)),
            "{name} connection not dropped: {end:?}"
        );
    }
    // ...and the one that finished it stays.
    hold_clock(good.roundtrip()).await;
    hub.stop().await;
}
