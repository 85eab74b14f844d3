//! Permission prompts through Claude Code's channels (docs/BRIDGE.md, "Permission
//! prompts"): a real bridge process driven by an rmcp client declares
//! `claude/channel/permission`, files each `permission_request` on the hub, and sends
//! `notifications/claude/channel/permission` with the same `request_id` and the human's
//! `behavior` once a human answers; a prompt answered locally is closed at the next tool
//! call.

use crate::common;

use common::{
    bridge::BridgeOpts,
    channel::Recorded,
    http::{get, request},
    hub::{Hub, WAIT},
};
use rmcp::model::{ClientNotification, CustomNotification};
use serde_json::{Value, json};

/// Sends a `permission_request` as Claude Code does.
async fn permission_request(b: &Recorded, request_id: &str, tool: &str) {
    let n = CustomNotification::new(
        "notifications/claude/channel/permission_request",
        Some(json!({
            "request_id": request_id,
            "tool_name": tool,
            "description": "Run the test suite",
            "input_preview": "{\"command\":\"npm test\"}",
        })),
    );
    b.client
        .send_notification(ClientNotification::CustomNotification(n))
        .await
        .expect("notification sent");
}

/// The approval filed for `request_id`, once the hub lists it.
async fn filed(port: u16, request_id: &str) -> Value {
    common::eventually("the channel prompt reaches the hub", WAIT, async || {
        let r = get(port, "/api/approvals", &[]).await;
        r.json()["approvals"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["requestId"] == request_id).cloned())
            .ok_or_else(|| r.body.clone())
    })
    .await
}

/// A human's answer, through the console's endpoint (loopback hub: origin + CSRF token).
async fn answer(port: u16, id: &str, behavior: &str) {
    let csrf = get(port, "/api/approvals", &[]).await.json()["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    let origin = format!("http://127.0.0.1:{port}");
    let r = request(
        port,
        "POST",
        &format!("/api/approvals/{id}"),
        &[("origin", &origin), ("x-relay-csrf", &csrf)],
        &json!({"behavior": behavior}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The next `permission` notification (other channel events skipped).
async fn next_verdict(b: &mut Recorded) -> Value {
    loop {
        let (method, params) = b.next_event().await;
        if method == "notifications/claude/channel/permission" {
            return params;
        }
    }
}

#[tokio::test]
async fn a_channel_prompt_reaches_the_inbox_and_a_humans_verdict_comes_back_with_its_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let mut b = Recorded::start(BridgeOpts::new(dir.path(), &hub.url, "CC-1")).await;
    let info = b.client.peer_info().expect("server info");
    let experimental = info.capabilities.experimental.clone().unwrap_or_default();
    assert_eq!(
        experimental.get("claude/channel/permission"),
        Some(&serde_json::Map::new()),
        "{experimental:?}"
    );
    b.wait_connected(WAIT).await;

    permission_request(&b, "abcde", "Bash").await;
    let a = filed(hub.port, "abcde").await;
    assert_eq!(a["session"], "CC-1");
    assert_eq!(a["source"], "channel");
    assert_eq!(a["tool"], "Bash");
    assert_eq!(a["summary"], "Run the test suite");
    assert_eq!(a["preview"], "{\"command\":\"npm test\"}");
    answer(hub.port, a["id"].as_str().unwrap(), "allow").await;
    assert_eq!(
        next_verdict(&mut b).await,
        json!({"request_id": "abcde", "behavior": "allow"})
    );

    permission_request(&b, "fghij", "Write").await;
    let a = filed(hub.port, "fghij").await;
    answer(hub.port, a["id"].as_str().unwrap(), "deny").await;
    assert_eq!(
        next_verdict(&mut b).await,
        json!({"request_id": "fghij", "behavior": "deny"})
    );

    // Answered locally: the session's next tool call closes it on the hub.
    permission_request(&b, "klmno", "Bash").await;
    let a = filed(hub.port, "klmno").await;
    let id = a["id"].as_str().unwrap().to_string();
    b.call("relay_status", Value::Null).await;
    common::eventually(
        "the locally answered prompt shows closed",
        WAIT,
        async || {
            let r = get(hub.port, &format!("/api/approvals/{id}"), &[]).await;
            match r.json()["approval"]["state"].as_str() {
                Some("closed") => Ok(()),
                _ => Err(r.body),
            }
        },
    )
    .await;
}
