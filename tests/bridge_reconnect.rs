//! Bridges outlive their hub: while it is gone every tool answers at once and honestly (a send
//! is queued on this machine), and when it comes back on the same port they reconnect by
//! themselves and the queue goes out first.

use crate::common;

use std::time::Duration;

use common::{bridge::Bridge, hub::Hub};
use serde_json::{Value, json};

#[tokio::test]
async fn bridges_reconnect_after_a_hub_restart_and_sending_works_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path()).await;
    let port = hub.port;
    let cc1 = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    let cc2 = Bridge::start(dir.path(), &hub.url, "CC-2").await;
    cc1.wait_connected().await;
    cc2.wait_connected().await;
    let before = cc1
        .ok("relay_send", json!({"message": "before", "to": "CC-2"}))
        .await;
    assert!(before.starts_with("Delivered to CC-2"), "{before}");

    hub.kill().await;
    let down = cc1
        .status_until("not connected to the hub", Duration::from_secs(15))
        .await;
    assert!(down.contains(&format!("ws://127.0.0.1:{port}")), "{down}");
    assert!(
        down.contains("Unread: unknown while disconnected"),
        "{down}"
    );

    // Disconnected: answers from the connection state at once ("retrying in N s"), never
    // waits for a reply timeout, never claims a send: the message is queued on this machine
    // (docs/BRIDGE.md, "Offline outbox").
    let out = cc1
        .call("relay_send", json!({"message": "queued?", "to": "CC-2"}))
        .await;
    assert!(!out.is_error, "{}", out.text);
    assert!(
        out.text
            .starts_with("Queued on this machine — the hub is unreachable")
            && out.text.contains("not delivered yet")
            && out.text.contains("retrying in"),
        "{}",
        out.text
    );
    let out = cc1.call("relay_receive", Value::Null).await;
    assert!(
        out.is_error && out.text.contains("Not connected to the hub"),
        "{}",
        out.text
    );
    let sessions = cc1.ok("relay_sessions", Value::Null).await;
    assert!(sessions.starts_with("Hub unavailable"), "{sessions}");
    assert!(sessions.contains("CC-1 · running"), "{sessions}");

    let hub = Hub::start_on(dir.path(), port).await;
    assert_eq!(hub.port, port);
    // Backoff is capped at 15 s (with jitter), so 40 s covers at least two attempts.
    cc1.status_until("— connected for", Duration::from_secs(40))
        .await;
    cc2.status_until("— connected for", Duration::from_secs(40))
        .await;

    let after = cc1
        .ok(
            "relay_send",
            json!({"message": "after restart", "to": "CC-2"}),
        )
        .await;
    assert!(after.starts_with("Delivered to CC-2 (live)"), "{after}");
    let got = cc2.ok("relay_receive", Value::Null).await;
    let (queued, after) = (got.find("queued?"), got.find("after restart"));
    assert!(
        queued.is_some() && after.is_some() && queued < after,
        "the queued message went first, once: {got}"
    );
    assert_eq!(got.matches("queued?").count(), 1, "{got}");
}
