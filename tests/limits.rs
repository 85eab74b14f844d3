//! Limits stop floods, not work, and each is answered clearly: a slow reader is closed and
//! catches up later with nothing lost, a frame flood is rate-limited with a retry time, a
//! registration flood is refused per address, and connections over the cap get a 503. The
//! hub is served in this process (`common::inproc`); the rate limit's refill is waited for on
//! tokio's paused clock. The binary's registration flags are tried on the binary.

use crate::common;

use std::time::Duration;

use common::{
    eventually,
    hub::{Hub, HubOpts, WAIT},
    inproc::{InProcHub, hold_clock},
    ws::Ws,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_slow_reader_is_closed_with_a_reason_and_catches_up_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    // Default limits: 8 KiB messages overflow the 8 MiB outbound byte bound well before the
    // 4096-frame one.
    let hub = InProcHub::start(dir.path()).await;
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
    // The operator sees it: one overflow on /metrics (a hub without a token serves it to
    // loopback), counted once the connection is over.
    let port = hub.addr.port();
    eventually("the overflow counted on /metrics", WAIT, async || {
        let scrape = common::http::get(port, "/metrics", &[]).await.body;
        let line = scrape
            .lines()
            .find(|l| l.starts_with("relay_outbox_overflows_total"))
            .map(str::to_string);
        match line.as_deref() {
            Some("relay_outbox_overflows_total 1") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

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
    hub.stop().await;
}

#[tokio::test]
async fn a_frame_flood_is_rate_limited_with_a_retry_time_and_the_connection_stays() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start_with(dir.path(), |c| {
        c.frame_rate = 50.0;
        c.frame_burst = 100.0;
    })
    .await;
    // On a paused clock the bucket does not refill during the flood: exactly the burst is
    // served, every other frame is refused, and the connection stays.
    tokio::time::pause();
    let mut ws = hold_clock(Ws::connect(&hub.url)).await;
    let (served, limited) = hold_clock(async {
        for i in 0..300 {
            ws.send(json!({"type": "ping", "rid": i})).await;
        }
        let (mut served, mut limited) = (0, 0);
        for _ in 0..300 {
            let f = ws.next().await;
            if f["code"] == "rate_limited" {
                limited += 1;
                assert!(f["retryAfterMs"].as_u64().unwrap() >= 1, "{f}");
                assert!(
                    f["message"].as_str().unwrap().contains("NOT processed"),
                    "{f}"
                );
                assert!(f["rid"].is_number(), "{f}");
            } else {
                assert_eq!(f["type"], "pong");
                served += 1;
            }
        }
        (served, limited)
    })
    .await;
    assert_eq!((served, limited), (100, 200));
    // A fraction of a token later the next frame is still refused; waiting exactly the retry
    // time it names is enough (it is rounded up, never down).
    tokio::time::advance(Duration::from_micros(7_500)).await;
    ws.send(json!({"type": "ping", "rid": "early"})).await;
    let early = hold_clock(ws.next()).await;
    assert_eq!(early["code"], "rate_limited", "{early}");
    let retry = early["retryAfterMs"].as_u64().unwrap();
    tokio::time::advance(Duration::from_millis(retry)).await;
    ws.send(json!({"type": "ping", "rid": "on-time"})).await;
    let on_time = hold_clock(ws.next()).await;
    assert_eq!(on_time["type"], "pong", "after {retry} ms: {on_time}");
    hub.stop().await;
}

/// Over an address's registration rate, a registration waits for its turn when that comes
/// within a second (a fleet registering one after another is paced, never refused), and is
/// refused with how long to wait past that (a flood).
#[tokio::test]
async fn registrations_over_the_rate_are_paced_and_a_flood_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start_with(dir.path(), |c| {
        c.register_rate = 20.0;
        c.register_burst = 5.0;
    })
    .await;
    // One after another: 15 at 20/s after a burst of 5 — every one registered, the last ten
    // about 50 ms apart.
    let started = std::time::Instant::now();
    let mut held = Vec::new();
    for i in 0..15 {
        let mut ws = Ws::connect(&hub.url).await;
        ws.send(json!({"type": "register", "clientId": format!("S{i}")}))
            .await;
        let r = ws.next().await;
        assert_eq!(r["type"], "registered", "S{i} was paced, not refused: {r}");
        held.push(ws);
    }
    let paced = started.elapsed();
    assert!(
        paced >= Duration::from_millis(350),
        "ten over the burst at 20/s took {paced:?}"
    );

    // All at once: 40 registrations on 40 open connections. The bucket holds at most its
    // burst of 5 and about 20 more turns come within the next second; the rest are refused
    // with a wait.
    let mut conns = Ws::register_at_once(&hub.url, "F", 40).await;
    let (accepted, refused) = tally(&mut conns).await;
    assert!(
        (10..=32).contains(&accepted) && refused >= 8,
        "accepted {accepted}, refused {refused}"
    );
    hub.stop().await;
}

/// The replies to registrations sent at once: (registered, refused for the rate with a
/// wait). Anything else fails the test.
async fn tally(conns: &mut [Ws]) -> (usize, usize) {
    let (mut accepted, mut refused) = (0, 0);
    for ws in conns {
        let r = ws.next().await;
        match r["type"].as_str().unwrap() {
            "registered" => accepted += 1,
            "register_rejected" => {
                assert_eq!(r["code"], "rate_limited", "{r}");
                assert!(r["reason"].as_str().unwrap().contains("retry in"), "{r}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {r}"),
        }
    }
    (accepted, refused)
}

/// The binary's registration burst is its own flag, and by default a whole roster
/// re-registers at once, even at a sustained rate of one a second: after a hub restart every
/// SSH-tunnelled machine arrives from 127.0.0.1, and that is work, not a flood. A burst set
/// low still paces and refuses the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roster_reregisters_at_once_and_a_small_burst_still_refuses_the_rest() {
    /// Registers `n` at once on a hub started with `args`: (registered, refused).
    async fn at_once(args: &[&str], n: usize) -> (usize, usize) {
        let dir = tempfile::tempdir().unwrap();
        let opts = HubOpts {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        };
        let mut hub = Hub::start_with(dir.path(), opts).await;
        let mut conns = Ws::register_at_once(&hub.url, "R", n).await;
        let counted = tally(&mut conns).await;
        hub.kill().await;
        counted
    }
    // The default burst: at one a second sustained, 60 at once are all registered (with the
    // burst as large as the rate, all but two were refused).
    assert_eq!(at_once(&["--register-rate", "1"], 60).await, (60, 0));
    // A burst of 3 at one a second: the three, at most one held for its turn within the
    // second, and the rest refused with a wait.
    let (accepted, refused) = at_once(&["--register-rate", "1", "--register-burst", "3"], 10).await;
    assert!(
        (3..=4).contains(&accepted) && refused == 10 - accepted,
        "accepted {accepted}, refused {refused}"
    );
}

#[tokio::test]
async fn connections_over_the_cap_get_a_503_and_the_others_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start_with(dir.path(), |c| c.max_connections = 2).await;
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
    eventually("room after a close", WAIT, async || {
        let (mut ws, _) = tokio_tungstenite::connect_async(&hub.url)
            .await
            .map_err(|e| e.to_string())?;
        ws.send(Message::text(json!({"type": "ping"}).to_string()))
            .await
            .map_err(|e| e.to_string())?;
        match ws.next().await {
            Some(Ok(Message::Text(_))) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    hub.stop().await;
}

#[tokio::test]
async fn oversized_content_is_refused_with_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start_with(dir.path(), |c| c.max_content_bytes = 100).await;
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
    hub.stop().await;
}
