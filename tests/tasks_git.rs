//! The headline: a task handed from one machine to another carries the exact git state.
//! Two "machines" (each its own HOME, git config and CLAUDE_RELAY_HOME) share a bare origin;
//! the sender has an unpushed commit, an uncommitted edit, an untracked file and an untracked
//! `.env`. Its bridge records the state in `relay_handoff`; the receiver's bridge sees and
//! claims the task; `claude-relay tasks checkout` gives the receiver a work tree whose files
//! match the sender's — except the secret, which never travels.

use crate::common;

use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
};

use common::{
    bridge::{Bridge, BridgeOpts},
    hub::{Hub, WAIT, bin},
};
use serde_json::{Value, json};

/// One machine: its HOME, git config and relay home.
struct Machine {
    root: PathBuf,
    env: Vec<(&'static str, OsString)>,
}

impl Machine {
    fn new(root: &Path, name: &str) -> Self {
        let root = root.join(name);
        let home = root.join("home");
        fs::create_dir_all(&home).unwrap();
        let config = home.join(".gitconfig");
        fs::write(
            &config,
            "[init]\n\tdefaultBranch = main\n[user]\n\tname = Dev\n\temail = dev@example.invalid\n",
        )
        .unwrap();
        Self {
            env: vec![
                ("HOME", home.clone().into()),
                ("XDG_CONFIG_HOME", home.join(".config").into()),
                ("GIT_CONFIG_NOSYSTEM", "1".into()),
                ("GIT_CONFIG_GLOBAL", config.into()),
            ],
            root,
        }
    }

