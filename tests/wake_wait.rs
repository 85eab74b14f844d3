//! `claude-relay wait`, the Stop-hook doorbell: a real hub, the real binary, real registry
//! files. Exit 2 (with one line on stderr) means "mail is waiting"; 0 is silent.

use crate::common;

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{
    bridge::{Bridge, BridgeOpts, collect_stderr},
    hub::{Hub, WAIT, bin},
    ws::Ws,
};
use serde_json::json;
use tokio::{
    io::AsyncWriteExt,
    process::{Child, Command},
};

/// How soon after the sender's ack a blocked `wait` must have exited. Generous for a loaded
/// machine; the doorbell itself takes milliseconds (a push, one `watch` round trip).
const WAKE_LIMIT: Duration = Duration::from_secs(5);

/// `claude-relay wait ARGS` against `url`, with the relay home under `dir`, no session in
/// the environment, info logs on stderr when `logs`.
fn wait_cmd(dir: &Path, url: &str, args: &[&str], logs: bool) -> Command {
    let mut cmd = Command::new(bin());
    common::clean_env(&mut cmd);
    cmd.arg("wait")
        .args(args)
        .env("CLAUDE_RELAY_HOME", dir.join("home"))
        .env("RELAY_URL", url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if logs {
        cmd.env("RELAY_LOG", "info");
    } else {
        cmd.env_remove("RELAY_LOG");
    }
    cmd
}

/// Runs to completion (bounded by [`WAIT`]): exit status and stderr.
async fn run(mut cmd: Command) -> (ExitStatus, String) {
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("wait finished in time")
        .expect("run wait");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `wait` running in the background, its stderr collected.
struct Waiter {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Waiter {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("spawn wait");
        let log = collect_stderr(&mut child);
        Self { child, log }
    }

    /// Waits (bounded) until the log has `n` lines containing `needle`.
    async fn until_logged(&self, needle: &str, n: usize) {
        common::eventually(&format!("{needle:?} logged ×{n}"), WAIT, async || {
            let log = self.log.lock().unwrap();
            if log.iter().filter(|l| l.contains(needle)).count() >= n {
                Ok(())
            } else {
                Err(format!("{log:#?}"))
            }
        })
        .await
    }

    async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "wait still running after {limit:?}: {:#?}",
                    self.log.lock().unwrap()
                )
            })
            .expect("wait for child")
    }

    /// The doorbell line, once the stderr reader has caught up with the exited process.
    async fn doorbell_line(&self) -> String {
        self.until_logged("— call relay_receive", 1).await;
        let log = self.log.lock().unwrap();
        let lines: Vec<&String> = log.iter().filter(|l| l.contains("relay_receive")).collect();
        assert_eq!(lines.len(), 1, "{log:#?}");
        lines[0].clone()
    }
}

async fn send(ws: &mut Ws, to: &str, content: &str) {
    ws.send(json!({"type": "message", "to": to, "content": content, "rid": "s"}))
        .await;
    let sent = ws.until("sent").await;
    assert_eq!(sent["rid"], "s");
}

#[tokio::test]
async fn mail_already_waiting_exits_2_at_once_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let (mut cc2, _) = Ws::register(&hub.url, "CC-2").await;
    send(&mut cc2, "CC-1", "first").await;
    send(&mut cc2, "CC-1", "second").await;

    let (status, stderr) = run(wait_cmd(
        dir.path(),
        &hub.url,
        &["--session", "CC-1", "--timeout", "600"],
        false,
    ))
    .await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr,
        "2 unread relay messages from CC-2 — call relay_receive\n"
    );
}

