//! The bridge's tools end to end: a real hub, real `claude-relay mcp` processes, driven by
//! rmcp's client as Claude Code drives them.

use crate::common;

use common::{
    bridge::{Bridge, BridgeOpts},
    hub::{Hub, WAIT},
};
use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};

/// Positions of `needles` in `text`, asserting each occurs exactly once.
fn positions(text: &str, needles: &[String]) -> Vec<usize> {
    needles
        .iter()
        .map(|n| {
            assert_eq!(
                text.matches(n.as_str()).count(),
                1,
                "{n:?} once in:\n{text}"
            );
            text.find(n.as_str()).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn initialize_and_tools_list() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let b = Bridge::start(dir.path(), &hub.url, "CC-1").await;

    let info = b.client().peer_info().expect("server info");
    let server = info.server_info.clone().expect("serverInfo");
    assert_eq!(server.name, "claude-relay");
    assert_eq!(server.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.protocol_version, ProtocolVersion::V_2025_11_25);
    assert!(info.capabilities.tools.is_some());
    let instructions = info.instructions.clone().unwrap_or_default();
    assert!(instructions.contains("relay_send"), "{instructions}");

    let tools = tokio::time::timeout(WAIT, b.client().list_all_tools())
        .await
        .unwrap()
        .unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    // No CLAUDE_CODE_SESSION_ID: the `full` profile, with the blocking relay_wait (Claude Code
    // gets the first five; see tests/wake_relay_wait.rs).
    assert_eq!(
        names,
        [
            "relay_send",
            "relay_receive",
            "relay_peers",
            "relay_status",
            "relay_sessions",
            "relay_wait",
            "relay_handoff",
            "relay_tasks",
            "relay_task"
        ]
    );
    // MCP ping is answered.
    tokio::time::timeout(
        WAIT,
        b.client()
            .send_request(rmcp::model::ClientRequest::PingRequest(Default::default())),
    )
    .await
    .unwrap()
    .expect("ping answered");
}

#[tokio::test]
async fn direct_message_arrives_exactly_once_and_is_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let cc1 = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    let cc2 = Bridge::start(dir.path(), &hub.url, "CC-2").await;
    cc1.wait_connected().await;
    cc2.wait_connected().await;

    let sent = cc1
        .ok(
            "relay_send",
            json!({"message": "tests pass in auth.rs", "to": "CC-2"}),
        )
        .await;
    assert!(sent.starts_with("Delivered to CC-2 (live) — id "), "{sent}");

    let got = cc2.ok("relay_receive", Value::Null).await;
    assert!(got.starts_with("1 unread message, oldest first"), "{got}");
    assert!(got.contains("[CC-1 → you · "), "{got}");
    assert_eq!(got.matches("tests pass in auth.rs").count(), 1, "{got}");

    let again = cc2.ok("relay_receive", Value::Null).await;
    assert_eq!(again, "No unread messages.");
    let own = cc1.ok("relay_receive", Value::Null).await;
    assert_eq!(
        own, "No unread messages.",
        "a session never reads its own sends"
    );
    let own_history = cc1.ok("relay_receive", json!({"replay": true})).await;
    assert!(!own_history.contains("tests pass"), "{own_history}");

    // The sender sees the delivery state move to read.
    let status = cc1.ok("relay_status", Value::Null).await;
    assert!(status.contains("→CC-2 read"), "{status}");
}

#[tokio::test]
async fn broadcast_reaches_everyone_but_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let cc1 = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    let cc2 = Bridge::start(dir.path(), &hub.url, "CC-2").await;
    let cc3 = Bridge::start(dir.path(), &hub.url, "CC-3").await;
    for b in [&cc1, &cc2, &cc3] {
        b.wait_connected().await;
    }
    let sent = cc1
        .ok("relay_send", json!({"message": "standup in 5"}))
        .await;
    assert!(
        sent.starts_with("Sent to all: 2 sessions online took it"),
        "{sent}"
    );
    for b in [&cc2, &cc3] {
        let got = b.ok("relay_receive", Value::Null).await;
        assert!(
            got.contains("[CC-1 → all · ") && got.contains("standup in 5"),
            "{got}"
        );
    }
    assert_eq!(
        cc1.ok("relay_receive", Value::Null).await,
        "No unread messages."
    );
}

