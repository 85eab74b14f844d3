//! Attacks on the hub's store from the same machine: a second hub started on the same data
//! directory (a service plus a hand-started hub), and other local users reading the mail
//! files. One hub holds the store; its files are its user's alone.

use crate::common;

use std::{os::unix::fs::PermissionsExt, path::Path, process::Stdio};

use common::{
    clean_env,
    hub::{Hub, WAIT, bin},
    ws::Ws,
};
use serde_json::json;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Runs `claude-relay hub` on `data_dir` and waits (bounded) for it to exit on its own:
/// returns its exit status and stderr.
async fn run_hub_to_exit(home: &Path, data_dir: &Path) -> (std::process::ExitStatus, String) {
    let mut cmd = tokio::process::Command::new(bin());
    clean_env(&mut cmd);
    let child = cmd
        .args(["hub", "--host", "127.0.0.1", "--port", "0", "--data-dir"])
        .arg(data_dir)
        .env("CLAUDE_RELAY_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn second hub");
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the second hub kept running on a store another hub holds")
        .expect("wait second hub");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_second_hub_on_the_same_data_dir_refuses_to_start_and_the_first_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Hub::start(dir.path()).await;
    let (mut a, _) = Ws::register(&first.url, "A").await;

    let (status, stderr) = run_hub_to_exit(&dir.path().join("home"), &first.data_dir).await;
    assert!(!status.success(), "second hub exited {status}: {stderr}");
    assert!(
        stderr.contains(&format!("in use by another hub (pid {})", first.pid())),
        "the refusal names the holder's pid: {stderr}"
    );
    assert!(
        stderr.contains("--data-dir"),
        "the refusal says how to pick another store: {stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");

    // The first hub is untouched: its session still sends and reads.
    a.send(json!({"type": "message", "to": "B", "content": "still here"}))
        .await;
    assert_eq!(a.until("sent").await["delivered"], false);
    a.roundtrip().await;

    // A hub killed with SIGKILL leaves no stale lock: the kernel freed it with the process.
    first.kill().await;
    let second = Hub::start(dir.path()).await;
    let (mut b, reg) = Ws::register(&second.url, "B").await;
    assert_eq!(reg["unread"], 1, "the store is the same: {reg}");
    b.roundtrip().await;
}

#[tokio::test]
async fn an_old_world_readable_store_is_made_private_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub-data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    // An empty file is an empty SQLite database: what an older hub left, as far as modes go.
    std::fs::write(data.join("relay.db"), b"").unwrap();
    std::fs::set_permissions(
        data.join("relay.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let hub = Hub::start(dir.path()).await;
    let (mut a, _) = Ws::register(&hub.url, "A").await;
    a.send(json!({"type": "message", "to": "B", "content": "private"}))
        .await;
    a.until("sent").await;

    assert_eq!(mode(&data), 0o700, "data directory");
    for f in ["relay.db", "relay.db-wal", "relay.db-shm", "relay.lock"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
}

#[tokio::test]
async fn a_new_store_is_private_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let (mut a, _) = Ws::register(&hub.url, "A").await;
    a.send(json!({"type": "message", "to": "B", "content": "private"}))
        .await;
    a.until("sent").await;
    assert_eq!(mode(&hub.data_dir), 0o700, "data directory");
    for f in ["relay.db", "relay.db-wal", "relay.db-shm", "relay.lock"] {
        assert_eq!(mode(&hub.data_dir.join(f)), 0o600, "{f}");
    }
}
