//! Dead links, both ways (docs/BRIDGE.md, "Dead links"): a connection that died without a
//! FIN — the tunnel's far end is gone, the socket still looks open — is noticed by the bridge
//! within two of its ping intervals, and the hub lets the name's owner back in at once over a
//! new link instead of refusing it "in use" until the dead socket times out. Someone else is
//! still refused, and a live holder is never disturbed (tests/security_ownership.rs).
//!
//! The hub runs in this process behind the impairment proxy; `Impair::stall_current` freezes
//! the connections open now while new ones work.

use crate::common;

use common::{
    bridge::{Bridge, BridgeOpts},
    hub::WAIT,
    impair::Impair,
    inproc::InProcHub,
    ws::Ws,
};
use serde_json::{Value, json};

/// The owner of a name held by a half-open connection gets it back with one `register`;
/// a claimant without the secret, or with a wrong one, is refused first.
#[tokio::test]
async fn the_owner_reclaims_a_name_held_by_a_half_open_connection_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let proxy = Impair::start(hub.addr).await.unwrap();
    let mut holder = Ws::connect(&proxy.ws_url()).await;
    holder
        .send(json!({"type": "register", "clientId": "CC-1", "ownership": true}))
        .await;
    let reg = holder.expect("registered").await;
    let secret = reg["ownerSecret"].as_str().unwrap().to_string();

    // The tunnel dies silently: the hub still sees an open socket.
    proxy.stall_current();

    // The wrong people first: no secret, then a wrong one.
    for presented in [None, Some("not-the-secret")] {
        let mut other = Ws::connect(&hub.url).await;
        let mut frame = json!({"type": "register", "clientId": "CC-1"});
        if let Some(s) = presented {
            frame["ownerSecret"] = json!(s);
        }
        other.send(frame).await;
        let r = other.expect("register_rejected").await;
        assert_eq!(r["code"], "not_owner", "{r}");
    }

    // The owner, over a new link: registered, not "name_in_use".
    let mut back = Ws::connect(&hub.url).await;
    back.send(json!({"type": "register", "clientId": "CC-1", "ownerSecret": secret}))
        .await;
    let r = back.next().await;
    assert_eq!(r["type"], "registered", "{r}");
    assert_eq!(r["clientId"], "CC-1");
    // And it is the one mail reaches now.
    let (mut cc2, _) = Ws::register(&hub.url, "CC-2").await;
    cc2.send(json!({"type": "message", "to": "CC-1", "content": "still there?"}))
        .await;
    let m = back.until("message").await;
    assert_eq!(m["content"], "still there?");
}

/// A bridge whose link stalls notices it (no traffic for two ping intervals), dials again
/// over a fresh link and is registered under its own owned name at the first try, while the
/// hub still had the dead connection — never told the name is "held".
#[tokio::test]
async fn a_bridge_finds_a_silent_link_dead_and_is_back_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let proxy = Impair::start(hub.addr).await.unwrap();
    let (mut cc2, _) = Ws::register(&hub.url, "CC-2").await;
    let mut opts = BridgeOpts::new(dir.path(), &proxy.ws_url(), "CC-1");
    opts.env
        .push(("RELAY_PING_INTERVAL_MS".into(), "250".into()));
    let cc1 = Bridge::start_with(opts, false).await;
    cc1.wait_connected().await;
    let before = proxy.accepted();

    proxy.stall_current();
    // Found dead: the bridge says why it dropped the link (two 250 ms intervals).
    common::eventually("the bridge drops the silent link", WAIT, async || {
        let log = cc1.log.lock().unwrap().join("\n");
        if log.contains("no traffic from the hub for 0.5 s") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
    cc1.wait_connected().await;
    assert!(proxy.accepted() > before, "a new link was dialled");
    let log = cc1.log.lock().unwrap().join("\n");
    assert!(
        !log.contains("held by") && !log.contains("name_in_use"),
        "the owner was never refused its own name: {log}"
    );
    let out = cc1
        .ok(
            "relay_send",
            json!({"message": "over the new link", "to": "CC-2"}),
        )
        .await;
    assert!(out.starts_with("Delivered to CC-2 (live)"), "{out}");
    let m = cc2.until("message").await;
    assert_eq!(m["content"], "over the new link");
    let s = cc1.ok("relay_status", Value::Null).await;
    assert!(s.contains("You: CC-1"), "{s}");
}