#[tokio::test]
async fn a_third_session_cannot_read_direct_mail() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let cc1 = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    let cc2 = Bridge::start(dir.path(), &hub.url, "CC-2").await;
    let cc3 = Bridge::start(dir.path(), &hub.url, "CC-3").await;
    cc1.ok(
        "relay_send",
        json!({"message": "secret plan", "to": "CC-2"}),
    )
    .await;
    cc2.ok(
        "relay_send",
        json!({"message": "secret reply", "to": "CC-1"}),
    )
    .await;
    for args in [
        Value::Null,
        json!({"replay": true}),
        json!({"replay": true, "from": "CC-1"}),
        json!({"replay": true, "after": "2000-01-01T00:00:00.000Z"}),
    ] {
        let out = cc3.ok("relay_receive", args.clone()).await;
        assert!(!out.contains("secret"), "{args}: {out}");
    }
    assert!(
        cc2.ok("relay_receive", Value::Null)
            .await
            .contains("secret plan")
    );
    assert!(
        cc1.ok("relay_receive", Value::Null)
            .await
            .contains("secret reply")
    );
}

#[tokio::test]
async fn mail_for_an_offline_session_is_stored_and_arrives_when_it_connects() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let cc1 = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    let out = cc1
        .call(
            "relay_send",
            json!({"message": "take over the frontend", "to": "CC-7"}),
        )
        .await;
    assert!(!out.is_error, "{}", out.text);
    assert!(
        out.text
            .starts_with("Stored for CC-7 (offline); they get it when they connect"),
        "{}",
        out.text
    );
    let status = cc1.ok("relay_status", Value::Null).await;
    assert!(status.contains("→CC-7 stored"), "{status}");

    let cc7 = Bridge::start(dir.path(), &hub.url, "CC-7").await;
    let got = cc7.ok("relay_receive", Value::Null).await;
    assert!(
        got.contains("[CC-1 → you") && got.contains("take over the frontend"),
        "{got}"
    );
}

#[tokio::test]
async fn fifteen_queued_messages_page_oldest_first_without_skipping() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let cc1 = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    let texts: Vec<String> = (1..=15).map(|i| format!("note-{i:02}.")).collect();
    for t in &texts {
        cc1.ok("relay_send", json!({"message": t, "to": "CC-2"}))
            .await;
    }
    let cc2 = Bridge::start(dir.path(), &hub.url, "CC-2").await;

    let first = cc2.ok("relay_receive", json!({"count": 10})).await;
    assert!(
        first.starts_with("10 unread messages, oldest first"),
        "{first}"
    );
    let pos = positions(&first, &texts[..10]);
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "oldest first: {first}");
    for t in &texts[10..] {
        assert!(!first.contains(t.as_str()), "{t} not yet: {first}");
    }
    assert!(
        first.ends_with("5 more unread — call relay_receive again."),
        "{first}"
    );

    let second = cc2.ok("relay_receive", json!({"count": 10})).await;
    assert!(second.starts_with("5 unread messages"), "{second}");
    let pos = positions(&second, &texts[10..]);
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{second}");
    assert!(!second.contains("more unread"), "{second}");

    assert_eq!(
        cc2.ok("relay_receive", json!({"count": 10})).await,
        "No unread messages."
    );
    // The read position lives on the hub: a restarted bridge does not replay.
    drop(cc2);
    let cc2 = Bridge::start(dir.path(), &hub.url, "CC-2").await;
    assert_eq!(
        cc2.ok("relay_receive", Value::Null).await,
        "No unread messages."
    );
}

#[tokio::test]
async fn a_long_message_is_cut_with_a_pointer_that_reads_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let cc1 = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    let cc2 = Bridge::start(dir.path(), &hub.url, "CC-2").await;
    let body: String = (0..500).map(|i| format!("line{i:04} ")).collect(); // 4,500 chars
    cc1.ok("relay_send", json!({"message": "short one", "to": "CC-2"}))
        .await;
    cc1.ok("relay_send", json!({"message": body, "to": "CC-2"}))
        .await;

    let got = cc2.ok("relay_receive", Value::Null).await;
    assert!(got.contains("short one"), "{got}");
    assert!(got.contains("cut: 2000 of 4500 characters shown"), "{got}");
    assert!(!got.contains("line0499"), "the tail is not shown");
    let pointer = got
        .split("Read it whole: relay_receive ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(']'))
        .expect("a pointer");
    let args: Value = serde_json::from_str(pointer).expect("pointer is JSON");
    let whole = cc2.ok("relay_receive", args).await;
    assert!(whole.contains(&body), "{whole}");
    assert!(whole.contains("read state unchanged"), "{whole}");
    assert!(!whole.contains("short one"), "only that message: {whole}");
}

