//! The hub token end to end: a real hub started with `--token-file`, real bridges and the
//! `sessions` CLI presenting the token (`RELAY_TOKEN`, `RELAY_TOKEN_FILE`, `--token-file`),
//! raw WebSocket clients without it or with a wrong one, and the refusal to listen on a
//! non-loopback address without a token.

use crate::common;

use std::{path::Path, process::Stdio};

use common::{
    bridge::{Bridge, BridgeOpts},
    hub::{Hub, HubOpts, WAIT, bin},
    ws::Ws,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, http::HeaderValue};

const TOKEN: &str = "hub-token-3b9d2e71";

async fn token_hub(dir: &Path) -> (Hub, std::path::PathBuf) {
    let token_file = dir.join("hub.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let hub = Hub::start_with(
        dir,
        HubOpts {
            args: vec!["--token-file".into(), token_file.display().to_string()],
            ..HubOpts::default()
        },
    )
    .await;
    (hub, token_file)
}

/// A bridge with exactly these security variables (the others set empty = unset).
fn opts(dir: &Path, url: &str, id: &str, env: &[(&str, &str)]) -> BridgeOpts {
    let mut o = BridgeOpts::new(dir, url, id);
    for k in ["RELAY_TOKEN", "RELAY_TOKEN_FILE", "RELAY_CA_CERT"] {
        let v = env.iter().find(|(key, _)| *key == k).map_or("", |(_, v)| v);
        o.env.push((k.to_string(), v.to_string()));
    }
    o
}

/// `claude-relay sessions ARGS` with `env` (security variables unset unless given).
async fn cli(dir: &Path, url: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    run(dir, url, "sessions", args, env).await
}

/// `claude-relay COMMAND ARGS` with `env` (security variables unset unless given).
async fn run(
    dir: &Path,
    url: &str,
    command: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut c = Command::new(bin());
    c.arg(command)
        .args(args)
        .env("CLAUDE_RELAY_HOME", dir.join("cli-home"))
        .env("RELAY_URL", url)
        .env_remove("RELAY_TOKEN")
        .env_remove("RELAY_TOKEN_FILE")
        .env_remove("RELAY_CA_CERT")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    tokio::time::timeout(WAIT, c.output())
        .await
        .unwrap_or_else(|_| panic!("{command} timed out"))
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The hub's `sessions` answer as the CLI's JSON.
fn connected_names(o: &std::process::Output) -> Vec<String> {
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)));
    assert_eq!(v["hub"]["reachable"], true, "{v}");
    v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["connected"] == true)
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn bridges_and_the_cli_work_with_the_token_from_env_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, token_file) = token_hub(dir.path()).await;
    let tf = token_file.display().to_string();
    let a = Bridge::start_with(
        opts(dir.path(), &hub.url, "CC-1", &[("RELAY_TOKEN", TOKEN)]),
        false,
    )
    .await;
    let b = Bridge::start_with(
        opts(dir.path(), &hub.url, "CC-2", &[("RELAY_TOKEN_FILE", &tf)]),
        false,
    )
    .await;
    a.wait_connected().await;
    b.wait_connected().await;
    let sent = a
        .ok(
            "relay_send",
            json!({"message": "authorized hello", "to": "CC-2"}),
        )
        .await;
    assert!(sent.starts_with("Delivered to CC-2 (live)"), "{sent}");
    assert!(
        b.ok("relay_receive", Value::Null)
            .await
            .contains("authorized hello")
    );
    // relay_sessions asks the hub before anything else is needed.
    let listed = b.ok("relay_sessions", Value::Null).await;
    assert!(listed.contains("CC-1 · online"), "{listed}");

    let with_env = cli(dir.path(), &hub.url, &["--json"], &[("RELAY_TOKEN", TOKEN)]).await;
    assert!(with_env.status.success(), "{}", text(&with_env));
    let names = connected_names(&with_env);
    assert!(names.contains(&"CC-1".to_string()) && names.contains(&"CC-2".to_string()));
    let with_flag = cli(dir.path(), &hub.url, &["--json", "--token-file", &tf], &[]).await;
    assert!(with_flag.status.success(), "{}", text(&with_flag));
    assert_eq!(connected_names(&with_flag).len(), 2, "{}", text(&with_flag));
    let with_file_env = cli(
        dir.path(),
        &hub.url,
        &["--json"],
        &[("RELAY_TOKEN_FILE", &tf)],
    )
    .await;
    assert_eq!(connected_names(&with_file_env).len(), 2);

    // Without a token the CLI still prints the local table and says why the hub did not tell.
    let without = cli(dir.path(), &hub.url, &[], &[]).await;
    let t = text(&without);
    assert!(without.status.success(), "{t}");
    assert!(
        t.contains("requires a token") && t.contains("CONNECTED shows ?"),
        "{t}"
    );
    // A wrong one is refused at the handshake, and the token is never echoed.
    let wrong = cli(
        dir.path(),
        &hub.url,
        &[],
        &[("RELAY_TOKEN", "not-the-token")],
    )
    .await;
    let t = text(&wrong);
    assert!(t.contains("refused the token (HTTP 401"), "{t}");
    assert!(!t.contains("not-the-token"), "the token leaked: {t}");
}

