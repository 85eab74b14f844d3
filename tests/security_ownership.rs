//! Name ownership end to end: a real hub, real bridges with their own `CLAUDE_RELAY_HOME`
//! (one per "machine"), raw WebSocket clients, and `claude-relay sessions release`.
//!
//! - A bridge's first claim stores a 0600 owner file; a restart reclaims the name with it.
//! - Without the secret, or with a wrong one, an owned name is refused (`not_owner`) once
//!   its holder is gone; the bridge says how to move the name and backs off.
//! - A live holder is never evicted, even by a client with the right secret.
//! - `sessions release` (with the secret, or `--local` on the hub host) frees the name so
//!   another machine can claim it.

use crate::common;

use std::{os::unix::fs::PermissionsExt, path::Path, process::Stdio};

use common::{
    bridge::{Bridge, BridgeOpts},
    hub::{Hub, WAIT, bin},
    ws::Ws,
};
use serde_json::{Value, json};

/// A bridge on "machine" `machine` (its own relay home under `dir`).
fn on(dir: &Path, machine: &str, url: &str, id: &str) -> BridgeOpts {
    let mut o = BridgeOpts::new(&dir.join(machine), url, id);
    for k in ["RELAY_TOKEN", "RELAY_TOKEN_FILE", "RELAY_CA_CERT"] {
        o.env.push((k.to_string(), String::new()));
    }
    o
}

