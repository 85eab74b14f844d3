//! Channel push: a real hub, a real `claude-relay mcp`, and rmcp's client with a handler that
//! records every custom notification — what Claude Code turns into `<channel>` events.

use crate::common;

use std::time::Duration;

use common::{
    bridge::BridgeOpts,
    channel::Recorded,
    hub::{Hub, WAIT},
    ws::Ws,
};
use serde_json::{Value, json};

/// Registers `id` on a raw connection.
async fn peer(url: &str, id: &str) -> Ws {
    let (ws, reg) = Ws::register(url, id).await;
    assert_eq!(reg["type"], "registered", "{reg}");
    ws
}

/// Sends `content` to `to` from `ws` and returns the `sent` ack.
async fn send(ws: &mut Ws, to: &str, content: &str) -> Value {
    ws.send(json!({"type": "message", "to": to, "content": content, "rid": "s"}))
        .await;
    let sent = ws.until("sent").await;
    assert_eq!(sent["rid"], "s", "{sent}");
    sent
}

/// The exact params the bridge must send for the message `sent` acknowledged.
fn expected(sent: &Value, from: &str, to: &str, content: &str) -> Value {
    json!({
        "content": content,
        "meta": {
            "from": from,
            "message_id": sent["id"],
            "seq": sent["seq"].as_u64().unwrap().to_string(),
            "to": to,
            "ts": sent["timestamp"],
        }
    })
}

#[tokio::test]
async fn new_mail_becomes_a_channel_event_with_exactly_the_documented_params() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let mut b = Recorded::start(BridgeOpts::new(dir.path(), &hub.url, "CC-1")).await;

    let info = b.client.peer_info().expect("server info");
    let experimental = info.capabilities.experimental.clone().unwrap_or_default();
    assert_eq!(
        experimental.get("claude/channel"),
        Some(&serde_json::Map::new()),
        "{experimental:?}"
    );
    let instructions = info.instructions.clone().unwrap_or_default();
    assert!(
        instructions.contains("<channel source=\"claude-relay\"")
            && instructions.contains("relay_send"),
        "{instructions}"
    );
    b.wait_connected(WAIT).await;

    let mut cc2 = peer(&hub.url, "CC-2").await;
    let sent = send(&mut cc2, "CC-1", "tests pass on main @ 3f2c1a").await;
    let (method, params) = b.next_event().await;
    assert_eq!(method, "notifications/claude/channel");
    assert_eq!(
        params,
        expected(&sent, "CC-2", "CC-1", "CC-2: tests pass on main @ 3f2c1a")
    );

    // A push is delivered, not read: the sender sees "delivered", and it is still unread.
    cc2.send(json!({"type": "get_status", "rid": "st"})).await;
    let status = cc2.until("status").await;
    assert_eq!(status["sends"][0]["state"], "delivered", "{status}");
    let unread = b.call("relay_receive", Value::Null).await;
    assert!(unread.contains("tests pass on main"), "{unread}");

    // A broadcast from the peer is announced too; the session's own send never is.
    let own = b
        .call("relay_send", json!({"message": "my own broadcast"}))
        .await;
    assert!(own.starts_with("Sent to all"), "{own}");
    let long = "x".repeat(5_000);
    let sent = send(&mut cc2, "all", &long).await;
    let (_, params) = b.next_event().await;
    let content = params["content"].as_str().unwrap();
    assert!(
        content.starts_with(&format!("CC-2: {}", "x".repeat(2_000))),
        "{content:.80}"
    );
    assert!(!content.contains(&"x".repeat(2_001)));
    // The pointer replays exactly this message: `after` is its id with seq - 1.
    let epoch = sent["id"].as_str().unwrap().rsplit_once('-').unwrap().0;
    let before = sent["seq"].as_u64().unwrap() - 1;
    assert!(
        content.ends_with(&format!(
            "[cut: 2000 of 5000 characters shown. Read it whole: relay_receive \
             {{\"replay\":true,\"after\":\"{epoch}-{before}\",\"from\":\"CC-2\",\"count\":1}}]"
        )),
        "{}",
        &content[2_000..]
    );
    assert_eq!(params["meta"]["to"], "all");
    assert_eq!(params["meta"]["message_id"], sent["id"]);
}

#[tokio::test]
async fn backlog_is_announced_after_initialized_and_never_twice_across_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path()).await;
    let port = hub.port;
    // Mail that waits for CC-1 while it is away.
    let mut cc2 = peer(&hub.url, "CC-2").await;
    let first = send(&mut cc2, "CC-1", "one").await;
    let second = send(&mut cc2, "CC-1", "two").await;

    let mut b = Recorded::start(BridgeOpts::new(dir.path(), &hub.url, "CC-1")).await;
    let (_, p1) = b.next_event().await;
    let (_, p2) = b.next_event().await;
    assert_eq!(p1, expected(&first, "CC-2", "CC-1", "CC-2: one"));
    assert_eq!(p2, expected(&second, "CC-2", "CC-1", "CC-2: two"));
    b.wait_connected(WAIT).await;

    // The hub restarts: on reconnect it pushes the (still unread) backlog again.
    drop(cc2);
    hub.kill().await;
    let hub = Hub::start_on(dir.path(), port).await;
    b.wait_connected(Duration::from_secs(40)).await;
    let mut cc2 = peer(&hub.url, "CC-2").await;
    let third = send(&mut cc2, "CC-1", "three").await;
    // The re-pushed backlog came in before "three" on the same connection; the next event
    // being "three" shows it was not announced again.
    let (_, p3) = b.next_event().await;
    assert_eq!(p3, expected(&third, "CC-2", "CC-1", "CC-2: three"));
    let unread = b.call("relay_receive", Value::Null).await;
    assert!(unread.starts_with("3 unread messages"), "{unread}");
    assert!(b.events.try_recv().is_err(), "nothing else was announced");
}

#[tokio::test]
async fn with_channel_push_off_no_notification_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let mut by_env = BridgeOpts::new(dir.path(), &hub.url, "CC-1");
    by_env.env.push(("RELAY_CHANNEL".into(), "off".into()));
    let mut by_flag = BridgeOpts::new(dir.path(), &hub.url, "CC-3");
    by_flag.args.push("--no-channel".into());
    let mut bridges = [
        Recorded::start(by_env).await,
        Recorded::start(by_flag).await,
    ];
    for (b, id) in bridges.iter().zip(["CC-1", "CC-3"]) {
        let info = b.client.peer_info().expect("server info");
        let channel = info
            .capabilities
            .experimental
            .as_ref()
            .and_then(|e| e.get("claude/channel"));
        assert!(channel.is_none(), "{id} declared channels: {info:?}");
        b.wait_connected(WAIT).await;
    }

    let mut cc2 = peer(&hub.url, "CC-2").await;
    send(&mut cc2, "CC-1", "quiet please").await;
    send(&mut cc2, "CC-3", "quiet please").await;
    send(&mut cc2, "all", "quiet broadcast").await;
    for b in &mut bridges {
        // The bridge has the mail (it reads it through the same connection that carried the
        // pushes), and one more round trip gives a notification every chance to arrive first.
        let got = b.call("relay_receive", Value::Null).await;
        assert!(
            got.contains("quiet please") && got.contains("quiet broadcast"),
            "{got}"
        );
        let _ = b.call("relay_status", Value::Null).await;
        assert!(b.events.try_recv().is_err(), "a notification was sent");
    }
}
