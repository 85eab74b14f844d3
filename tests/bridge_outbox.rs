//! The offline outbox through real bridges (docs/BRIDGE.md, "Offline outbox"): a send while
//! the hub is unreachable is queued on this machine and says so in words that cannot pass for
//! "delivered"; the queue drains in order when the hub is back; a bridge killed with queued
//! messages leaves them to the next bridge of its session, which sends each exactly once; and
//! `RELAY_OUTBOX=off` keeps the plain "NOT sent".
//!
//! The hub runs in this process behind the impairment proxy (`common::impair`), which makes
//! it unreachable (connections reset at accept) without stopping it.

use crate::common;

use std::{path::Path, time::Duration};

use common::{
    bridge::{Bridge, BridgeOpts},
    hub::WAIT,
    impair::{Cut, Impair},
    inproc::InProcHub,
    ws::Ws,
};
use serde_json::{Value, json};

/// A bridge named `id` for the hub behind `proxy`, pinging every 250 ms (so a dead link is
/// found in half a second, not the production 40 s).
fn opts(dir: &Path, proxy: &Impair, id: &str, extra: &[(&str, &str)]) -> BridgeOpts {
    let mut o = BridgeOpts::new(dir, &proxy.ws_url(), id);
    o.env.push(("RELAY_PING_INTERVAL_MS".into(), "250".into()));
    for (k, v) in extra {
        o.env.push((k.to_string(), v.to_string()));
    }
    o
}

/// Makes the hub unreachable for the bridge: current connections reset, new ones refused.
fn go_dark(proxy: &Impair) {
    proxy.refuse_for(Duration::from_secs(3600));
    proxy.cut(Cut::Reset);
}

/// The bodies of the `message` frames `ws` receives until `n` have arrived.
async fn receive_bodies(ws: &mut Ws, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let f = ws.until("message").await;
        got.push(f["content"].as_str().unwrap().to_string());
    }
    got
}

/// The four states a sender can be told about are worded apart: "Queued on this machine …
/// not delivered yet" (no hub has it), "Stored for" (the hub has it; the recipient is
/// offline), "Delivered to" (a live recipient took it), and "read" in `relay_status`.
#[tokio::test]
async fn queued_stored_delivered_and_read_are_worded_apart() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let proxy = Impair::start(hub.addr).await.unwrap();
    let cc1 = Bridge::start_with(opts(dir.path(), &proxy, "CC-1", &[]), false).await;
    cc1.wait_connected().await;
    let s = cc1.ok("relay_status", Value::Null).await;
    assert!(s.contains("Outbox: empty"), "{s}");
    let outbox = dir.path().join("home").join("outbox").join("CC-1");
    assert!(!outbox.exists(), "nothing queued, nothing created");

    go_dark(&proxy);
    cc1.status_until("not connected to the hub", WAIT).await;
    let queued = cc1
        .ok(
            "relay_send",
            json!({"message": "written offline", "to": "CC-2"}),
        )
        .await;
    assert!(
        queued.starts_with(
            "Queued on this machine — the hub is unreachable; it will be sent when the hub is \
             back; not delivered yet."
        ),
        "{queued}"
    );
    // What the bridge says itself (the hub's connection error it quotes after "(Hub:" is
    // not its claim).
    let said = queued.split("(Hub:").next().unwrap();
    for claim in ["Delivered", "Stored", "Sent to", " id ", "read"] {
        assert!(
            !said.contains(claim),
            "queued must not say {claim:?}: {queued}"
        );
    }
    let s = cc1.ok("relay_status", Value::Null).await;
    assert!(
        s.contains("Outbox: 1 message queued on this machine, not sent yet; oldest queued"),
        "{s}"
    );

    // The hub is back: the queue drains by itself; CC-2 is offline, so it is stored.
    proxy.accept_again();
    let s = cc1.status_until("Outbox: empty", WAIT).await;
    let s = if s.contains("→CC-2 stored") {
        s
    } else {
        cc1.status_until("→CC-2 stored", WAIT).await
    };
    assert!(s.contains("\"written offline\""), "{s}");
    assert!(outbox.is_dir(), "the queue's directory stays (0700, empty)");

    // A live recipient: "Delivered", then "read" once it reads.
    let cc2 = Bridge::start_with(opts(dir.path(), &proxy, "CC-2", &[]), false).await;
    cc2.wait_connected().await;
    let live = cc1
        .ok("relay_send", json!({"message": "live note", "to": "CC-2"}))
        .await;
    assert!(live.starts_with("Delivered to CC-2 (live) — id "), "{live}");
    let got = cc2.ok("relay_receive", Value::Null).await;
    assert!(
        got.find("written offline").unwrap() < got.find("live note").unwrap(),
        "in the order sent: {got}"
    );
    let s = cc1.status_until("→CC-2 read", WAIT).await;
    assert_eq!(
        s.lines().filter(|l| l.contains("→CC-2 read")).count(),
        2,
        "{s}"
    );

    // Four answers, four different first words.
    let firsts: Vec<&str> = [queued.as_str(), "Stored for CC-2", live.as_str()]
        .iter()
        .map(|t| t.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(firsts, ["Queued", "Stored", "Delivered"]);
}

