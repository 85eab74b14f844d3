//! A health check leaves nothing behind, and sessions that are gone do not pile up: a real
//! hub, real bridges, rmcp's client doing exactly what `claude mcp list` does, and the
//! sender's view of its mail (`get_status`) as the proof of what was delivered.

use crate::common;

use std::{path::Path, time::Duration};

use common::{
    bridge::{Bridge, BridgeOpts, client_config, collect_stderr, command},
    channel::Recorded,
    hub::{Hub, WAIT, bin},
    ws::Ws,
};
use rmcp::ServiceExt;
use serde_json::{Value, json};

/// A raw connection registered as `id` (owned when `owned`), as the Node relay's clients
/// register; returns it and the `registered` frame.
async fn raw(url: &str, id: &str, owned: bool) -> (Ws, Value) {
    let mut ws = Ws::connect(url).await;
    ws.send(json!({"type": "register", "clientId": id, "ownership": owned}))
        .await;
    let reg = ws.until("registered").await;
    (ws, reg)
}

/// `from` sends `content` to `to`; returns the `sent` ack.
async fn send(ws: &mut Ws, to: &str, content: &str) -> Value {
    ws.send(json!({"type": "message", "to": to, "content": content, "rid": "s"}))
        .await;
    ws.until("sent").await
}

