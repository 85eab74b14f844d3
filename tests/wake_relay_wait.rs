//! `relay_wait`, the blocking tool for harnesses whose tool calls may block (Codex, Gemini
//! CLI): a real hub, real bridges, rmcp's client.

use crate::common;

use common::{
    bridge::{Bridge, BridgeOpts},
    hub::{Hub, WAIT},
    ws::Ws,
};
use rmcp::{
    model::{CallToolRequestParams, CallToolResult, ClientRequest, Request},
    service::PeerRequestOptions,
};
use serde_json::{Value, json};

async fn tool_names(b: &Bridge) -> Vec<String> {
    let tools = tokio::time::timeout(WAIT, b.client().list_all_tools())
        .await
        .unwrap()
        .unwrap();
    tools.iter().map(|t| t.name.to_string()).collect()
}

/// Waits (bounded) until the bridge logged that `relay_wait` is waiting: it has read the
/// mailbox, found nothing, and subscribed to pushes.
async fn until_waiting(b: &Bridge, count: usize) {
    common::eventually("relay_wait waiting", WAIT, async || {
        let log = b.log.lock().unwrap();
        let n = log
            .iter()
            .filter(|l| l.contains("relay_wait: nothing unread"))
            .count();
        if n >= count {
            Ok(())
        } else {
            Err(format!("stderr: {log:#?}"))
        }
    })
    .await;
}

async fn send(ws: &mut Ws, to: &str, content: &str) {
    ws.send(json!({"type": "message", "to": to, "content": content, "rid": "s"}))
        .await;
    ws.until("sent").await;
}

#[tokio::test]
async fn hidden_from_claude_code_and_shown_with_the_full_profile() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;

    let mut claude = BridgeOpts::new(dir.path(), &hub.url, "CC-1");
    claude
        .env
        .push(("CLAUDE_CODE_SESSION_ID".into(), "6f1c2a9e".into()));
    let cc = Bridge::start_with(claude.clone(), false).await;
    assert_eq!(
        tool_names(&cc).await,
        [
            "relay_send",
            "relay_receive",
            "relay_peers",
            "relay_status",
            "relay_sessions",
            "relay_handoff",
            "relay_tasks",
            "relay_task"
        ]
    );
    let out = cc.call("relay_wait", json!({"timeout_seconds": 0})).await;
    assert!(
        out.is_error && out.text.contains("not offered to Claude Code"),
        "{}",
        out.text
    );

    let mut full = claude;
    full.session_id = Some("CC-2".into());
    full.env.push(("RELAY_TOOL_PROFILE".into(), "full".into()));
    let b = Bridge::start_with(full, false).await;
    let names = tool_names(&b).await;
    assert_eq!(names.len(), 9, "{names:?}");
    assert_eq!(names[5], "relay_wait");

    // Without CLAUDE_CODE_SESSION_ID (Codex, Gemini CLI) the full set is the default.
    let codex = Bridge::start(dir.path(), &hub.url, "CODEX").await;
    assert!(tool_names(&codex).await.contains(&"relay_wait".to_string()));
}

#[tokio::test]
async fn returns_a_message_sent_during_the_wait_and_marks_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let b = Bridge::start(dir.path(), &hub.url, "CODEX").await;
    b.wait_connected().await;
    let (mut cc2, _) = Ws::register(&hub.url, "CC-2").await;
    let (mut cc3, _) = Ws::register(&hub.url, "CC-3").await;

    // Only CC-3 ends this wait.
    let waiting = {
        let client = b.client().peer().clone();
        tokio::spawn(async move {
            let params = CallToolRequestParams::new("relay_wait").with_arguments(
                json!({"from": "CC-3", "timeout_seconds": 60})
                    .as_object()
                    .unwrap()
                    .clone(),
            );
            tokio::time::timeout(WAIT, client.call_tool(params)).await
        })
    };
    until_waiting(&b, 1).await;

    // One wait at a time.
    let second = b.call("relay_wait", json!({"timeout_seconds": 5})).await;
    assert!(
        second.is_error && second.text.contains("already waiting"),
        "{}",
        second.text
    );

    send(&mut cc2, "CODEX", "not for this wait").await;
    send(&mut cc3, "CODEX", "the handoff is ready").await;
    let result = waiting
        .await
        .unwrap()
        .expect("relay_wait returned in time")
        .expect("relay_wait");
    let text = text_of(&result);
    assert_ne!(result.is_error, Some(true), "{text}");
    assert!(
        text.starts_with("1 unread message from CC-3, oldest first (now marked read):"),
        "{text}"
    );
    assert!(text.contains("[CC-3 → you"), "{text}");
    assert!(text.contains("the handoff is ready"), "{text}");
    assert!(!text.contains("not for this wait"), "{text}");

    // It was marked read; CC-2's message is still unread, and a wait returns it at once.
    let rest = b.ok("relay_wait", json!({"timeout_seconds": 30})).await;
    assert!(rest.contains("not for this wait"), "{rest}");
    assert_eq!(
        b.ok("relay_receive", Value::Null).await,
        "No unread messages."
    );
}

#[tokio::test]
async fn times_out_cleanly_and_a_cancelled_wait_frees_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let b = Bridge::start(dir.path(), &hub.url, "CODEX").await;
    b.wait_connected().await;

    let out = b.call("relay_wait", json!({"timeout_seconds": 1})).await;
    assert!(!out.is_error, "{}", out.text);
    assert_eq!(
        out.text,
        "No new message within 1 s (timed out). Call relay_wait again to keep waiting."
    );

    // Cancel a long wait from the client: the bridge drops it, and the next wait is taken.
    let params = CallToolRequestParams::new("relay_wait")
        .with_arguments(json!({"timeout_seconds": 600}).as_object().unwrap().clone());
    let handle = b
        .client()
        .send_cancellable_request(
            ClientRequest::CallToolRequest(Request::new(params)),
            PeerRequestOptions::no_options(),
        )
        .await
        .expect("request sent");
    until_waiting(&b, 2).await;
    handle
        .cancel(Some("user pressed escape".into()))
        .await
        .expect("cancel sent");
    let out = common::eventually("the cancelled wait frees the slot", WAIT, async || {
        let out = b.call("relay_wait", json!({"timeout_seconds": 0})).await;
        if out.text.contains("already waiting") {
            Err(out.text)
        } else {
            Ok(out.text)
        }
    })
    .await;
    assert_eq!(
        out,
        "No new message within 0 s (timed out). Call relay_wait again to keep waiting."
    );

    // Mail that arrives after the cancel is not eaten by the cancelled wait.
    let (mut cc2, _) = Ws::register(&hub.url, "CC-2").await;
    send(&mut cc2, "CODEX", "after the cancel").await;
    let got = b.ok("relay_receive", Value::Null).await;
    assert!(got.contains("after the cancel"), "{got}");
    let status = b.ok("relay_status", Value::Null).await;
    assert!(status.contains("— connected for"), "{status}");
}

fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}
