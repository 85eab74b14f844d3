//! How a bridge starts, holds its name, survives bad input and ends: stdin EOF, its parent's
//! death, malformed JSON on stdin, names held by live connections, and its registry entry.

use crate::common;

use std::{process::Stdio, time::Duration};

use common::{
    bridge::{Bridge, BridgeOpts, collect_stderr, command, process_gone},
    hub::{Hub, WAIT},
    ws::Ws,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test]
async fn exits_at_once_on_stdin_eof_and_marks_its_entry_ended() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let mut b = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    b.wait_connected().await;
    let reg = b.registry();
    assert_eq!(reg["sessions"]["CC-1"]["state"], "running", "{reg}");
    assert_eq!(
        reg["sessions"]["CC-1"]["agent"]["pid"],
        json!(std::process::id()),
        "the agent is the bridge's parent: {reg}"
    );
    let bridge_pid = b.child.id().unwrap();
    assert_eq!(reg["sessions"]["CC-1"]["bridge"]["pid"], json!(bridge_pid));

    b.close_stdin().await;
    let status = b
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exit after EOF");
    assert!(status.success(), "{status:?}");
    assert_eq!(b.registry()["sessions"]["CC-1"]["state"], "ended");
}

#[tokio::test]
async fn exits_within_two_seconds_when_its_parent_dies() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    // The bridge runs under `sh`, which the test kills; the bridge's stdin stays open (the
    // test holds the pipe), so only the watchdog can notice.
    let b = Bridge::start_with(BridgeOpts::new(dir.path(), &hub.url, "CC-5"), true).await;
    b.wait_connected().await;
    let reg = b.registry();
    let sh_pid = b.child.id().unwrap();
    assert_eq!(
        reg["sessions"]["CC-5"]["agent"]["pid"],
        json!(sh_pid),
        "{reg}"
    );
    let bridge_pid = reg["sessions"]["CC-5"]["bridge"]["pid"].as_u64().unwrap() as u32;
    assert!(!process_gone(bridge_pid));

    common::hub::signal(sh_pid as i32, "KILL");
    common::eventually(
        "the bridge exits once its parent died",
        Duration::from_secs(2),
        async || {
            if process_gone(bridge_pid) {
                Ok(())
            } else {
                Err(format!(
                    "bridge {bridge_pid} still runs; stderr: {:#?}",
                    b.log.lock().unwrap()
                ))
            }
        },
    )
    .await;
    assert_eq!(b.registry()["sessions"]["CC-5"]["state"], "ended");
}

#[tokio::test]
async fn sigterm_is_a_clean_exit() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let mut b = Bridge::start(dir.path(), &hub.url, "CC-6").await;
    b.wait_connected().await;
    common::hub::signal(b.child.id().unwrap() as i32, "TERM");
    // stdin stays open: only the signal can end it.
    let status = b.wait_exit(WAIT).await.expect("exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert_eq!(b.registry()["sessions"]["CC-6"]["state"], "ended");
}

