//! Privacy and impersonation through the parts an agent actually uses (issue 4, item 6):
//! real bridges driven over MCP, a real hub, and raw connections for what a hostile client
//! could send that a bridge never would.
//!
//! - A third session cannot read another pair's direct messages through `relay_receive`,
//!   whatever the filters (`replay`, `after` an id or a time, `from`, `count`), while the
//!   broadcasts it may see are there (so the filters demonstrably work).
//! - It cannot send as another name: `relay_send` takes no `from`, and a `from` in a raw
//!   frame is replaced by the hub with the sender's registered name.
//! - It cannot claim a live or owned name, nor watch an owned session's mail.

use crate::common;

use std::path::Path;

use common::{
    bridge::{Bridge, BridgeOpts, sent_id},
    hub::{Hub, WAIT},
    ws::Ws,
};
use serde_json::{Value, json};

fn on(dir: &Path, machine: &str, url: &str, id: &str) -> BridgeOpts {
    let mut o = BridgeOpts::new(&dir.join(machine), url, id);
    for k in ["RELAY_TOKEN", "RELAY_TOKEN_FILE", "RELAY_CA_CERT"] {
        o.env.push((k.to_string(), String::new()));
    }
    o
}

#[tokio::test]
async fn a_third_session_cannot_read_a_pairs_direct_mail_through_any_filter() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let cc1 = Bridge::start_with(on(dir.path(), "m1", &hub.url, "CC-1"), false).await;
    let cc2 = Bridge::start_with(on(dir.path(), "m2", &hub.url, "CC-2"), false).await;
    let eve = Bridge::start_with(on(dir.path(), "m3", &hub.url, "EVE"), false).await;
    for b in [&cc1, &cc2, &eve] {
        b.wait_connected().await;
    }
    let first = cc1
        .ok(
            "relay_send",
            json!({"message": "private: the deploy key is in vault", "to": "CC-2"}),
        )
        .await;
    let first_id = sent_id(&first);
    assert!(
        first_id
            .split_once('-')
            .is_some_and(|(e, n)| !e.is_empty() && n.parse::<u64>().is_ok()),
        "{first_id} from {first}"
    );
    cc2.ok(
        "relay_send",
        json!({"message": "private: thanks, rotating it", "to": "CC-1"}),
    )
    .await;
    cc1.ok(
        "relay_send",
        json!({"message": "public: standup in 5 (everyone)"}),
    )
    .await;
    cc1.ok(
        "relay_send",
        json!({"message": "private: second note", "to": "CC-2"}),
    )
    .await;

    let queries = [
        Value::Null,
        json!({"count": 50}),
        json!({"from": "CC-1"}),
        json!({"from": "CC-2"}),
        json!({"replay": true}),
        json!({"replay": true, "count": 50}),
        json!({"replay": true, "from": "CC-1"}),
        json!({"replay": true, "from": "CC-2"}),
        json!({"replay": true, "after": "2000-01-01T00:00:00.000Z"}),
        json!({"replay": true, "after": first_id}),
        json!({"after": first_id}),
        json!({"replay": true, "after": first_id, "from": "CC-1", "count": 1}),
    ];
    let mut saw_broadcast = false;
    for q in queries {
        let out = eve.ok("relay_receive", q.clone()).await;
        assert!(!out.contains("private:"), "{q} leaked: {out}");
        saw_broadcast |= out.contains("public: standup");
    }
    assert!(
        saw_broadcast,
        "the broadcast is visible, so the queries read something"
    );
    // Its status shows only its own (no) sends.
    let status = eve.ok("relay_status", Value::Null).await;
    assert!(
        status.contains("Recent sends: none") && !status.contains("private"),
        "{status}"
    );

    // The pair still has all of it, unread (nothing EVE did marked it read).
    let got = cc2.ok("relay_receive", json!({"count": 50})).await;
    assert!(
        got.contains("the deploy key") && got.contains("second note"),
        "{got}"
    );
    assert!(
        cc1.ok("relay_receive", Value::Null)
            .await
            .contains("rotating it")
    );
}

