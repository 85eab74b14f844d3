//! Reading is exact across failures, through real bridges: a bridge killed with SIGKILL and
//! restarted under the same name resumes with no replay and no gap; a wiped hub store is
//! reported as a history reset (nothing hangs); and a sender can watch its message go
//! stored → delivered → read.

use crate::common;

use std::time::Duration;

use common::{bridge::Bridge, hub::Hub};
use serde_json::{Value, json};

/// The message bodies (lines like `> m07`: every body line is quoted) in a relay_receive
/// result, in order.
fn bodies(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("> "))
        .filter(|l| {
            l.len() == 3 && l.starts_with('m') && l[1..].chars().all(|c| c.is_ascii_digit())
        })
        .map(str::to_string)
        .collect()
}

/// Polls `tool` on `b` until its text contains `want` (bounded).
async fn until(b: &Bridge, tool: &str, want: &str, limit: Duration) -> String {
    common::eventually(
        &format!("{}: {tool} says {want:?}", b.id),
        limit,
        async || {
            let out = b.call(tool, Value::Null).await.text;
            if out.contains(want) {
                Ok(out)
            } else {
                Err(out)
            }
        },
    )
    .await
}

#[tokio::test]
async fn a_bridge_killed_and_restarted_resumes_reading_with_no_replay_and_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let cc1 = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    let mut cc2 = Bridge::start(dir.path(), &hub.url, "CC-2").await;
    cc1.wait_connected().await;
    cc2.wait_connected().await;
    for i in 0..25 {
        let out = cc1
            .ok(
                "relay_send",
                json!({"message": format!("m{i:02}"), "to": "CC-2"}),
            )
            .await;
        assert!(out.starts_with("Delivered to CC-2"), "{out}");
    }

    let mut seen = bodies(&cc2.ok("relay_receive", json!({"count": 10})).await);
    assert_eq!(seen.len(), 10);

    // SIGKILL: no cleanup, no goodbye to the hub.
    cc2.child.start_kill().unwrap();
    cc2.child.wait().await.unwrap();
    drop(cc2);

    let cc2 = Bridge::start(dir.path(), &hub.url, "CC-2").await;
    cc2.wait_connected().await;
    loop {
        let out = cc2.ok("relay_receive", json!({"count": 10})).await;
        let page = bodies(&out);
        if page.is_empty() {
            assert!(out.contains("No unread"), "{out}");
            break;
        }
        seen.extend(page);
    }
    let expected: Vec<String> = (0..25).map(|i| format!("m{i:02}")).collect();
    assert_eq!(seen, expected, "no replay, no gap, in order");
}

#[tokio::test]
async fn a_wiped_hub_store_is_reported_as_a_history_reset_and_nothing_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let cc1 = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    let cc2 = Bridge::start(dir.path(), &hub.url, "CC-2").await;
    cc1.wait_connected().await;
    cc2.wait_connected().await;
    cc1.ok(
        "relay_send",
        json!({"message": "before the wipe", "to": "CC-2"}),
    )
    .await;

    std::fs::remove_dir_all(&hub.data_dir).unwrap();

    // The hub notices within seconds, reopens a fresh store and closes every connection;
    // each bridge reconnects, sees the new epoch and says so once.
    for b in [&cc1, &cc2] {
        let out = until(
            b,
            "relay_status",
            "the hub's history was reset",
            Duration::from_secs(20),
        )
        .await;
        assert!(
            out.contains("Messages stored before the reset are gone"),
            "{out}"
        );
    }
    cc2.wait_connected().await;
    let out = cc2.ok("relay_receive", Value::Null).await;
    assert!(
        out.contains("No unread"),
        "the old message is gone, not replayed: {out}"
    );
    assert!(
        !out.contains("the hub's history was reset"),
        "the notice is said once: {out}"
    );

    // And the relay works again.
    let out = cc1
        .ok("relay_send", json!({"message": "m01", "to": "CC-2"}))
        .await;
    assert!(out.starts_with("Delivered to CC-2"), "{out}");
    assert_eq!(bodies(&cc2.ok("relay_receive", Value::Null).await), ["m01"]);
}

#[tokio::test]
async fn the_sender_sees_stored_then_delivered_then_read() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let cc1 = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    cc1.wait_connected().await;

    // CC-2 is offline: the message is stored.
    let out = cc1
        .ok(
            "relay_send",
            json!({"message": "offline handoff", "to": "CC-2"}),
        )
        .await;
    assert!(out.starts_with("Stored for CC-2"), "{out}");
    let status = cc1.ok("relay_status", Value::Null).await;
    assert!(status.contains("→CC-2 stored"), "{status}");

    // CC-2 comes online; a live send is delivered.
    let cc2 = Bridge::start(dir.path(), &hub.url, "CC-2").await;
    cc2.wait_connected().await;
    let out = cc1
        .ok("relay_send", json!({"message": "live note", "to": "CC-2"}))
        .await;
    assert!(out.starts_with("Delivered to CC-2"), "{out}");
    let status = cc1.ok("relay_status", Value::Null).await;
    assert!(status.contains("→CC-2 delivered"), "{status}");

    // CC-2 reads both: the sender sees them read.
    let got = cc2.ok("relay_receive", Value::Null).await;
    assert!(
        got.contains("offline handoff") && got.contains("live note"),
        "{got}"
    );
    let status = cc1.ok("relay_status", Value::Null).await;
    let read_lines = status.lines().filter(|l| l.contains("→CC-2 read")).count();
    assert_eq!(read_lines, 2, "{status}");
    assert!(
        !status.contains("→CC-2 stored") && !status.contains("→CC-2 delivered"),
        "{status}"
    );
}