#[tokio::test]
async fn a_bridge_with_a_wrong_or_missing_token_says_so_and_never_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, _) = token_hub(dir.path()).await;
    let wrong = Bridge::start_with(
        opts(
            dir.path(),
            &hub.url,
            "CC-1",
            &[("RELAY_TOKEN", "wrong-token-value")],
        ),
        false,
    )
    .await;
    let none = Bridge::start_with(opts(dir.path(), &hub.url, "CC-2", &[]), false).await;
    let missing = dir.path().join("no-such-token-file");
    let missing_s = missing.display().to_string();
    let unreadable = Bridge::start_with(
        opts(
            dir.path(),
            &hub.url,
            "CC-3",
            &[("RELAY_TOKEN_FILE", &missing_s)],
        ),
        false,
    )
    .await;
    let cases = [
        (&wrong, "refused the token (HTTP 401"),
        (&none, "requires a token and no token is configured"),
        (&unreadable, "cannot read the hub token from"),
    ];
    for (b, want) in cases {
        common::eventually(
            &format!("{}: status says {want:?}", b.id),
            WAIT,
            async || {
                let s = b.ok("relay_status", Value::Null).await;
                if s.contains(want) { Ok(()) } else { Err(s) }
            },
        )
        .await;
        let out = b
            .call("relay_send", json!({"message": "hi", "to": "CC-9"}))
            .await;
        assert!(
            out.is_error && out.text.starts_with("NOT sent"),
            "{}",
            out.text
        );
    }
    let status = wrong.ok("relay_status", Value::Null).await;
    assert!(!status.contains("wrong-token-value"), "{status}");
    let log = wrong.log.lock().unwrap().join("\n");
    assert!(
        !log.contains("wrong-token-value"),
        "the token leaked: {log}"
    );
}

#[tokio::test]
async fn raw_clients_without_the_token_get_unauthorized_for_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, _) = token_hub(dir.path()).await;

    // No header, no token: every frame is refused, the connection stays open.
    let mut ws = Ws::connect(&hub.url).await;
    for (i, frame) in [
        json!({"type": "get_peers"}),
        json!({"type": "get_sessions"}),
        json!({"type": "ping"}),
        json!({"type": "message", "to": "all", "content": "hi"}),
        json!({"type": "get_history"}),
        json!({"type": "receive"}),
        json!({"type": "register", "clientId": "EVE"}),
        json!({"type": "watch", "clientId": "CC-1"}),
        json!({"type": "release", "clientId": "CC-1", "ownerSecret": "x"}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut frame = frame;
        frame["rid"] = json!(i);
        ws.send(frame.clone()).await;
        let reply = ws
            .next_within(WAIT)
            .await
            .unwrap_or_else(|| panic!("connection closed after {frame}"));
        assert_eq!(reply["type"], "error", "{frame} → {reply}");
        assert_eq!(reply["code"], "unauthorized", "{frame} → {reply}");
        assert_eq!(reply["rid"], json!(i), "{reply}");
    }

    // A wrong Authorization header is refused at the handshake with 401.
    let mut req = hub.url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "Authorization",
        HeaderValue::from_static("Bearer not-the-token"),
    );
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
    {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 401),
        other => panic!("expected HTTP 401, got {other:?}"),
    }

    // A wrong token on register is rejected and the connection closed.
    let mut ws = Ws::connect(&hub.url).await;
    ws.send(json!({"type": "register", "clientId": "EVE", "token": "guess", "rid": 1}))
        .await;
    // The hub answers `register_rejected` first, then closes the connection with the reason.
    let (frames, close) = drain_until_closed(&mut ws).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "register_rejected", "{}", frames[0]);
    assert_eq!(frames[0]["code"], "unauthorized", "{}", frames[0]);
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("invalid hub token"), "{reason}");

    // The right token on register works without the header; so does the header alone.
    let mut ws = Ws::connect(&hub.url).await;
    ws.send(json!({"type": "register", "clientId": "RAW-1", "token": TOKEN, "rid": 1}))
        .await;
    assert_eq!(ws.expect("registered").await["clientId"], "RAW-1");
    let mut req = hub.url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
    );
    let (sock, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .expect("the right header is accepted");
    let mut ws = Ws { ws: sock };
    ws.send(json!({"type": "get_peers", "rid": 2})).await;
    let peers = ws.expect("peers").await;
    assert_eq!(peers["peers"], json!(["RAW-1"]), "{peers}");
}