/// Raw stdio, as a sloppy client would write it.
struct Raw {
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Raw {
    async fn write(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.write_all(b"\n").await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    async fn read(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.stdout.next_line())
            .await
            .expect("a reply in time")
            .unwrap()
            .expect("stdout open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

#[tokio::test]
async fn malformed_json_on_stdin_is_ignored_and_the_bridge_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let mut child = command(&BridgeOpts::new(dir.path(), &hub.url, "CC-1"), false)
        .spawn()
        .unwrap();
    let _log = collect_stderr(&mut child);
    let mut raw = Raw {
        stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()).lines(),
    };

    // Not JSON: no reply (nothing to answer, and no error storm with a peer that turns
    // replies into more garbage); the first line out is the answer to `initialize`.
    raw.write("{this is not json").await;
    raw.write(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#).await;
    let init = raw.read().await;
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(init["result"]["serverInfo"]["name"], "claude-relay");
    raw.write(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .await;

    // More garbage after initialize, then real requests: all answered, in order.
    raw.write("]]]").await;
    raw.write(r#"{"jsonrpc":"2.0","id":"q","method":7}"#).await;
    let e = raw.read().await;
    assert_eq!(
        (e["id"].clone(), e["error"]["code"].clone()),
        (json!("q"), json!(-32600))
    );
    raw.write(r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#)
        .await;
    let pong = raw.read().await;
    assert_eq!(pong["id"], 2);
    assert_eq!(pong["result"], json!({}));
    raw.write(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"relay_send","arguments":{}}}"#).await;
    let r = raw.read().await;
    assert_eq!(r["id"], 3);
    assert_eq!(r["result"]["isError"], true);
    assert!(
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("missing required argument \"message\""),
        "{r}"
    );
    raw.write(r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"relay_send","arguments":{"message":"after the garbage"}}}"#).await;
    let r = raw.read().await;
    assert_eq!(r["id"], 4);
    assert_eq!(r["result"]["isError"], false, "{r}");

    drop(raw);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_live_name_is_not_taken_over_and_the_newcomer_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let holder = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    holder.wait_connected().await;

    // A second agent started with the same name, on another machine (its own registry) that
    // even holds the name's owner secret: a live holder is never evicted, secret or not.
    let other = dir.path().join("other-machine");
    let owners = other.join("home").join("owners");
    std::fs::create_dir_all(&owners).unwrap();
    std::fs::copy(dir.path().join("home/owners/CC-1"), owners.join("CC-1")).unwrap();
    let newcomer = Bridge::start(&other, &hub.url, "CC-1").await;
    let status = common::eventually("the newcomer is told the name is held", WAIT, async || {
        let s = newcomer.ok("relay_status", Value::Null).await;
        if s.contains("held by another live connection") {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    assert!(
        status.contains("not registered with the hub")
            && status.contains("the name CC-1 is held by another live connection"),
        "{status}"
    );
    let out = newcomer
        .call("relay_send", json!({"message": "hi", "to": "CC-2"}))
        .await;
    assert!(
        out.is_error && out.text.starts_with("NOT sent"),
        "{}",
        out.text
    );

    // The holder is undisturbed.
    let s = holder.ok("relay_status", Value::Null).await;
    assert!(s.contains("— connected for"), "{s}");
    let sent = holder
        .ok("relay_send", json!({"message": "still mine", "to": "CC-3"}))
        .await;
    assert!(sent.starts_with("Stored for CC-3"), "{sent}");
}

#[tokio::test]
async fn relay_client_id_moves_on_when_the_hub_says_the_name_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    // CODEX is held on the hub by a connection this machine's registry knows nothing about.
    let (_codex, reg) = Ws::register(&hub.url, "CODEX").await;
    assert_eq!(reg["type"], "registered");

    let mut opts = BridgeOpts::new(dir.path(), &hub.url, "unused");
    opts.session_id = None;
    opts.env.push(("RELAY_CLIENT_ID".into(), "CODEX".into()));
    let b = Bridge::start_with(opts, false).await;
    b.wait_connected().await;
    let s = b.ok("relay_status", Value::Null).await;
    assert!(s.contains("You: CODEX2 (from RELAY_CLIENT_ID)"), "{s}");
    let reg = b.registry_until("CODEX2", "running").await;
    assert_eq!(
        reg["sessions"]["CODEX2"]["bridge"]["pid"],
        json!(b.child.id().unwrap())
    );
}

#[tokio::test]
async fn an_invalid_session_id_is_refused_at_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = BridgeOpts::new(dir.path(), "ws://127.0.0.1:9", "9-lives");
    opts.env.push(("RELAY_LOG".into(), "error".into()));
    let child = command(&opts, false).stdin(Stdio::null()).spawn().unwrap();
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing on the MCP channel");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("CLAUDE_RELAY_SESSION_ID=\"9-lives\" is not a valid session id"),
        "{log}"
    );
}
