//! The web console in a real browser: a hub, three real bridges (driven by MCP clients that
//! introduce themselves as Claude Code, Codex and Gemini CLI) exchanging messages, and the
//! console opened in headless Chromium. The assertions read the DOM after the page's script
//! ran: the three sessions with their presence, client and unread counts, the messages in the
//! flow, a body fetched on demand and shown as text (never as HTML), a message sent after the
//! page loaded, a task handed over with `relay_handoff` appearing on the board and moving when
//! it is claimed, and a session that disconnects turning offline — all without a reload.
//!
//! The screenshot goes to `target/console.png` (the path is printed). Without Chromium the
//! test says SKIPPED, unless `RELAY_TEST_REQUIRE_CHROMIUM=1` (CI), where it fails.

use crate::common;

use std::{path::PathBuf, time::Duration};

use common::{
    bridge::{Bridge, BridgeOpts},
    chromium::Browser,
    http::get,
    hub::Hub,
};
use serde_json::{Value, json};

async fn bridge(dir: &std::path::Path, url: &str, id: &str, client: &str) -> Bridge {
    let mut opts = BridgeOpts::new(dir, url, id);
    opts.client_name = Some(client.to_string());
    let b = Bridge::start_with(opts, false).await;
    b.wait_connected().await;
    b
}

async fn send(from: &Bridge, to: &str, text: &str) {
    let out = from
        .ok("relay_send", json!({"message": text, "to": to}))
        .await;
    assert!(out.contains(" — id "), "{out}");
}

/// `expr` as a JS string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