/// Every text frame until the connection closes, and the close frame's code and reason.
async fn drain_until_closed(ws: &mut Ws) -> (Vec<Value>, Option<(u16, String)>) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.ws.next()).await {
            Err(_) => panic!("not closed within {WAIT:?}; got {frames:?}"),
            Ok(None) | Ok(Some(Err(_))) => return (frames, None),
            Ok(Some(Ok(Message::Text(t)))) => frames.push(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(c)))) => {
                return (frames, c.map(|c| (u16::from(c.code), c.reason.to_string())));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Starts `claude-relay hub` on 0.0.0.0 port 0 with `extra` args (stderr piped).
fn wide_hub(dir: &Path, extra: &[&str]) -> tokio::process::Child {
    Command::new(bin())
        .args(["hub", "--host", "0.0.0.0", "--port", "0", "--data-dir"])
        .arg(dir.join("wide-data"))
        .args(extra)
        .env("CLAUDE_RELAY_HOME", dir.join("home"))
        .env_remove("RELAY_HOST")
        .env_remove("RELAY_PORT")
        .env_remove("RELAY_TOKEN_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn hub")
}

/// Reads stderr lines until one contains `needle`; returns every line read.
async fn stderr_until(child: &mut tokio::process::Child, needle: &str) -> Vec<String> {
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(l) = lines.next_line().await.unwrap() {
            let hit = l.contains(needle);
            seen.push(l);
            if hit {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} on stderr: {seen:#?}"));
    seen
}

#[tokio::test]
async fn a_non_loopback_hub_needs_a_token_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let refused = wide_hub(dir.path(), &[]);
    let out = tokio::time::timeout(WAIT, refused.wait_with_output())
        .await
        .expect("the hub exits at once")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("refusing to listen on 0.0.0.0 without a token")
            && err.contains("--token-file")
            && err.contains("--insecure"),
        "{err}"
    );

    let mut insecure = wide_hub(dir.path(), &["--insecure"]);
    let seen = stderr_until(&mut insecure, "listening on ws://0.0.0.0:").await;
    let all = seen.join("\n");
    assert!(all.contains("WITHOUT a token"), "a warning at start: {all}");
    insecure.start_kill().unwrap();
    let _ = tokio::time::timeout(WAIT, insecure.wait()).await;

    let token_file = dir.path().join("t");
    std::fs::write(&token_file, "tok\n").unwrap();
    let tf = token_file.display().to_string();
    let mut tokened = wide_hub(dir.path(), &["--token-file", &tf]);
    let seen = stderr_until(&mut tokened, "listening on ws://0.0.0.0:").await;
    assert!(
        !seen.join("\n").contains("WITHOUT a token"),
        "no insecure warning with a token: {seen:#?}"
    );
    tokened.start_kill().unwrap();
    let _ = tokio::time::timeout(WAIT, tokened.wait()).await;
}

/// `claude-relay wait` (the Stop-hook doorbell) presents the token from `--token-file` like
/// the other CLI commands; without it the hub's refusal is reported, and the hook stays
/// quiet (exit 0, never the exit 2 that would wake the session).
#[tokio::test]
async fn wait_rings_with_the_token_file_and_reports_a_missing_token() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, token_file) = token_hub(dir.path()).await;
    let tf = token_file.display().to_string();
    let a = Bridge::start_with(
        opts(dir.path(), &hub.url, "CC-1", &[("RELAY_TOKEN", TOKEN)]),
        false,
    )
    .await;
    a.wait_connected().await;
    let sent = a
        .ok("relay_send", json!({"message": "for later", "to": "CC-9"}))
        .await;
    assert!(sent.starts_with("Stored for CC-9"), "{sent}");

    let wait = ["--session", "CC-9", "--timeout", "20"];
    let out = run(
        dir.path(),
        &hub.url,
        "wait",
        &[&wait[..], &["--token-file", &tf]].concat(),
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("CC-1"), "{}", text(&out));

    let out = run(dir.path(), &hub.url, "wait", &wait, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("token"), "{}", text(&out));
}