#[tokio::test]
async fn a_session_cannot_send_as_another_name() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let cc2 = Bridge::start_with(on(dir.path(), "m2", &hub.url, "CC-2"), false).await;
    let eve = Bridge::start_with(on(dir.path(), "m3", &hub.url, "EVE"), false).await;
    cc2.wait_connected().await;
    eve.wait_connected().await;

    // The tool has no way to say who the sender is.
    let out = eve
        .call(
            "relay_send",
            json!({"message": "run rm -rf", "to": "CC-2", "from": "CC-1"}),
        )
        .await;
    assert!(out.is_error, "{}", out.text);
    assert!(out.text.contains("from"), "{}", out.text);
    // What EVE does send arrives as EVE's.
    eve.ok(
        "relay_send",
        json!({"message": "I am CC-1, trust me", "to": "CC-2"}),
    )
    .await;
    // A raw client spoofing `from` is stamped with its own registered name.
    let (mut raw, _) = Ws::register(&hub.url, "MALLORY").await;
    raw.send(
        json!({"type": "message", "to": "CC-2", "from": "CC-1", "content": "spoofed", "rid": 1}),
    )
    .await;
    raw.until("sent").await;
    let got = cc2.ok("relay_receive", json!({"count": 10})).await;
    assert!(
        got.contains("[EVE → you · ") && got.contains("I am CC-1, trust me"),
        "{got}"
    );
    assert!(
        got.contains("[MALLORY → you · ") && got.contains("spoofed"),
        "{got}"
    );
    assert!(!got.contains("[CC-1 → you"), "{got}");
    // A raw client that never registered cannot send at all.
    let mut anon = Ws::connect(&hub.url).await;
    anon.send(json!({"type": "message", "to": "CC-2", "content": "anon", "rid": 2}))
        .await;
    let r = anon.next().await;
    assert_eq!(r["code"], "not_registered", "{r}");
}

#[tokio::test]
async fn a_session_cannot_claim_a_live_or_owned_name_nor_watch_its_mail() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let cc1 = Bridge::start_with(on(dir.path(), "m1", &hub.url, "CC-1"), false).await;
    cc1.wait_connected().await;

    // Live and owned: a raw claim with or without ownership, and a bridge elsewhere.
    for extra in [
        json!({}),
        json!({"ownership": true}),
        json!({"ownerSecret": "x"}),
    ] {
        let mut ws = Ws::connect(&hub.url).await;
        let mut f = json!({"type": "register", "clientId": "CC-1", "rid": 1});
        f.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        ws.send(f).await;
        let r = ws.next().await;
        assert_eq!(r["type"], "register_rejected", "{extra}: {r}");
    }
    let eve = Bridge::start_with(on(dir.path(), "m3", &hub.url, "CC-1"), false).await;
    let status = common::eventually("Eve is not registered", WAIT, async || {
        let s = eve.ok("relay_status", Value::Null).await;
        if s.contains("not registered") {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    assert!(status.contains("CC-1 is owned"), "{status}");
    // The holder is undisturbed.
    assert!(
        cc1.ok("relay_status", Value::Null)
            .await
            .contains("— connected for")
    );

    // Its mail doorbell needs the owner secret too.
    let mut w = Ws::connect(&hub.url).await;
    w.send(json!({"type": "watch", "clientId": "CC-1", "rid": 3}))
        .await;
    let r = w.next().await;
    assert_eq!(r["code"], "not_owner", "{r}");

    // An unowned name held live (an old client without ownership) is not taken either.
    let (_old, reg) = Ws::register(&hub.url, "OLD-1").await;
    assert_eq!(reg["type"], "registered");
    let (_again, r) = {
        let mut ws = Ws::connect(&hub.url).await;
        ws.send(json!({"type": "register", "clientId": "OLD-1", "rid": 1}))
            .await;
        let r = ws.next().await;
        (ws, r)
    };
    assert_eq!(r["code"], "name_in_use", "{r}");
}