#[tokio::test]
async fn the_console_shows_sessions_flow_and_presence_live() {
    let Some(mut browser) = Browser::launch(1440, 1000).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let cc1 = bridge(dir.path(), &hub.url, "CC-1", "claude-code").await;
    let cc2 = bridge(dir.path(), &hub.url, "CC-2", "gemini-cli-mcp-client").await;
    let mut codex = bridge(dir.path(), &hub.url, "CODEX", "codex-mcp-client").await;

    send(&cc1, "CC-2", "the parser tests pass — see src/parse.rs:42").await;
    send(&cc2, "CC-1", "thanks, taking the frontend").await;
    send(&codex, "all", "migration done on branch db-v2").await;
    let hostile = "<img src=x onerror=\"document.title='pwned'\"> look at hub/src/auth.rs";
    send(&cc1, "CODEX", hostile).await;
    send(&cc1, "CODEX", "and the docs too").await;
    // CC-2 reads its mail (the direct message and the broadcast): its unread count is 0.
    let read = cc2.ok("relay_receive", json!({})).await;
    assert!(read.contains("the parser tests pass"), "{read}");

    // What the hub itself says, for the DOM to match.
    let state = get(hub.port, "/api/state", &[]).await.json();
    let unread = |id: &str| -> u64 {
        state["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .and_then(|s| s["unread"].as_u64())
            .unwrap_or_else(|| panic!("{id} not in {state}"))
    };
    assert_eq!((unread("CC-1"), unread("CC-2"), unread("CODEX")), (2, 0, 2));

    browser
        .open(&format!("http://127.0.0.1:{}/", hub.port))
        .await;
    browser
        .wait_for("document.body && document.body.dataset.ready === 'true' && document.querySelectorAll('[data-session]').length === 3 && document.querySelectorAll('#flow [data-seq]').length === 5")
        .await;
    // Survives only if the page is never reloaded.
    browser.eval("window.__noReload = 42").await;

    let sessions = browser
        .eval(
            "[...document.querySelectorAll('[data-session]')].map(e => ({
                id: e.dataset.session,
                presence: e.dataset.presence,
                unread: e.querySelector('.unread').textContent,
                client: e.querySelector('.client').textContent,
                cwd: (e.querySelector('.cwd') || {}).textContent || '',
                host: (e.querySelector('.host') || {}).textContent || ''
            }))",
        )
        .await;
    let by_id = |id: &str| -> Value {
        sessions
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not shown: {sessions}"))
    };
    for (id, client) in [
        ("CC-1", "Claude Code"),
        ("CC-2", "Gemini CLI"),
        ("CODEX", "Codex"),
    ] {
        let s = by_id(id);
        assert_eq!(s["presence"], "online", "{s}");
        assert_eq!(s["unread"], unread(id).to_string(), "{s}");
        assert_eq!(s["client"], client, "{s}");
        assert!(!s["cwd"].as_str().unwrap().is_empty(), "{s}");
        // The machine each bridge runs on (all three run here).
        let here = relay_local::identity::local_hostname();
        assert_eq!(s["host"], here.as_str(), "{s}");
    }
    // The header's health: the store is writable, the version is this build's.
    let health = browser
        .eval("document.getElementById('health-text').textContent")
        .await;
    let health = health.as_str().unwrap();
    assert!(
        health.starts_with(&format!("healthy · v{} · up ", env!("CARGO_PKG_VERSION"))),
        "{health}"
    );

    let flow = browser
        .eval("[...document.querySelectorAll('#flow [data-seq]')].map(e => [e.dataset.from, e.dataset.to, e.dataset.state])")
        .await;
    let flow: Vec<(String, String, String)> = serde_json::from_value(flow).unwrap();
    for (from, to) in [
        ("CC-1", "CC-2"),
        ("CC-2", "CC-1"),
        ("CODEX", "all"),
        ("CC-1", "CODEX"),
    ] {
        assert!(
            flow.iter().any(|(f, t, _)| f == from && t == to),
            "{from} → {to} missing from {flow:?}"
        );
    }
    let read_one = flow
        .iter()
        .find(|(f, t, _)| f == "CC-1" && t == "CC-2")
        .unwrap();
    assert_eq!(read_one.2, "read", "{flow:?}");

    // A body is fetched when opened, and shown as text: the markup stays inert.
    let hostile_seq = state["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["to"] == "CODEX")
        .map(|m| m["seq"].as_u64().unwrap())
        .min()
        .unwrap();
    browser
        .eval(&format!(
            "document.querySelector('#flow [data-seq=\"{hostile_seq}\"]').click()"
        ))
        .await;
    browser
        .wait_for(&format!(
            "document.getElementById('body-text').textContent === {}",
            js(hostile)
        ))
        .await;
    assert_eq!(
        browser
            .eval("document.querySelectorAll('dialog img, #flow img, #sessions img').length")
            .await,
        0
    );
    assert_ne!(browser.eval("document.title").await, "pwned");
    browser
        .eval("document.getElementById('body').close()")
        .await;

    // Live: a message sent now appears, and its recipient's unread count goes up.
    send(&cc2, "CC-1", "one more thing: the lockfile").await;
    browser
        .wait_for("document.querySelectorAll('#flow [data-seq]').length === 6 && document.querySelector('[data-session=\"CC-1\"] .unread').textContent === '3'")
        .await;

    // The task board, live: a handoff appears, then moves when its addressee claims it.
    assert_eq!(
        browser
            .eval("document.querySelector('#tasks [data-empty]').textContent")
            .await,
        "No tasks yet."
    );
    let title = "Review <b>PR 7</b>: the auth part";
    let made = cc1
        .ok(
            "relay_handoff",
            json!({"to": "CC-2", "title": title, "brief": "hub/src/auth.rs", "git": false}),
        )
        .await;
    assert!(made.starts_with("Created T-1"), "{made}");
    let row = |id: &str| {
        format!(
            "(() => {{ const r = document.querySelector('#tasks [data-task={}]'); return r &&              [r.dataset.state, r.querySelector('.route').textContent,              r.querySelector('.title').textContent, r.querySelector('.age').textContent]; }})()",
            js(id)
        )
    };
    browser
        .wait_for(&format!("({})?.[0] === 'submitted'", row("T-1")))
        .await;
    assert_eq!(
        browser.eval(&row("T-1")).await,
        json!(["submitted", "CC-1→(CC-2)", title, "just now"])
    );
    // The title is text: its markup made no element.
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#tasks b').length")
            .await,
        0
    );
    let claimed = cc2
        .ok("relay_task", json!({"id": "T-1", "action": "claim"}))
        .await;
    assert!(claimed.contains("working"), "{claimed}");
    browser
        .wait_for(&format!("({})?.[0] === 'working'", row("T-1")))
        .await;
    assert_eq!(browser.eval(&row("T-1")).await[1], "CC-1→CC-2");
    let offered = codex
        .ok(
            "relay_handoff",
            json!({"to": "any", "title": "Backfill the db-v2 migration on staging", "brief": "see branch db-v2", "git": false}),
        )
        .await;
    assert!(offered.starts_with("Created T-2"), "{offered}");
    browser
        .wait_for(&format!("({})?.[1] === 'CODEX→(any)'", row("T-2")))
        .await;
    assert_eq!(
        browser
            .eval("[...document.querySelectorAll('#tasks [data-task]')].map(r => r.dataset.task)")
            .await,
        json!(["T-1", "T-2"]),
        "working before submitted"
    );

    // A session that disconnects shows offline, without a reload.
    codex.close_stdin().await;
    assert!(codex.wait_exit(Duration::from_secs(10)).await.is_some());
    browser
        .wait_for(
            "document.querySelector('[data-session=\"CODEX\"]').dataset.presence === 'offline'",
        )
        .await;
    assert_eq!(browser.eval("window.__noReload").await, 42);
    // When it was last seen, next to its presence.
    assert_eq!(
        browser
            .eval("document.querySelector('[data-session=\"CODEX\"] .presence').textContent")
            .await,
        "offline · just now"
    );
    assert_eq!(
        browser
            .eval("document.querySelector('[data-session=\"CC-1\"]').dataset.presence")
            .await,
        "online"
    );

    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console.png");
    browser.screenshot(&shot).await;
    eprintln!("console screenshot: {}", shot.display());
    drop(cc1);
    drop(cc2);
}

