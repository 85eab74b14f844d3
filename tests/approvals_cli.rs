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
    assert_eq!(listed["summary"], "Run the tests");
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
    let typed = Command::new("script")
        .args([
            "-qec",
            &approvals_cmd(
                &hub.url,
                &token_file,
                &format!("deny {id} --message 'not on main'"),
            ),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let typed = tokio::time::timeout(WAIT, typed).await.unwrap().unwrap();
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
    assert_eq!(decided["by"], "cli (token)");
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

    // A wrong token: refused by the hub, nothing printed.
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let hook = start_hook(dir.path(), &hub.url, Some(&wrong), &["--timeout", "30"]).await;
    let (code, out, _) = finish(hook, Duration::from_secs(10)).await;
    assert_eq!((code, out.as_str()), (0, ""));
}