#[tokio::test]
async fn mail_arriving_later_exits_2_right_after_it_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let mut w = Waiter::spawn(wait_cmd(
        dir.path(),
        &hub.url,
        &["--session", "CC-1", "--timeout", "600"],
        true,
    ));
    w.until_logged("watching CC-1", 1).await;
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "it blocks while no mail is there"
    );

    let (mut cc3, _) = Ws::register(&hub.url, "CC-3").await;
    send(&mut cc3, "CC-1", "handoff: the migration is yours").await;
    let acked = tokio::time::Instant::now();
    let status = w.exit_within(WAKE_LIMIT).await;
    eprintln!("woke {:?} after the ack", acked.elapsed());
    assert_eq!(status.code(), Some(2));
    assert_eq!(
        w.doorbell_line().await,
        "1 unread relay message from CC-3 — call relay_receive"
    );
}

#[tokio::test]
async fn timeout_exits_0_silently() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    // A session the hub knows (it registered once and left).
    let (mut cc1, _) = Ws::register(&hub.url, "CC-1").await;
    cc1.roundtrip().await;
    drop(cc1);
    let (status, stderr) = run(wait_cmd(
        dir.path(),
        &hub.url,
        &["--session", "CC-1", "--timeout", "1"],
        false,
    ))
    .await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "");
}

#[tokio::test]
async fn a_name_the_hub_never_saw_is_said_and_the_wait_still_behaves_as_a_hook() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let (status, stderr) = run(wait_cmd(
        dir.path(),
        &hub.url,
        &["--session", "CC-TYPO", "--timeout", "1"],
        false,
    ))
    .await;
    assert_eq!(
        status.code(),
        Some(0),
        "a timeout stays silent for Claude Code: {stderr}"
    );
    assert!(
        stderr.contains("has never seen a session named CC-TYPO"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "said once: {stderr}");

    // Mail to a name nobody registered yet still rings (exit 2), as before.
    let mut w = Waiter::spawn(wait_cmd(
        dir.path(),
        &hub.url,
        &["--session", "CC-NEW", "--timeout", "60"],
        true,
    ));
    w.until_logged("watching CC-NEW", 1).await;
    let (mut lead, _) = Ws::register(&hub.url, "LEAD").await;
    send(&mut lead, "CC-NEW", "welcome").await;
    assert_eq!(w.exit_within(WAKE_LIMIT).await.code(), Some(2));
    assert_eq!(
        w.doorbell_line().await,
        "1 unread relay message from LEAD — call relay_receive"
    );
}

#[tokio::test]
async fn a_second_waiter_for_the_same_session_exits_0_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let args = ["--session", "CC-1", "--timeout", "600"];
    let mut first = Waiter::spawn(wait_cmd(dir.path(), &hub.url, &args, true));
    first.until_logged("watching CC-1", 1).await;

    let (status, stderr) = run(wait_cmd(dir.path(), &hub.url, &args, false)).await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "", "a piled-up waiter stays silent");
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the first keeps waiting"
    );

    // Another session's waiter is independent.
    let mut other = Waiter::spawn(wait_cmd(
        dir.path(),
        &hub.url,
        &["--session", "CC-9", "--timeout", "600"],
        true,
    ));
    other.until_logged("watching CC-9", 1).await;

    let (mut cc2, _) = Ws::register(&hub.url, "CC-2").await;
    send(&mut cc2, "CC-1", "ping").await;
    assert_eq!(first.exit_within(WAKE_LIMIT).await.code(), Some(2));
    assert!(other.child.try_wait().unwrap().is_none());
    // The lock went with the first waiter: a new one takes it (and sees the mail at once).
    let (status, stderr) = run(wait_cmd(dir.path(), &hub.url, &args, false)).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    let _ = other.child.start_kill();
}

