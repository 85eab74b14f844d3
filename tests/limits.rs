//! Limits stop floods, not work, and each is answered clearly: a slow reader is closed and
//! catches up later with nothing lost, a frame flood is rate-limited with a retry time, a
//! registration flood is refused per address, and connections over the cap get a 503.
#![allow(clippy::unwrap_used)] // a test that unwraps fails loudly; that is what it is for

mod common;

use std::time::Duration;

use common::{
    hub::{Hub, HubOpts},
    ws::Ws,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn opts(args: &[&str]) -> HubOpts {
    HubOpts {
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_slow_reader_is_closed_with_a_reason_and_catches_up_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    // Default limits: 8 KiB messages overflow the 8 MiB outbound byte bound well before the
    // 4096-frame one.
    let hub = Hub::start(dir.path()).await;
    // The slow reader registers and then never reads again.
    let (mut slow, _) = Ws::register(&hub.url, "Slow").await;
    let (sender, _) = Ws::register(&hub.url, "Fast").await;
    let (mut tx, mut rx) = sender.ws.split();
    const N: usize = 3000;
    let body = "x".repeat(8 << 10);
    let writer = tokio::spawn(async move {
        for i in 0..N {
            let f = json!({"type": "message", "to": "Slow", "content": format!("{i} {body}")});
            tx.send(Message::text(f.to_string())).await.unwrap();
        }
        tx
    });
    // Every send is acked (stored) whether or not the slow reader took it.
    let mut acked = 0;
    let mut undelivered = 0;
    while acked < N {
        let f = tokio::time::timeout(Duration::from_secs(30), rx.next())
            .await
            .expect("acks keep coming")
            .unwrap()
            .unwrap();
        let Message::Text(t) = f else { continue };
        let f: Value = serde_json::from_str(&t).unwrap();
        if f["type"] == "sent" {
            acked += 1;
            if f["delivered"] == false {
                undelivered += 1;
            }
        }
    }
    let _tx = writer.await.unwrap();
    assert!(undelivered > 0, "the slow reader's queue never overflowed");

    // The slow connection was closed by the hub with a reason (after the frames it had).
    let mut closed = None;
    while closed.is_none() {
        match tokio::time::timeout(Duration::from_secs(30), slow.ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(c))) => closed = Some(c),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    if let Some(Some(c)) = closed {
        assert_eq!(u16::from(c.code), 1008);
        assert!(c.reason.contains("too slow"), "{}", c.reason);
    }

    // It reconnects and reads everything: nothing lost, in order.
    let (mut again, reg) = Ws::register(&hub.url, "Slow").await;
    assert_eq!(reg["unread"].as_u64().unwrap() as usize, N, "{reg}");
    let mut next = 0usize;
    loop {
        again.send(json!({"type": "receive", "count": 500})).await;
        let inbox = again.until("inbox").await;
        let msgs = inbox["messages"].as_array().unwrap();
        if msgs.is_empty() {
            break;
        }
        let seqs: Vec<u64> = msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        for m in msgs {
            let n: usize = m["content"]
                .as_str()
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(n, next);
            next += 1;
        }
        again.send(json!({"type": "mark_read", "seqs": seqs})).await;
        again.until("marked").await;
    }
    assert_eq!(next, N);
}

#[tokio::test]
async fn a_frame_flood_is_rate_limited_with_a_retry_time_and_the_connection_stays() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start_with(dir.path(), opts(&["--frame-rate", "50"])).await;
    let mut ws = Ws::connect(&hub.url).await;
    for i in 0..300 {
        ws.send(json!({"type": "ping", "rid": i})).await;
    }
    let mut limited = 0;
    let mut retry = 0;
    for _ in 0..300 {
        let f = ws.next().await;
        if f["code"] == "rate_limited" {
            limited += 1;
            retry = f["retryAfterMs"].as_u64().unwrap();
            assert!(
                f["message"].as_str().unwrap().contains("NOT processed"),
                "{f}"
            );
            assert!(f["rid"].is_number(), "{f}");
        } else {
            assert_eq!(f["type"], "pong");
        }
    }
    assert!(limited > 0 && limited < 300, "limited {limited} of 300");
    tokio::time::sleep(Duration::from_millis(retry + 50)).await;
    ws.roundtrip().await;
}

#[tokio::test]
async fn a_registration_flood_from_one_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start_with(dir.path(), opts(&["--register-rate", "5"])).await;
    let mut refused = 0;
    let mut accepted = 0;
    let mut held = Vec::new();
    for i in 0..20 {
        let mut ws = Ws::connect(&hub.url).await;
        ws.send(json!({"type": "register", "clientId": format!("R{i}")}))
            .await;
        let r = ws.next().await;
        match r["type"].as_str().unwrap() {
            "registered" => accepted += 1,
            "register_rejected" => {
                assert_eq!(r["code"], "rate_limited", "{r}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {r}"),
        }
        held.push(ws);
    }
    assert!(
        accepted >= 5 && refused > 0,
        "accepted {accepted}, refused {refused}"
    );
}

#[tokio::test]
async fn connections_over_the_cap_get_a_503_and_the_others_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start_with(dir.path(), opts(&["--max-connections", "2"])).await;
    let (mut a, _) = Ws::register(&hub.url, "A").await;
    let (_b, _) = Ws::register(&hub.url, "B").await;
    let refused = tokio_tungstenite::connect_async(&hub.url).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503)
        }
        Err(_) => {} // refused before the response could be read: still refused
        Ok(_) => panic!("a third connection was accepted over a cap of 2"),
    }
    a.roundtrip().await;
    drop(a);
    // Once one closes, there is room again (poll: the hub notices the close asynchronously).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&hub.url).await {
            ws.send(Message::text(json!({"type": "ping"}).to_string()))
                .await
                .unwrap();
            if let Some(Ok(Message::Text(_))) = ws.next().await {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room after a close"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn oversized_content_is_refused_with_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start_with(dir.path(), opts(&["--max-content-bytes", "100"])).await;
    let (mut a, _) = Ws::register(&hub.url, "A").await;
    a.send(json!({"type": "message", "to": "B", "content": "y".repeat(101)}))
        .await;
    let e = a.expect("error").await;
    assert_eq!(e["code"], "too_large");
    assert!(
        e["message"].as_str().unwrap().contains("limit is 100"),
        "{e}"
    );
    a.send(json!({"type": "message", "to": "B", "content": "y".repeat(100)}))
        .await;
    a.expect("sent").await;
}
