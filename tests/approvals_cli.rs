//! The approval hook played as Claude Code plays it, and the terminal's answers
//! (docs/SECURITY.md, "Approvals"): the hook JSON goes in on stdin, a human answers from a
//! second client — the console's endpoint with the token, or `claude-relay approvals` under
//! a pseudo-terminal (`script`) — and the hook prints exactly the decision JSON. Timeout and
//! a hub that is down print nothing and exit 0 within the limit; an answer from a non-TTY
//! stdin is refused and changes nothing.

use crate::common;

use std::{path::Path, process::Stdio, time::Duration};

use common::{
    http::{get, request},
    hub::{Hub, WAIT, bin},
};
use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt, process::Command};

const TOKEN: &str = "approvals-cli-token-3c9e";

fn hook_json(session: &str) -> String {
    json!({
        "session_id": session,
        "transcript_path": "/tmp/t.jsonl",
        "cwd": "/work/app",
        "permission_mode": "default",
        "hook_event_name": "PermissionRequest",
        "tool_name": "Bash",
        "tool_input": {"command": "npm test", "description": "Run the tests"},
    })
    .to_string()
}

/// Starts `claude-relay approval-hook` for relay session CC-1 with the hook JSON on stdin.
async fn start_hook(
    dir: &Path,
    url: &str,
    token_file: Option<&Path>,
    extra: &[&str],
) -> tokio::process::Child {
    let mut cmd = Command::new(bin());
    common::clean_env(&mut cmd);
    cmd.arg("approval-hook")
        .args(["--session", "CC-1", "--relay-url", url])
        .args(extra)
        .env("CLAUDE_RELAY_HOME", dir.join("relay-home"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(f) = token_file {
        cmd.arg("--token-file").arg(f);
    }
    let mut child = cmd.spawn().expect("spawn approval-hook");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(hook_json("cc-uuid-1").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    child
}

/// Waits for the hook to end (bounded) and returns (exit code, stdout, stderr).
async fn finish(child: tokio::process::Child, limit: Duration) -> (i32, String, String) {
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .expect("the hook ended within its limit")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The pending prompt's id once the hub lists it.
async fn pending_id(port: u16) -> String {
    let auth = format!("Bearer {TOKEN}");
    common::eventually(
        "the hook's prompt is pending on the hub",
        WAIT,
        async || {
            let r = get(port, "/api/approvals", &[("authorization", &auth)]).await;
            let v: Value = r.json();
            v["approvals"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["state"] == "pending"))
                .map(|x| x["id"].as_str().unwrap().to_string())
                .ok_or_else(|| r.body.clone())
        },
    )
    .await
}

async fn state_of(port: u16, id: &str) -> Value {
    let auth = format!("Bearer {TOKEN}");
    get(
        port,
        &format!("/api/approvals/{id}"),
        &[("authorization", &auth)],
    )
    .await
    .json()["approval"]
        .clone()
}

/// `claude-relay approvals ARGS` with stdin from `stdin`.
fn approvals_cmd(url: &str, token_file: &Path, args: &str) -> String {
    format!(
        "{} approvals --relay-url {url} --token-file {} {args}",
        bin(),
        token_file.display()
    )
}

#[tokio::test]
async fn the_hook_prints_a_humans_verdict_from_the_console_endpoint_and_from_the_cli_under_a_tty() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, token_file) = Hub::start_with_token(dir.path(), TOKEN, &[]).await;

    // 1. Allowed through the console's endpoint, with the token.
    let hook = start_hook(dir.path(), &hub.url, Some(&token_file), &[]).await;
    let id = pending_id(hub.port).await;
    let listed = state_of(hub.port, &id).await;
    assert_eq!(listed["tool"], "Bash");
    assert_eq!(listed["summary"], "npm test");
    assert_eq!(listed["cwd"], "/work/app");
    assert_eq!(listed["session"], "CC-1");
    let auth = format!("Bearer {TOKEN}");
    let r = request(
        hub.port,
        "POST",
        &format!("/api/approvals/{id}"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        r#"{"behavior":"allow","message":"ok from the console"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (code, out, err) = finish(hook, WAIT).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "{\"hookSpecificOutput\":{\"hookEventName\":\"PermissionRequest\",\"decision\":{\"behavior\":\"allow\",\"message\":\"ok from the console\"}}}\n"
    );

    // 2. Denied with the CLI, typed in a terminal (a pseudo-terminal made by `script`).
    let hook = start_hook(dir.path(), &hub.url, Some(&token_file), &[]).await;
    let id = pending_id(hub.port).await;
    // Its list shows the prompt with its id.
    let list = Command::new("sh")
        .arg("-c")
        .arg(approvals_cmd(&hub.url, &token_file, "--json"))
        .env_remove("RELAY_TOKEN")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let listed: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == id.as_str() && a["state"] == "pending"),
        "{listed}"
    );
    // The wrong people first: a background job holding the terminal, and a human who does
    // not type the id back. Neither changes anything.
    let background = under_script(
        &format!(
            "set -m; ({}) </dev/tty & wait $!",
            approvals_cmd(&hub.url, &token_file, &format!("allow {id}"))
        ),
        "",
    )
    .await;
    let said = String::from_utf8_lossy(&background.stdout);
    assert_eq!(background.status.code(), Some(2), "{said}");
    assert!(said.contains("foreground process group"), "{said}");
    assert_eq!(state_of(hub.port, &id).await["state"], "pending");
    let mistyped = under_script(
        &approvals_cmd(&hub.url, &token_file, &format!("allow {id}")),
        "A-999\n",
    )
    .await;
    let said = String::from_utf8_lossy(&mistyped.stdout);
    assert_eq!(mistyped.status.code(), Some(2), "{said}");
    assert!(said.contains("not confirmed"), "{said}");
    assert!(said.contains("npm test"), "the prompt was shown: {said}");
    assert_eq!(state_of(hub.port, &id).await["state"], "pending");

    let typed = under_script(
        &approvals_cmd(
            &hub.url,
            &token_file,
            &format!("deny {id} --message 'not on main'"),
        ),
        &format!("{id}\n"),
    )
    .await;
    let said = String::from_utf8_lossy(&typed.stdout);
    assert!(
        typed.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&typed.stderr)
    );
    assert!(said.contains(&format!("{id}: denied")), "{said}");
    let (code, out, err) = finish(hook, WAIT).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "{\"hookSpecificOutput\":{\"hookEventName\":\"PermissionRequest\",\"decision\":{\"behavior\":\"deny\",\"message\":\"not on main\"}}}\n"
    );
    let decided = state_of(hub.port, &id).await;
    assert_eq!(decided["by"], "cli? (token)");
}