#[tokio::test]
async fn behind_a_token_the_browser_logs_in_sees_the_console_and_logs_out() {
    let Some(mut browser) = Browser::launch(1200, 800).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = "browser-token-0a7d";
    let (hub, _) = Hub::start_with_token(dir.path(), token, &[]).await;
    let mut alpha = common::ws::Ws::connect(&hub.url).await;
    alpha
        .send(json!({"type": "register", "clientId": "Alpha", "token": token}))
        .await;
    alpha.expect("registered").await;

    browser
        .open(&format!("http://127.0.0.1:{}/", hub.port))
        .await;
    browser
        .wait_for("document.querySelector('form[action=\"/login\"] input[name=token]')")
        .await;
    let submit = |t: &str| {
        format!(
            "document.getElementById('token').value = {}; document.querySelector('form').submit(); true",
            js(t)
        )
    };
    browser.eval(&submit("not-the-token")).await;
    browser
        .wait_for("(document.querySelector('.error') || {}).textContent === \"That is not this hub's token.\"")
        .await;
    browser.eval(&submit(token)).await;
    browser
        .wait_for("document.body.dataset.ready === 'true' && !!document.querySelector('[data-session=\"Alpha\"][data-presence=\"online\"]') && document.getElementById('live').dataset.live === 'live'")
        .await;
    // The login cookie is HttpOnly: the page's script cannot read it.
    assert_eq!(
        browser
            .eval("document.cookie.includes('relay_session')")
            .await,
        false
    );
    assert_eq!(
        browser
            .eval("document.getElementById('logout').hidden")
            .await,
        false
    );
    browser
        .eval("document.getElementById('logout').click()")
        .await;
    browser
        .wait_for("!!document.querySelector('form[action=\"/login\"]')")
        .await;
}