fn owner_file(dir: &Path, machine: &str, id: &str) -> std::path::PathBuf {
    dir.join(machine).join("home").join("owners").join(id)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Ends a bridge by closing its stdin, and waits (bounded) until the hub no longer lists
/// `id` online, so the name is free of its holder.
async fn stop(mut b: Bridge, hub_url: &str) {
    let id = b.id.clone();
    b.close_stdin().await;
    assert!(b.wait_exit(WAIT).await.is_some(), "{id} did not exit");
    common::eventually(&format!("{id} offline"), WAIT, async || {
        let mut ws = Ws::connect(hub_url).await;
        ws.send(json!({"type": "get_peers"})).await;
        let peers = ws.expect("peers").await;
        let online = peers["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == id.as_str());
        if online {
            Err(peers.to_string())
        } else {
            Ok(())
        }
    })
    .await;
}

/// `claude-relay sessions ARGS` as machine `machine`.
async fn sessions_cli(dir: &Path, machine: &str, url: &str, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(bin())
        .arg("sessions")
        .args(args)
        .env("CLAUDE_RELAY_HOME", dir.join(machine).join("home"))
        .env("RELAY_URL", url)
        .env_remove("RELAY_TOKEN")
        .env_remove("RELAY_TOKEN_FILE")
        .env_remove("RELAY_CA_CERT")
        .env_remove("RELAY_DATA_DIR")
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(WAIT, out).await.unwrap().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A raw register of `id` with these extra fields; returns the reply.
async fn raw_register(url: &str, id: &str, extra: Value) -> (Ws, Value) {
    let mut ws = Ws::connect(url).await;
    let mut frame = json!({"type": "register", "clientId": id, "rid": 1});
    if let Value::Object(m) = extra {
        frame.as_object_mut().unwrap().extend(m);
    }
    ws.send(frame).await;
    let reply = ws.next().await;
    (ws, reply)
}

#[tokio::test]
async fn a_first_claim_stores_a_private_owner_file_and_a_restart_reclaims_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let b = Bridge::start_with(on(dir.path(), "laptop", &hub.url, "CC-1"), false).await;
    b.wait_connected().await;
    let file = owner_file(dir.path(), "laptop", "CC-1");
    let secret = std::fs::read_to_string(&file).expect("owner file written");
    let secret = secret.trim().to_string();
    assert_eq!(secret.len(), 64, "{secret}");
    assert!(secret.chars().all(|c| c.is_ascii_hexdigit()), "{secret}");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    stop(b, &hub.url).await;

    // The same machine starts CC-1 again: it presents the secret and gets its name back.
    let again = Bridge::start_with(on(dir.path(), "laptop", &hub.url, "CC-1"), false).await;
    again.wait_connected().await;
    let status = again.ok("relay_status", Value::Null).await;
    assert!(status.contains("You: CC-1 "), "{status}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        secret,
        "a reclaim mints nothing new"
    );
}

#[tokio::test]
async fn an_owned_name_is_refused_without_or_with_a_wrong_secret_and_the_bridge_says_how_to_move_it()
 {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let b = Bridge::start_with(on(dir.path(), "laptop", &hub.url, "CC-1"), false).await;
    b.wait_connected().await;
    stop(b, &hub.url).await;

    // Raw clients: an old client (no ownership), a new one without the secret, a wrong one.
    for extra in [
        json!({}),
        json!({"ownership": true}),
        json!({"ownership": true, "ownerSecret": "0".repeat(64)}),
        json!({"ownerSecret": "guess"}),
    ] {
        let (_ws, r) = raw_register(&hub.url, "CC-1", extra.clone()).await;
        assert_eq!(r["type"], "register_rejected", "{extra}: {r}");
        assert_eq!(r["code"], "not_owner", "{extra}: {r}");
    }

    // A bridge on another machine without the file: refused, with the way to move the name.
    let server = Bridge::start_with(on(dir.path(), "server", &hub.url, "CC-1"), false).await;
    let s = server.status_until("is owned", WAIT).await;
    assert!(
        s.contains("not registered with the hub")
            && s.contains("no owner secret for it here")
            && s.contains("copy ~/.claude-relay/owners/CC-1")
            && s.contains("claude-relay sessions release CC-1"),
        "{s}"
    );
    let out = server
        .call("relay_send", json!({"message": "hi", "to": "CC-2"}))
        .await;
    assert!(
        out.is_error && out.text.starts_with("NOT sent"),
        "{}",
        out.text
    );
    assert!(!owner_file(dir.path(), "server", "CC-1").exists());

    // A bridge with a wrong secret file.
    let wrong = owner_file(dir.path(), "other", "CC-1");
    std::fs::create_dir_all(wrong.parent().unwrap()).unwrap();
    std::fs::write(&wrong, "f".repeat(64)).unwrap();
    let other = Bridge::start_with(on(dir.path(), "other", &hub.url, "CC-1"), false).await;
    let s = other.status_until("is not its current one", WAIT).await;
    assert!(s.contains("is owned"), "{s}");

    // Copying the owner file is how the name moves: the server machine gets it now.
    std::fs::create_dir_all(owner_file(dir.path(), "server", "CC-1").parent().unwrap()).unwrap();
    std::fs::copy(
        owner_file(dir.path(), "laptop", "CC-1"),
        owner_file(dir.path(), "server", "CC-1"),
    )
    .unwrap();
    // The next retry (backoff, at most 15 s away) presents it.
    server.wait_connected_within(WAIT * 2).await;
}

#[tokio::test]
async fn a_live_holder_is_never_evicted_even_by_the_right_secret() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let holder = Bridge::start_with(on(dir.path(), "laptop", &hub.url, "CC-1"), false).await;
    holder.wait_connected().await;
    let secret = std::fs::read_to_string(owner_file(dir.path(), "laptop", "CC-1")).unwrap();

    let (_ws, r) = raw_register(
        &hub.url,
        "CC-1",
        json!({"ownership": true, "ownerSecret": secret.trim()}),
    )
    .await;
    assert_eq!(r["type"], "register_rejected", "{r}");
    assert_eq!(r["code"], "name_in_use", "{r}");
    let (_ws2, r) = raw_register(&hub.url, "CC-1", json!({})).await;
    assert_eq!(r["type"], "register_rejected", "{r}");

    // The holder is undisturbed: mail still reaches it.
    let (mut peer, _) = Ws::register(&hub.url, "PEER").await;
    peer.send(json!({"type": "message", "to": "CC-1", "content": "still yours", "rid": 2}))
        .await;
    let sent = peer.until("sent").await;
    assert_eq!(sent["delivered"], true, "{sent}");
    assert!(
        holder
            .ok("relay_receive", Value::Null)
            .await
            .contains("still yours")
    );
    let status = holder.ok("relay_status", Value::Null).await;
    assert!(status.contains("— connected for"), "{status}");
}

#[tokio::test]
async fn relay_client_id_numbering_moves_past_an_owned_name() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let mut a = on(dir.path(), "laptop", &hub.url, "unused");
    a.session_id = None;
    a.env.push(("RELAY_CLIENT_ID".into(), "CODEX".into()));
    let first = Bridge::start_with(a, false).await;
    first.wait_connected().await;
    stop(first, &hub.url).await;

    // Another machine's Codex: CODEX is owned (and offline), so it becomes CODEX2.
    let mut b = on(dir.path(), "server", &hub.url, "unused");
    b.session_id = None;
    b.env.push(("RELAY_CLIENT_ID".into(), "CODEX".into()));
    let second = Bridge::start_with(b, false).await;
    second.wait_connected().await;
    let s = second.ok("relay_status", Value::Null).await;
    assert!(s.contains("You: CODEX2 (from RELAY_CLIENT_ID)"), "{s}");
    assert!(owner_file(dir.path(), "server", "CODEX2").exists());
    assert!(!owner_file(dir.path(), "server", "CODEX").exists());
}