/// Runs `command` in a pseudo-terminal made by `script`, with `typed` as what the keyboard
/// sends; returns its output (the terminal's, on stdout).
async fn under_script(command: &str, typed: &str) -> std::process::Output {
    let mut child = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(typed.as_bytes()).await.unwrap();
    drop(stdin);
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("script ended in time")
        .unwrap()
}

#[tokio::test]
async fn an_answer_from_a_non_tty_stdin_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, token_file) = Hub::start_with_token(dir.path(), TOKEN, &[]).await;
    let hook = start_hook(dir.path(), &hub.url, Some(&token_file), &[]).await;
    let id = pending_id(hub.port).await;
    for stdin in [Stdio::null(), Stdio::piped()] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(approvals_cmd(&hub.url, &token_file, &format!("allow {id}")))
            .stdin(stdin)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("refused") && err.contains("Nothing was changed"),
            "{err}"
        );
    }
    assert_eq!(state_of(hub.port, &id).await["state"], "pending");
    drop(hook);
}

#[tokio::test]
async fn timeout_and_a_hub_that_is_down_print_nothing_and_exit_0_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, token_file) = Hub::start_with_token(dir.path(), TOKEN, &[]).await;
    let hook = start_hook(dir.path(), &hub.url, Some(&token_file), &["--timeout", "1"]).await;
    let (code, out, err) = finish(hook, Duration::from_secs(10)).await;
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(err.contains("no verdict"), "{err}");

    // Nobody listens on this port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let hook = start_hook(
        dir.path(),
        &format!("ws://127.0.0.1:{port}"),
        Some(&token_file),
        &["--timeout", "30"],
    )
    .await;
    let (code, out, err) = finish(hook, Duration::from_secs(10)).await;
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(err.contains("the local dialog stays"), "{err}");

    // A hub that accepts the connection and the WebSocket handshake, then never answers:
    // the filing's reply is bounded by the same deadline as everything else.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("ws://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let (tcp, _) = silent.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        // Held open, never read from nor written to, until the test ends.
        std::future::pending::<()>().await;
        drop(ws);
    });
    let hook = start_hook(
        dir.path(),
        &silent_url,
        Some(&token_file),
        &["--timeout", "1"],
    )
    .await;
    // Within the hook's own 1 s plus a margin well under the 5 s a step alone used to take.
    let (code, out, err) = finish(hook, Duration::from_secs(4)).await;
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(err.contains("the local dialog stays"), "{err}");
    held.abort();

    // A wrong token: refused by the hub, nothing printed.
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let hook = start_hook(dir.path(), &hub.url, Some(&wrong), &["--timeout", "30"]).await;
    let (code, out, _) = finish(hook, Duration::from_secs(10)).await;
    assert_eq!((code, out.as_str()), (0, ""));
}