    fn git(&self, dir: &Path, args: &[&str]) -> String {
        let mut cmd = std::process::Command::new("git");
        cmd.current_dir(dir).args(args).env("LC_ALL", "C");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// `git clone origin <machine>/app`; returns the clone.
    fn clone_app(&self, origin: &Path) -> PathBuf {
        let app = self.root.join("app");
        let (from, to) = (origin.to_str().unwrap(), app.to_str().unwrap());
        self.git(&self.root, &["clone", "-q", from, to]);
        app
    }

    /// A bridge on this machine, in `cwd`.
    fn bridge(&self, url: &str, id: &str, cwd: &Path) -> BridgeOpts {
        let mut o = BridgeOpts::new(&self.root, url, id);
        o.cwd = Some(cwd.to_path_buf());
        for (k, v) in &self.env {
            o.env
                .push((k.to_string(), v.to_string_lossy().into_owned()));
        }
        o
    }
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[tokio::test]
async fn a_handoff_carries_the_exact_git_state_to_another_machine() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let laptop = Machine::new(root, "laptop");
    let workstation = Machine::new(root, "workstation");

    // origin, with one pushed commit.
    let origin = root.join("origin.git");
    fs::create_dir_all(&origin).unwrap();
    laptop.git(&origin, &["init", "-q", "--bare"]);
    let seed = root.join("seed");
    fs::create_dir_all(&seed).unwrap();
    laptop.git(&seed, &["init", "-q"]);
    write(&seed.join("README.md"), "# app\n");
    write(&seed.join("src/lib.rs"), "pub fn a() {}\n");
    laptop.git(&seed, &["add", "-A"]);
    laptop.git(&seed, &["commit", "-q", "-m", "first"]);
    laptop.git(
        &seed,
        &["remote", "add", "origin", origin.to_str().unwrap()],
    );
    laptop.git(&seed, &["push", "-q", "origin", "main"]);

    // The sender's clone: an unpushed commit, an uncommitted edit, untracked files.
    let sender = laptop.clone_app(&origin);
    write(&sender.join("src/lib.rs"), "pub fn a() {}\npub fn b() {}\n");
    laptop.git(&sender, &["commit", "-q", "-am", "unpushed: add b"]);
    write(&sender.join("README.md"), "# app\n\nhalf-written docs\n");
    write(&sender.join("notes.txt"), "left: wire b into main\n");
    write(&sender.join(".env"), "API_KEY=do-not-ship\n");
    let head = laptop.git(&sender, &["rev-parse", "HEAD"]);

    // The receiver's own clone, on the other machine.
    let receiver = workstation.clone_app(&origin);

    let hub = Hub::start(root).await;
    let cc1 = Bridge::start_with(laptop.bridge(&hub.url, "CC-1", &sender), false).await;
    let cc2 = Bridge::start_with(workstation.bridge(&hub.url, "CC-2", &receiver), false).await;
    cc1.wait_connected().await;
    cc2.wait_connected().await;

    let made = cc1
        .ok(
            "relay_handoff",
            json!({"to": "CC-2", "title": "Finish b", "brief": "wire b into main; see notes.txt"}),
        )
        .await;
    assert!(made.starts_with("Created T-1 for CC-2"), "{made}");
    assert!(
        made.contains("branch main") && made.contains("Bundle:"),
        "{made}"
    );

    // The receiver sees the recorded state, exactly.
    let shown = cc2.ok("relay_tasks", json!({"id": "T-1"})).await;
    assert!(shown.contains("claude-relay tasks checkout T-1"), "{shown}");
    let got = hub_task(&workstation, &hub.url, "CC-2").await;
    let git = &got["task"]["git"];
    assert_eq!(git["branch"], "main", "{git}");
    assert_eq!(git["head"], head.as_str(), "{git}");
    assert_eq!(git["dirty"], true, "{git}");
    assert_eq!(git["ahead"], 1, "{git}");
    assert_eq!(git["changed"], json!(["README.md"]), "{git}");
    let untracked: Vec<&str> = git["untracked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(untracked.contains(&"notes.txt"), "{git}");
    assert_eq!(git["omitted"], json!([".env"]), "{git}");
    assert!(got["task"]["bundle"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        laptop.git(&sender, &["rev-parse", "refs/relay/tasks/T-1^1"]),
        head,
        "the snapshot is kept on the sender, on top of HEAD"
    );

    let claimed = cc2
        .ok("relay_task", json!({"id": "T-1", "action": "claim"}))
        .await;
    assert!(
        claimed.starts_with("T-1 is now working (you hold it)"),
        "{claimed}"
    );

    // checkout --dir into a directory that holds something: refused, and left as it was.
    let busy = workstation.root.join("busy");
    fs::create_dir_all(&busy).unwrap();
    fs::write(busy.join("keep.txt"), "mine").unwrap();
    let refused = checkout_into(&workstation, &hub.url, &receiver, &busy).await;
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("is not an empty directory"), "{said}");
    assert_eq!(fs::read_dir(&busy).unwrap().count(), 1);
    assert_eq!(fs::read_to_string(busy.join("keep.txt")).unwrap(), "mine");

    // checkout: the sender's files, here — the unpushed commit and the edit; not the secret.
    let out = checkout(&workstation, &hub.url, &receiver, "T-1").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(path.is_dir(), "{}", path.display());
    for f in ["src/lib.rs", "README.md", "notes.txt"] {
        assert_eq!(
            fs::read_to_string(path.join(f)).unwrap(),
            fs::read_to_string(sender.join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(!path.join(".env").exists(), "the secret travelled");
    assert_eq!(workstation.git(&path, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        workstation.git(&path, &["branch", "--show-current"]),
        "relay/T-1"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("T-1 is checked out"), "{stderr}");

    // checkout --dir from outside any clone: a fresh clone of the remote at the chosen place,
    // with the same files and commit.
    let chosen = workstation.root.join("elsewhere").join("t1");
    let out = checkout_into(&workstation, &hub.url, &workstation.root, &chosen).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()),
        chosen
    );
    for f in ["src/lib.rs", "README.md", "notes.txt"] {
        assert_eq!(
            fs::read_to_string(chosen.join(f)).unwrap(),
            fs::read_to_string(sender.join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(!chosen.join(".env").exists(), "the secret travelled");
    assert_eq!(workstation.git(&chosen, &["rev-parse", "HEAD"]), head);
    // The sender's own work tree was not touched.
    assert_eq!(
        laptop
            .git(&sender, &["status", "--porcelain"])
            .lines()
            .count(),
        3
    );
}

/// `claude-relay tasks show T-1 --json` on `m`, as `session`.
async fn hub_task(m: &Machine, url: &str, session: &str) -> Value {
    let out = tasks_cli(
        m,
        url,
        m.root.as_path(),
        &["show", "T-1", "--json", "--session", session],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn checkout(m: &Machine, url: &str, cwd: &Path, id: &str) -> std::process::Output {
    tasks_cli(m, url, cwd, &["checkout", id, "--session", "CC-2"]).await
}

/// `claude-relay tasks checkout T-1 --dir DIR` on `m`, run in `cwd`, as CC-2.
async fn checkout_into(m: &Machine, url: &str, cwd: &Path, dir: &Path) -> std::process::Output {
    let dir = dir.to_str().unwrap();
    tasks_cli(
        m,
        url,
        cwd,
        &["checkout", "T-1", "--session", "CC-2", "--dir", dir],
    )
    .await
}

async fn tasks_cli(m: &Machine, url: &str, cwd: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(bin());
    common::clean_env(&mut cmd);
    cmd.arg("tasks")
        .args(args)
        .current_dir(cwd)
        .env("CLAUDE_RELAY_HOME", m.root.join("home"))
        .env("RELAY_URL", url)
        .kill_on_drop(true);
    for (k, v) in &m.env {
        cmd.env(k, v);
    }
    // BridgeOpts::new puts the relay home at <root>/home: the same directory as HOME here,
    // which is where the bridge kept CC-2's owner secret.
    tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("claude-relay tasks in time")
        .expect("run claude-relay tasks")
}