#[tokio::test]
async fn the_approvals_panel_shows_a_prompt_and_a_humans_verdict_live() {
    let Some(mut browser) = Browser::launch(1280, 900).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = "browser-approvals-token-6b2e";
    let (hub, _) = Hub::start_with_token(dir.path(), token, &[]).await;

    // Without the token the inbox is closed: 401 (the login form for the page).
    assert_eq!(get(hub.port, "/api/approvals", &[]).await.status, 401);

    browser
        .open(&format!("http://127.0.0.1:{}/", hub.port))
        .await;
    browser
        .wait_for("document.querySelector('form[action=\"/login\"] input[name=token]')")
        .await;
    browser
        .eval(&format!(
            "document.getElementById('token').value = {}; document.querySelector('form').submit(); true",
            js(token)
        ))
        .await;
    browser
        .wait_for("document.body.dataset.ready === 'true' && document.getElementById('live').dataset.live === 'live' && !!document.querySelector('#approvals [data-empty]')")
        .await;
    browser.eval("window.__noReload = 7").await;

    // A hook files a prompt after the page loaded; its summary imitates markup.
    let mut hook = common::ws::Ws::connect(&hub.url).await;
    let hostile = "<img src=x onerror=\"document.title='pwned'\"> && npm test";
    hook.send(json!({
        "type": "approval_file", "clientId": "CC-2", "token": token, "tool": "Bash",
        "input": {"command": hostile}, "cwd": "/work/app", "host": "laptop", "rid": 1,
    }))
    .await;
    assert_eq!(hook.until("approval").await["approval"]["id"], "A-1");
    let row = "document.querySelector('#approvals [data-approval=\"A-1\"]')";
    browser
        .wait_for(&format!("{row}?.dataset.state === 'pending'"))
        .await;
    assert_eq!(
        browser
            .eval(&format!("{row}.querySelector('.summary').textContent"))
            .await,
        format!("Bash {hostile}")
    );
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#approvals img').length")
            .await,
        0
    );

    // A human clicks Allow: the filer is told, and the row turns to the verdict live.
    browser
        .eval(&format!(
            "{row}.querySelector('button.allow').click(); true"
        ))
        .await;
    let v = hook.until("approval_verdict").await;
    assert_eq!(v["approval"]["state"], "allowed");
    assert_eq!(v["approval"]["by"], "console (login)");
    browser
        .wait_for(&format!(
            "{row}?.dataset.state === 'allowed' && !{row}.querySelector('button')"
        ))
        .await;
    assert!(
        browser
            .eval(&format!("{row}.querySelector('.verdict').textContent"))
            .await
            .as_str()
            .unwrap()
            .contains("console (login)")
    );

    // A second prompt, decided elsewhere (expired), shows its end without a reload.
    hook.send(json!({
        "type": "approval_file", "clientId": "CC-2", "tool": "Write", "input": {"file_path": "/etc/hosts"},
        "timeoutS": 1, "rid": 2,
    }))
    .await;
    browser
        .wait_for("document.querySelector('#approvals [data-approval=\"A-2\"]')?.dataset.state === 'expired'")
        .await;
    assert_eq!(browser.eval("window.__noReload").await, 7);
    assert_ne!(browser.eval("document.title").await, "pwned");

    // A prompt whose input is longer than the preview: whoever approves is told, next to
    // Allow, that they have not seen all of it. The whole-input prompt says nothing.
    assert_eq!(
        browser
            .eval(&format!("{row}.querySelector('.cut') === null"))
            .await,
        true
    );
    hook.send(json!({
        "type": "approval_file", "clientId": "CC-2", "tool": "Bash",
        "input": {"command": "x".repeat(5000)}, "rid": 3,
    }))
    .await;
    let long = "document.querySelector('#approvals [data-approval=\"A-3\"] .actions .cut')";
    browser.wait_for(&format!("!!{long}")).await;
    assert_eq!(
        browser.eval(&format!("{long}.textContent")).await,
        format!(
            "input cut: 2000 of {} characters",
            5000 + r#"{"command":""}"#.len()
        )
    );

    // Rows moved under the pointer: A-4 moves up when A-3 is answered elsewhere; a click on
    // it right then is ignored (it might have been meant for the row that was there), and
    // taken once the list has settled.
    hook.send(json!({
        "type": "approval_file", "clientId": "CC-2", "tool": "Bash",
        "input": {"command": "echo four"}, "rid": 4,
    }))
    .await;
    let four = "document.querySelector('#approvals [data-approval=\"A-4\"]')";
    browser
        .wait_for(&format!("{four}?.dataset.state === 'pending'"))
        .await;
    let bearer = format!("Bearer {token}");
    let r = common::http::request(
        hub.port,
        "POST",
        "/api/approvals/A-3",
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
        ],
        r#"{"behavior":"deny"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (ignored, state) = (
        "document.getElementById('approvals').dataset.ignored",
        "document.querySelector('#approvals [data-approval=\"A-4\"]').dataset.state",
    );
    browser
        .wait_for(&format!(
            "document.querySelector('#approvals [data-approval=\"A-3\"]')?.dataset.state === 'denied' && ({four}.querySelector('button.allow').click(), true)"
        ))
        .await;
    assert_eq!(
        browser.eval(ignored).await,
        "A-4",
        "the click right after the move"
    );
    assert_eq!(browser.eval(state).await, "pending");
    let a4 = get(
        hub.port,
        "/api/approvals/A-4",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(
        a4.json()["approval"]["state"],
        "pending",
        "nothing was sent"
    );
    // Clicked again until the list has settled: taken.
    browser
        .wait_for(&format!(
            "{four}.dataset.state === 'allowed' || ({four}.querySelector('button.allow')?.click(), false)"
        ))
        .await;
    let v = loop {
        let v = hook.until("approval_verdict").await;
        if v["approval"]["id"] == "A-4" {
            break v;
        }
    };
    assert_eq!(v["approval"]["state"], "allowed");
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-approvals.png");
    browser.screenshot(&shot).await;
    eprintln!("approvals screenshot: {}", shot.display());
}