/// The state of `ws`'s most recent send, as its sender sees it.
async fn last_send_state(ws: &mut Ws) -> String {
    ws.send(json!({"type": "get_status", "rid": "st"})).await;
    let st = ws.until("status").await;
    st["sends"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The hub's first `get_sessions` page: id → online.
async fn sessions_online(ws: &mut Ws) -> Vec<(String, bool)> {
    ws.send(json!({"type": "get_sessions", "rid": "ls"})).await;
    let s = ws.until("sessions").await;
    s["sessions"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, v)| (id.clone(), v["online"] == true))
        .collect()
}

/// The ids the hub lists in its first `get_sessions` page.
async fn listed(ws: &mut Ws) -> Vec<String> {
    sessions_online(ws)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// Polls the hub's first page (id → online) until `done` says yes (bounded by [`WAIT`]);
/// returns the ids.
async fn poll_sessions(
    ws: &mut Ws,
    what: &str,
    done: impl Fn(&[(String, bool)]) -> bool,
) -> Vec<String> {
    common::eventually(&format!("the hub {what}"), WAIT, async || {
        let all = sessions_online(ws).await;
        if done(&all) {
            Ok(all.into_iter().map(|(id, _)| id).collect())
        } else {
            Err(format!("{all:?}"))
        }
    })
    .await
}

/// Polls until `id` is listed and offline.
async fn offline_until(ws: &mut Ws, id: &str) {
    poll_sessions(ws, &format!("listed {id} offline"), |all| {
        all.iter().any(|(i, online)| i == id && !online)
    })
    .await;
}

/// Polls until the listed ids satisfy `done`.
async fn listed_until(ws: &mut Ws, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    poll_sessions(ws, what, |all| {
        done(&all.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>())
    })
    .await
}

/// Files in the owner-secret directory of `home`.
fn owner_files(home: &Path) -> Vec<String> {
    std::fs::read_dir(home.join("owners"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Exactly what `claude mcp list` does with a stdio server: spawn it, `initialize` (and
/// `initialized`), list its tools, and hang up — here after half a second, as a health check
/// does that waits for the other servers it checks. Returns the bridge's stderr.
async fn probe(opts: &BridgeOpts) -> Vec<String> {
    let mut child = command(opts, false).spawn().expect("spawn bridge");
    let log = collect_stderr(&mut child);
    let stdout = child.stdout.take().unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut client = tokio::time::timeout(WAIT, client_config().serve((stdout, stdin)))
        .await
        .expect("initialize in time")
        .expect("initialize");
    let tools = tokio::time::timeout(WAIT, client.list_all_tools())
        .await
        .expect("tools/list in time")
        .expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "relay_send"));
    // The other servers of a `claude mcp list` take a moment; ours waits with them. (This is
    // the client's behaviour being modelled, not a wait for anything to be ready.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = tokio::time::timeout(WAIT, client.close()).await;
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the bridge exits when its client hangs up")
        .unwrap();
    assert!(status.success(), "{status}");
    log.lock().unwrap().clone()
}

#[tokio::test]
async fn a_health_check_leaves_no_session_no_owner_secret_and_no_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let (mut lead, _) = raw(&hub.url, "LEAD", false).await;
    let sent = send(&mut lead, "CC-1", "the handoff: take over the parser").await;
    assert_eq!(sent["delivered"], false, "{sent}");

    // `claude mcp list` in a shell named CC-1, and one where the bridge names itself.
    let named = BridgeOpts::new(dir.path(), &hub.url, "CC-1");
    let log = probe(&named).await;
    let mut auto = BridgeOpts::new(dir.path(), &hub.url, "unused");
    auto.session_id = None;
    let log_auto = probe(&auto).await;

    // LEAD's mail is still only stored: no agent saw it.
    assert_eq!(last_send_state(&mut lead).await, "stored");
    // The hub knows no one but LEAD.
    assert_eq!(listed(&mut lead).await, ["LEAD"]);
    // No owner secret was minted, and the registry did not record a session.
    let home = &named.home;
    assert!(owner_files(home).is_empty(), "{:?}", owner_files(home));
    let reg = common::bridge::read_registry(home);
    assert!(
        reg["sessions"].as_object().is_none_or(|s| s.is_empty()),
        "{reg}"
    );
    for line in log.iter().chain(&log_auto) {
        assert!(!line.contains("registered as"), "{line}");
    }

    // A real session of CC-1 gets the mail, untouched by the probes.
    let cc1 = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    let got = cc1.ok("relay_receive", Value::Null).await;
    assert!(got.contains("> the handoff: take over the parser"), "{got}");
    assert_eq!(last_send_state(&mut lead).await, "read");
}

#[tokio::test]
async fn a_client_that_stays_is_registered_without_calling_a_tool() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let (mut lead, _) = raw(&hub.url, "LEAD", false).await;
    let sent = send(&mut lead, "CC-1", "waiting for you").await;
    let mut opts = BridgeOpts::new(dir.path(), &hub.url, "CC-1");
    opts.env
        .push(("RELAY_REGISTER_DELAY_MS".into(), "200".into()));
    let mut b = Recorded::start(opts).await;
    // No tool call: the session registers by itself and its backlog arrives as an event.
    let (method, params) = b.next_event().await;
    assert_eq!(method, "notifications/claude/channel");
    assert_eq!(params["meta"]["message_id"], sent["id"]);
    assert_eq!(last_send_state(&mut lead).await, "delivered");
    listed_until(&mut lead, "listed CC-1", |ids| {
        ids.iter().any(|i| i == "CC-1")
    })
    .await;
}

#[tokio::test]
async fn an_auto_named_session_is_forgotten_when_it_leaves_unless_mail_waits() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let (mut lead, _) = raw(&hub.url, "LEAD", false).await;

    let start_auto = || async {
        let mut opts = BridgeOpts::new(dir.path(), &hub.url, "unused");
        opts.session_id = None;
        let b = Bridge::start_with(opts, false).await;
        b.wait_connected().await;
        let status = b.ok("relay_status", Value::Null).await;
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("You: "))
            .and_then(|l| l.split_whitespace().next())
            .expect(&status)
            .to_string();
        assert!(status.contains("(from hostname+pid)"), "{status}");
        (b, name)
    };

    // One that leaves with nothing waiting is gone from the hub's list.
    let (mut quiet, quiet_name) = start_auto().await;
    assert!(listed(&mut lead).await.contains(&quiet_name));
    assert!(
        owner_files(&quiet.opts.home).is_empty(),
        "a made-up name keeps its owner secret in memory only"
    );
    quiet.close_stdin().await;
    quiet.wait_exit(WAIT).await.expect("bridge exits");
    listed_until(&mut lead, "forgot the auto-named session", |ids| {
        !ids.contains(&quiet_name)
    })
    .await;

    // One with direct mail waiting stays listed (and owned) for whoever comes for it.
    let (mut busy, busy_name) = start_auto().await;
    let (mut other, _) = raw(&hub.url, "OTHER", false).await;
    send(&mut other, &busy_name, "unread when it left").await;
    busy.close_stdin().await;
    busy.wait_exit(WAIT).await.expect("bridge exits");
    offline_until(&mut lead, &busy_name).await;
    // Still owned (by the secret the gone bridge held in memory): a stranger cannot forget
    // it, nor claim it and read the mail.
    lead.send(json!({"type": "forget", "clientId": busy_name, "rid": "f"}))
        .await;
    let refused = lead.until("error").await;
    assert_eq!(refused["code"], "not_owner", "{refused}");
    assert!(listed(&mut lead).await.contains(&busy_name));
}