#[tokio::test]
async fn hooks_install_approvals_adds_the_permission_request_hook_idempotently_and_uninstall_removes_it()
 {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    let original = json!({
        "model": "opus",
        "hooks": {"PermissionRequest": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "notify-me"}]}]},
        "permissions": {"allow": ["Bash(ls)"]},
    });
    let path = home.join(".claude").join("settings.json");
    std::fs::write(&path, serde_json::to_string_pretty(&original).unwrap()).unwrap();
    let hooks = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .arg("hooks")
            .args(args)
            .env("HOME", home)
            .env_remove("RELAY_LOG")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let read = || -> Value { serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap() };

    let said = hooks(&["install", "--approvals"]);
    assert!(
        said.contains("~/.codex/hooks.json") && said.contains("approval-hook"),
        "{said}"
    );
    let s = read();
    let keys: Vec<&String> = s.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["model", "hooks", "permissions"], "key order kept");
    let groups = s["hooks"]["PermissionRequest"].as_array().unwrap();
    assert_eq!(
        groups[0]["hooks"][0]["command"], "notify-me",
        "the user's own hook stays first"
    );
    let ours = &groups[1]["hooks"][0];
    assert!(
        ours["command"]
            .as_str()
            .unwrap()
            .ends_with("claude-relay approval-hook --timeout 600"),
        "{ours}"
    );
    assert_eq!(ours["timeout"], 630, "outlives the hook's own 600 s");
    assert!(s["hooks"]["Stop"].is_array(), "the Stop hook too");

    let again = hooks(&["install", "--approvals"]);
    assert!(again.contains("nothing changed"), "{again}");
    assert_eq!(read(), s);

    // A longer wait: Claude Code is told to allow the hook 30 s more than it waits.
    hooks(&["install", "--approvals", "--timeout", "3600"]);
    let long = &read()["hooks"]["PermissionRequest"][1]["hooks"][0];
    assert!(
        long["command"]
            .as_str()
            .unwrap()
            .ends_with("approval-hook --timeout 3600"),
        "{long}"
    );
    assert_eq!(long["timeout"], 3630);
    hooks(&["install", "--approvals"]);
    assert_eq!(read(), s, "back to the default");

    hooks(&["uninstall"]);
    assert_eq!(read(), original);
}

#[tokio::test]
async fn approvals_watch_follows_the_inbox() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let (hub, token_file) = Hub::start_with_token(dir.path(), TOKEN, &[]).await;
    let mut cmd = Command::new(bin());
    common::clean_env(&mut cmd);
    let mut watch = cmd
        .args([
            "approvals",
            "--watch",
            "--json",
            "--relay-url",
            &hub.url,
            "--token-file",
        ])
        .arg(&token_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let l = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        serde_json::from_str(&l).unwrap()
    };
    assert_eq!(next().await, json!([]), "nothing waits yet");
    // The stream is followed once its `hello` came; a prompt filed now is seen.
    let hook = start_hook(dir.path(), &hub.url, Some(&token_file), &[]).await;
    let filed = next().await;
    assert_eq!(filed["state"], "pending", "{filed}");
    assert_eq!(filed["summary"], "npm test");
    drop(hook);
    let closed = next().await;
    assert_eq!(
        (closed["id"].clone(), closed["state"].clone()),
        (filed["id"].clone(), json!("closed"))
    );
}