#[tokio::test]
async fn hub_down_is_a_clear_message_and_never_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}");
    let (status, stderr) = run(wait_cmd(
        dir.path(),
        &url,
        &["--session", "CC-1", "--timeout", "600"],
        false,
    ))
    .await;
    // Not 2 (no mail) and not any other non-zero code either: a failing asyncRewake hook would
    // wake the session in a loop while the hub is down.
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.starts_with("claude-relay wait: cannot watch CC-1: ")
            && stderr.contains(&url)
            && stderr.contains("is `claude-relay hub` running?"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_lost_hub_is_redialled_while_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path()).await;
    let port = hub.port;
    let mut w = Waiter::spawn(wait_cmd(
        dir.path(),
        &hub.url,
        &["--session", "CC-1", "--timeout", "600"],
        true,
    ));
    w.until_logged("watching CC-1", 1).await;
    hub.kill().await;
    let hub = Hub::start_on(dir.path(), port).await;
    w.until_logged("watching CC-1", 2).await;
    let (mut cc2, _) = Ws::register(&hub.url, "CC-2").await;
    send(&mut cc2, "CC-1", "after the restart").await;
    assert_eq!(w.exit_within(WAKE_LIMIT).await.code(), Some(2));
}

/// The physical path of a new directory `name` under `dir` (what the registry records).
fn project(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    p.canonicalize().unwrap()
}

/// Runs `wait` with `hook` as its stdin (what Claude Code passes a Stop hook).
async fn run_as_hook(dir: &Path, url: &str, hook: serde_json::Value) -> (ExitStatus, String) {
    let mut cmd = wait_cmd(dir, url, &["--timeout", "600"], false);
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn wait");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(hook.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("wait finished in time")
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_session_comes_from_the_hook_json_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;

    // A Claude Code session that was never named: its bridge records CLAUDE_CODE_SESSION_ID.
    let mut opts = BridgeOpts::new(dir.path(), &hub.url, "CC-5");
    opts.env
        .push(("CLAUDE_CODE_SESSION_ID".into(), "6f1c2a9e-0d0b".into()));
    let b = Bridge::start_with(opts, false).await;
    b.wait_connected().await;
    let reg = b.registry_until("CC-5", "running").await;
    assert_eq!(reg["sessions"]["CC-5"]["claudeSessionId"], "6f1c2a9e-0d0b");

    // A session named with `claude-session CC-6` in a project directory.
    let proj = project(dir.path(), "proj");
    let named = std::process::Command::new(bin())
        .args(["sessions", "name", "CC-6"])
        .current_dir(&proj)
        .env("CLAUDE_RELAY_HOME", dir.path().join("home"))
        .env("RELAY_URL", &hub.url)
        .output()
        .unwrap();
    assert!(named.status.success(), "{named:?}");

    let (mut cc2, _) = Ws::register(&hub.url, "CC-2").await;
    send(&mut cc2, "CC-5", "for the unnamed session").await;
    send(&mut cc2, "CC-6", "for the named one").await;

    let (status, stderr) = run_as_hook(
        dir.path(),
        &hub.url,
        json!({"session_id": "6f1c2a9e-0d0b", "cwd": "/somewhere", "hook_event_name": "Stop"}),
    )
    .await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr,
        "1 unread relay message from CC-2 — call relay_receive\n"
    );
    // Reading the mail (the woken session calls relay_receive) silences the doorbell.
    b.ok("relay_receive", json!(null)).await;
    let mut quiet = wait_cmd(dir.path(), &hub.url, &["--timeout", "1"], false);
    quiet.env("CLAUDE_RELAY_SESSION_ID", "CC-5");
    let (status, stderr) = run(quiet).await;
    assert_eq!(status.code(), Some(0), "{stderr}");

    // Unknown Claude session id: the name recorded for the hook's cwd.
    let (status, stderr) = run_as_hook(
        dir.path(),
        &hub.url,
        json!({"session_id": "not-recorded", "cwd": proj.to_str().unwrap(), "hook_event_name": "Stop"}),
    )
    .await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr,
        "1 unread relay message from CC-2 — call relay_receive\n"
    );

    // A Claude Code session that does not use the relay: nothing to watch, exit 0.
    let (status, stderr) = run_as_hook(
        dir.path(),
        &hub.url,
        json!({"session_id": "stranger", "cwd": "/nowhere", "hook_event_name": "Stop"}),
    )
    .await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("no relay session is recorded"), "{stderr}");
}