/// `claude-relay sessions forget NAME` with the relay home `home`, against `url`.
async fn forget_cli(home: &Path, url: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(bin());
    common::clean_env(&mut cmd);
    cmd.args(["sessions", "forget"])
        .args(args)
        .env("CLAUDE_RELAY_HOME", home)
        .env("RELAY_URL", url)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("forget finished in time")
        .expect("run forget");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn forget_refuses_the_wrong_person_and_an_online_session_then_forgets() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let (mut stranger, _) = raw(&hub.url, "STRANGER", false).await;

    // CC-1 runs (its bridge owns the name; the secret is in its home).
    let mut cc1 = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    cc1.wait_connected().await;
    let home = cc1.opts.home.clone();
    assert_eq!(owner_files(&home), ["CC-1"]);
    let (ok, _, err) = forget_cli(&home, &hub.url, &["CC-1"]).await;
    assert!(!ok && err.contains("is online"), "{err}");

    cc1.close_stdin().await;
    cc1.wait_exit(WAIT).await.expect("bridge exits");
    offline_until(&mut stranger, "CC-1").await;

    // The wrong people: no secret, a wrong secret, another machine's home.
    for frame in [
        json!({"type": "forget", "clientId": "CC-1", "rid": 1}),
        json!({"type": "forget", "clientId": "CC-1", "ownerSecret": "0".repeat(64), "rid": 2}),
    ] {
        stranger.send(frame).await;
        let e = stranger.until("error").await;
        assert_eq!(e["code"], "not_owner", "{e}");
    }
    let elsewhere = dir.path().join("other-home");
    let (ok, _, err) = forget_cli(&elsewhere, &hub.url, &["CC-1"]).await;
    assert!(
        !ok && err.contains("no owner secret for it on this machine"),
        "{err}"
    );
    assert!(listed(&mut stranger).await.contains(&"CC-1".to_string()));

    // The owner: forgotten on the hub, its secret and its registry entry removed here.
    let (ok, out, err) = forget_cli(&home, &hub.url, &["CC-1"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("forgot CC-1"), "{out}");
    assert!(!listed(&mut stranger).await.contains(&"CC-1".to_string()));
    assert!(owner_files(&home).is_empty());
    assert!(common::bridge::read_registry(&home)["sessions"]["CC-1"].is_null());
    // The name is free again: anyone may claim it.
    let (_, reg) = raw(&hub.url, "CC-1", true).await;
    assert_eq!(reg["owned"], true, "a fresh claim: {reg}");

    // A name nobody owns can be forgotten by anyone; an unknown one is said to be unknown.
    let (node, _) = raw(&hub.url, "NODE", false).await;
    drop(node);
    offline_until(&mut stranger, "NODE").await;
    let (ok, out, err) = forget_cli(&elsewhere, &hub.url, &["NODE"]).await;
    assert!(ok, "{out}{err}");
    let (ok, _, err) = forget_cli(&elsewhere, &hub.url, &["NOBODY"]).await;
    assert!(!ok && err.contains("knows a session NOBODY"), "{err}");

    // The operator, on the hub's host, needs no secret.
    let (owned, _) = raw(&hub.url, "OWNED", true).await;
    drop(owned);
    offline_until(&mut stranger, "OWNED").await;
    let data = hub.data_dir.to_str().unwrap().to_string();
    let (ok, out, err) = forget_cli(
        &elsewhere,
        &hub.url,
        &["OWNED", "--local", "--data-dir", &data],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(!listed(&mut stranger).await.contains(&"OWNED".to_string()));
}