/// SIGKILL with messages queued: they are on disk, and the next bridge of the same session
/// sends each exactly once, in order, before anything sent later.
#[tokio::test]
async fn a_killed_bridge_s_queue_is_drained_once_by_the_next_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let (mut cc2, _) = Ws::register(&hub.url, "CC-2").await;
    let proxy = Impair::start(hub.addr).await.unwrap();
    proxy.refuse_for(Duration::from_secs(3600));

    // A question for CC-1, stored while it is away; its answer will be queued as a reply.
    cc2.send(json!({"type": "message", "to": "CC-1", "content": "which branch?", "rid": 7}))
        .await;
    let question = cc2.until("sent").await["id"].as_str().unwrap().to_string();

    let mut first = Bridge::start_with(opts(dir.path(), &proxy, "CC-1", &[]), false).await;
    for i in 0..5 {
        let mut args = json!({"message": format!("q{i}"), "to": "CC-2"});
        if i == 2 {
            args["reply_to"] = json!(question);
        }
        let out = first.ok("relay_send", args).await;
        assert!(out.starts_with("Queued on this machine"), "{out}");
    }
    let outbox = dir.path().join("home").join("outbox").join("CC-1");
    let files = || {
        std::fs::read_dir(&outbox)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".msg"))
            .count()
    };
    assert_eq!(files(), 5);

    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();
    drop(first);
    assert_eq!(files(), 5, "a killed bridge loses nothing it called queued");

    proxy.accept_again();
    let next = Bridge::start_with(opts(dir.path(), &proxy, "CC-1", &[]), false).await;
    // Nothing is called: the bridge registers by itself a moment after `initialized` and
    // drains then. A send made now goes behind the queue.
    next.wait_connected().await;
    let later = next
        .ok("relay_send", json!({"message": "later", "to": "CC-2"}))
        .await;
    assert!(
        later.starts_with("Delivered to CC-2") || later.starts_with("Queued on this machine"),
        "{later}"
    );
    let mut got = Vec::new();
    while got.len() < 6 {
        let f = cc2.until("message").await;
        let body = f["content"].as_str().unwrap().to_string();
        // The queued reply is still a reply after the drain.
        let answers = if body == "q2" {
            json!(question)
        } else {
            Value::Null
        };
        assert_eq!(f["replyTo"], answers, "{f}");
        got.push(body);
    }
    assert_eq!(got, ["q0", "q1", "q2", "q3", "q4", "later"]);
    next.status_until("Outbox: empty", WAIT).await;
    assert_eq!(files(), 0);
    // Exactly once: the hub stored six messages for CC-2, no more.
    cc2.send(json!({"type": "get_history", "count": 50, "from": "CC-1", "rid": 1}))
        .await;
    let h = cc2.until("history").await;
    let bodies: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["q0", "q1", "q2", "q3", "q4", "later"]);
}

/// `RELAY_OUTBOX=off`: a send without the hub is "NOT sent", and nothing is written.
#[tokio::test]
async fn with_the_outbox_off_a_send_without_the_hub_is_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let proxy = Impair::start(hub.addr).await.unwrap();
    proxy.refuse_for(Duration::from_secs(3600));
    let b = Bridge::start_with(
        opts(dir.path(), &proxy, "CC-1", &[("RELAY_OUTBOX", "off")]),
        false,
    )
    .await;
    let s = b.status_until("not connected", WAIT).await;
    assert!(s.contains("Outbox: off (RELAY_OUTBOX=off)"), "{s}");
    let out = b
        .call("relay_send", json!({"message": "hi", "to": "CC-2"}))
        .await;
    assert!(
        out.is_error && out.text.starts_with("NOT sent"),
        "{}",
        out.text
    );
    assert!(!dir.path().join("home").join("outbox").exists());
}

/// A queued message the hub refuses for good (here: over the hub's content limit) leaves the
/// queue, does not hold up the ones behind it, and is reported to the model once, with the
/// hub's reason.
#[tokio::test]
async fn a_queued_message_the_hub_refuses_is_reported_once_and_the_queue_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start_with(dir.path(), |c| c.max_content_bytes = 64).await;
    let (mut cc2, _) = Ws::register(&hub.url, "CC-2").await;
    let proxy = Impair::start(hub.addr).await.unwrap();
    proxy.refuse_for(Duration::from_secs(3600));
    let b = Bridge::start_with(opts(dir.path(), &proxy, "CC-1", &[]), false).await;
    let long = "x".repeat(100);
    for text in ["before", long.as_str(), "after"] {
        let out = b
            .ok("relay_send", json!({"message": text, "to": "CC-2"}))
            .await;
        assert!(out.starts_with("Queued on this machine"), "{out}");
    }
    proxy.accept_again();
    assert_eq!(receive_bodies(&mut cc2, 2).await, ["before", "after"]);
    // Every result may carry the notice, so keep each one seen while waiting for the drain.
    let mut notices = Vec::new();
    common::eventually("the outbox drains", WAIT, async || {
        let s = b.ok("relay_status", Value::Null).await;
        if s.starts_with("The hub refused") {
            notices.push(s.clone());
        }
        if s.contains("Outbox: empty") {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
    if notices.is_empty() {
        notices.push(b.ok("relay_status", Value::Null).await);
    }
    assert_eq!(notices.len(), 1, "{notices:?}");
    let told = &notices[0];
    assert!(
        told.starts_with(
            "The hub refused 1 message queued on this machine — NOT delivered, and not queued \
             any more:\n  →CC-2 \"xxxxxxxx"
        ),
        "{told}"
    );
    // Once.
    let again = b.ok("relay_status", Value::Null).await;
    assert!(!again.contains("The hub refused"), "{again}");
}