#[tokio::test]
async fn release_with_the_secret_frees_the_name_for_another_machine() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let b = Bridge::start_with(on(dir.path(), "laptop", &hub.url, "CC-1"), false).await;
    b.wait_connected().await;
    stop(b, &hub.url).await;
    let laptop_file = owner_file(dir.path(), "laptop", "CC-1");
    let old_secret = std::fs::read_to_string(&laptop_file).unwrap();

    // Not from a machine without the secret.
    let (ok, out) = sessions_cli(dir.path(), "server", &hub.url, &["release", "CC-1"]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("there is no owner secret for CC-1 on this machine")
            && out.contains("--local"),
        "{out}"
    );
    // Not with a wrong secret.
    let wrong = owner_file(dir.path(), "other", "CC-1");
    std::fs::create_dir_all(wrong.parent().unwrap()).unwrap();
    std::fs::write(&wrong, "e".repeat(64)).unwrap();
    let (ok, out) = sessions_cli(dir.path(), "other", &hub.url, &["release", "CC-1"]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("the hub refused") && out.contains("stale"),
        "{out}"
    );
    assert!(wrong.exists(), "a refused release deletes nothing");
    // Not with the hub down: the secret is kept.
    let down = format!("ws://127.0.0.1:{}", free_port());
    let (ok, out) = sessions_cli(dir.path(), "laptop", &down, &["release", "CC-1"]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("unreachable") && out.contains("Nothing was released"),
        "{out}"
    );
    assert!(laptop_file.exists());

    // The owning machine releases it: the secret is deleted, the name is free.
    let (ok, out) = sessions_cli(dir.path(), "laptop", &hub.url, &["release", "CC-1"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("released CC-1"), "{out}");
    assert!(!laptop_file.exists());

    let server = Bridge::start_with(on(dir.path(), "server", &hub.url, "CC-1"), false).await;
    server.wait_connected().await;
    let new_secret =
        std::fs::read_to_string(owner_file(dir.path(), "server", "CC-1")).expect("a new owner");
    assert_ne!(new_secret, old_secret);
    // …and now the laptop is the one without the secret.
    stop(server, &hub.url).await;
    let (_ws, r) = raw_register(&hub.url, "CC-1", json!({"ownerSecret": old_secret.trim()})).await;
    assert_eq!(r["code"], "not_owner", "{r}");
}

#[tokio::test]
async fn release_local_frees_the_name_in_the_hub_store_with_the_hub_running_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path()).await;
    let b = Bridge::start_with(on(dir.path(), "laptop", &hub.url, "CC-1"), false).await;
    b.wait_connected().await;
    stop(b, &hub.url).await;
    let data_dir = hub.data_dir.display().to_string();

    // The operator, on the hub host, next to the running hub.
    let (ok, out) = sessions_cli(
        dir.path(),
        "hubhost",
        &hub.url,
        &["release", "CC-1", "--local", "--data-dir", &data_dir],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("released CC-1 in the hub store"), "{out}");
    let server = Bridge::start_with(on(dir.path(), "server", &hub.url, "CC-1"), false).await;
    server.wait_connected().await;
    stop(server, &hub.url).await;

    // With the hub stopped too; a second release has nothing to do.
    hub.kill().await;
    let args = ["release", "CC-1", "--local", "--data-dir", &data_dir];
    let (ok, out) = sessions_cli(dir.path(), "hubhost", &hub.url, &args).await;
    assert!(ok && out.contains("released CC-1"), "{out}");
    let (ok, out) = sessions_cli(dir.path(), "hubhost", &hub.url, &args).await;
    assert!(ok && out.contains("CC-1 has no owner"), "{out}");
    let port = hub.port;
    let hub = Hub::start_on(dir.path(), port).await;
    let (_ws, r) = raw_register(&hub.url, "CC-1", json!({})).await;
    assert_eq!(r["type"], "registered", "an unowned name again: {r}");

    // A wrong data dir is named, and nothing is created there.
    let nowhere = dir.path().join("no-hub-here");
    let nowhere_s = nowhere.display().to_string();
    let (ok, out) = sessions_cli(
        dir.path(),
        "hubhost",
        &hub.url,
        &["release", "CC-1", "--local", "--data-dir", &nowhere_s],
    )
    .await;
    assert!(!ok && out.contains("there is no hub store at"), "{out}");
    assert!(!nowhere.exists());
}

#[tokio::test]
async fn an_owner_secret_that_cannot_be_saved_is_announced_and_saved_once_possible() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path()).await;
    // A file where the owners directory should be: the secret cannot be stored.
    let home = dir.path().join("laptop").join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("owners"), "in the way").unwrap();
    let b = Bridge::start_with(on(dir.path(), "laptop", &hub.url, "CC-1"), false).await;
    let s = b.status_until("WARNING", WAIT).await;
    assert!(
        s.contains("owner secret could not be saved") && s.contains("— connected for"),
        "{s}"
    );
    // Every tool result carries it while it lasts.
    let peers = b.ok("relay_peers", Value::Null).await;
    assert!(peers.contains("could not be saved"), "{peers}");
    let log = b.log.lock().unwrap().join("\n");
    assert!(log.contains("could not be saved"), "stderr says so: {log}");

    // Fix the directory; after the next reconnect the kept secret is saved.
    std::fs::remove_file(home.join("owners")).unwrap();
    let port = hub.port;
    hub.kill().await;
    let _hub = Hub::start_on(dir.path(), port).await;
    common::eventually(
        "connected again with the secret saved",
        WAIT * 2,
        async || {
            let s = b.ok("relay_status", Value::Null).await;
            if s.contains("— connected for") && !s.contains("WARNING") {
                Ok(())
            } else {
                Err(s)
            }
        },
    )
    .await;
    let file = owner_file(dir.path(), "laptop", "CC-1");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim().len(), 64);
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