#[tokio::test]
async fn bad_arguments_get_clear_errors_and_the_bridge_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let b = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    let cases = [
        (
            "relay_send",
            json!({}),
            "missing required argument \"message\"",
        ),
        (
            "relay_send",
            json!({"message": 42}),
            "\"message\" must be a string",
        ),
        (
            "relay_send",
            json!({"message": "x", "to": "9 lives"}),
            "not a valid session id",
        ),
        (
            "relay_send",
            json!({"text": "x"}),
            "unknown argument \"text\"",
        ),
        (
            "relay_receive",
            json!({"count": "ten"}),
            "\"count\" must be an integer",
        ),
        ("relay_receive", json!({"count": 0}), "at least 1"),
        (
            "relay_receive",
            json!({"from": "all the things"}),
            "not a valid session id",
        ),
        ("relay_nope", json!({}), "unknown tool"),
    ];
    for (tool, args, want) in cases {
        let out = b.call(tool, args.clone()).await;
        assert!(out.is_error, "{tool} {args}: {}", out.text);
        assert!(out.text.contains(want), "{tool} {args}: {}", out.text);
    }
    let ok = b.ok("relay_send", json!({"message": "still here"})).await;
    assert!(ok.starts_with("Sent to all"), "{ok}");
}

#[tokio::test]
async fn peers_and_sessions_merge_the_hub_and_the_local_registry() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let cc1 = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    let mut cc2 = Bridge::start(dir.path(), &hub.url, "CC-2").await;
    cc1.wait_connected().await;
    cc2.wait_connected().await;

    let peers = cc1.ok("relay_peers", Value::Null).await;
    assert!(peers.starts_with("2 sessions online:"), "{peers}");
    assert!(
        peers.contains("CC-1 (you) · online") && peers.contains("CC-2 · online"),
        "{peers}"
    );

    // A name recorded on this machine that never reached the hub.
    let registry =
        relay_local::registry::Registry::at(cc1.opts.home.join("sessions").join("registry.json"));
    registry
        .update(|f| f.mark_named("CC-9", Some("/work/elsewhere".into())))
        .unwrap();

    cc2.close_stdin().await;
    cc2.wait_exit(WAIT).await.expect("CC-2 exits on stdin EOF");
    let listed = common::eventually("CC-2 listed offline", WAIT, async || {
        let s = cc1.ok("relay_sessions", Value::Null).await;
        if s.contains("CC-2 · offline") {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    assert!(listed.contains("(1 online)"), "{listed}");
    assert!(listed.contains("CC-1 (you) · online"), "{listed}");
    assert!(listed.contains("CC-2 · offline, last seen"), "{listed}");
    assert!(
        listed.contains("CC-9 · named") && listed.contains("/work/elsewhere · local registry only"),
        "{listed}"
    );
    assert_eq!(
        cc1.ok("relay_peers", Value::Null).await,
        "No other session is online (you are CC-1)."
    );
}

#[tokio::test]
async fn relay_client_id_is_numbered_when_the_name_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let mut opts = BridgeOpts::new(dir.path(), &hub.url, "unused");
    opts.session_id = None;
    opts.env.push(("RELAY_CLIENT_ID".into(), "CODEX".into()));
    let a = Bridge::start_with(opts.clone(), false).await;
    a.wait_connected().await;
    let b = Bridge::start_with(opts, false).await;
    b.wait_connected().await;
    let sa = a.ok("relay_status", Value::Null).await;
    let sb = b.ok("relay_status", Value::Null).await;
    assert!(sa.contains("You: CODEX (from RELAY_CLIENT_ID)"), "{sa}");
    assert!(sb.contains("You: CODEX2 (from RELAY_CLIENT_ID)"), "{sb}");
}

#[tokio::test]
async fn a_page_too_big_for_one_result_leaves_the_rest_unread() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let cc1 = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    let bodies: Vec<String> = (0..10)
        .map(|i| format!("body-{i:02}:{}", "x".repeat(3_000)))
        .collect();
    for b in &bodies {
        cc1.ok("relay_send", json!({"message": b, "to": "CC-2"}))
            .await;
    }
    let cc2 = Bridge::start(dir.path(), &hub.url, "CC-2").await;
    let first = cc2.ok("relay_receive", json!({"count": 10})).await;
    assert!(first.chars().count() < 21_000, "bounded: {}", first.len());
    let shown = (0..10)
        .filter(|i| first.contains(&format!("body-{i:02}:")))
        .count();
    assert!((1..10).contains(&shown), "{shown} shown");
    assert!(
        first.ends_with(&format!(
            "{} more unread — call relay_receive again.",
            10 - shown
        )),
        "{}",
        &first[first.len() - 200..]
    );
    let second = cc2.ok("relay_receive", json!({"count": 10})).await;
    for i in 0..10 {
        let tag = format!("body-{i:02}:");
        assert_eq!(
            first.contains(&tag) as u8 + second.contains(&tag) as u8,
            1,
            "{tag} shown exactly once"
        );
    }
    assert_eq!(
        cc2.ok("relay_receive", Value::Null).await,
        "No unread messages."
    );
}
