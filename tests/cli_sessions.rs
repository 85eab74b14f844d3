//! The session CLI and shell functions, end to end: the real `claude-relay` binary with
//! `CLAUDE_RELAY_HOME` in a temp dir, the `init` output evaluated by a real shell, and the
//! `sessions` table against a closed port (hub down) and against a real hub.

use crate::common;

use std::{
    path::{Path, PathBuf},
    process::{Output, Stdio},
};

use common::{
    hub::{Hub, WAIT, bin},
    ws::Ws,
};
use relay_local::{EntryState, EntryUpdate, Registry, liveness};
use serde_json::{Value, json};
use tokio::process::Command;

/// A temp dir with a relay home and a project directory inside it.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// A directory (created) under the temp dir, canonical like `getcwd` reports it.
    fn project(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p.canonicalize().unwrap()
    }

    fn registry(&self) -> Registry {
        Registry::at(self.home().join("sessions").join("registry.json"))
    }

    /// A command with a clean relay environment, run from `cwd`.
    fn cmd(&self, program: &str, cwd: &Path) -> Command {
        let mut c = Command::new(program);
        c.current_dir(cwd)
            .env("CLAUDE_RELAY_HOME", self.home())
            .env("BIN", bin())
            .env_remove("RELAY_URL")
            .env_remove("CLAUDE_RELAY_SESSION_ID")
            .env_remove("RELAY_CLIENT_ID")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// `claude-relay ARGS` in `cwd`.
    async fn cli(&self, cwd: &Path, args: &[&str], relay_url: Option<&str>) -> Output {
        let mut c = self.cmd(bin(), cwd);
        c.args(args);
        if let Some(u) = relay_url {
            c.env("RELAY_URL", u);
        }
        run(c).await
    }

    /// `claude-relay sessions` in `cwd` with the hub down; it succeeds; its stdout.
    async fn sessions_hub_down(&self, cwd: &Path) -> String {
        let out = self.cli(cwd, &["sessions"], Some(&closed_port_url())).await;
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    }

    /// `bash -c SCRIPT` in `cwd` (BIN names the binary).
    async fn bash(&self, cwd: &Path, script: &str, relay_url: Option<&str>) -> Output {
        self.shell("bash", cwd, script, relay_url).await
    }

    async fn shell(&self, sh: &str, cwd: &Path, script: &str, relay_url: Option<&str>) -> Output {
        let mut c = self.cmd(sh, cwd);
        c.arg("-c").arg(script);
        if let Some(u) = relay_url {
            c.env("RELAY_URL", u);
        }
        run(c).await
    }
}

/// Runs to completion within [`WAIT`] (the child is killed if it takes longer).
async fn run(mut c: Command) -> Output {
    tokio::time::timeout(WAIT, c.output())
        .await
        .expect("command did not finish in time")
        .expect("spawn command")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A `ws://` URL on which nothing listens.
fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("ws://127.0.0.1:{port}")
}

fn has_shell(sh: &str) -> bool {
    std::process::Command::new("which")
        .arg(sh)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The table line for `name` split into whitespace-separated cells.
fn row<'a>(table: &'a str, name: &str) -> Option<Vec<&'a str>> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&name))
}

#[tokio::test]
async fn sessions_name_validates_and_records() {
    let env = Env::new();
    let proj = env.project("app");

    let out = env.cli(&proj, &["sessions", "name", "CC-1"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "CC-1\n");
    let f = env.registry().load().unwrap();
    let e = &f.sessions["CC-1"];
    assert_eq!(e.state, EntryState::Named);
    assert_eq!(e.cwd.as_deref(), Some(proj.to_str().unwrap()));
    assert!(e.named_at.is_some());

    for bad in ["1bad", "all", "has space", &"x".repeat(65)] {
        let out = env.cli(&proj, &["sessions", "name", bad], None).await;
        assert!(!out.status.success(), "{bad:?} was accepted");
        assert_eq!(stdout(&out), "", "nothing on stdout for {bad:?}");
        assert!(
            stderr(&out).contains("is not a valid session id"),
            "{bad:?}: {}",
            stderr(&out)
        );
    }
    let f = env.registry().load().unwrap();
    assert_eq!(f.sessions.keys().collect::<Vec<_>>(), ["CC-1"]);
}

#[tokio::test]
async fn naming_a_name_held_by_a_live_session_fails_and_keeps_its_record() {
    let env = Env::new();
    let proj = env.project("app");
    let me = liveness::current();
    env.registry()
        .update(|f| {
            f.mark_running(
                "CC-2",
                EntryUpdate {
                    cwd: Some("/elsewhere".into()),
                    bridge: Some(me),
                    ..Default::default()
                },
            )
        })
        .unwrap();
    let out = env.cli(&proj, &["sessions", "name", "CC-2"], None).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("in use by a running session (pid {}", me.pid)),
        "{}",
        stderr(&out)
    );
    let e = &env.registry().load().unwrap().sessions["CC-2"];
    assert_eq!(e.state, EntryState::Running);
    assert_eq!(e.cwd.as_deref(), Some("/elsewhere"));
}

#[tokio::test]
async fn bash_init_defines_claude_session_which_exports_the_id() {
    let env = Env::new();
    let proj = env.project("app");
    let out = env
        .bash(
            &proj,
            r#"eval "$("$BIN" init bash)"; claude-session CC-1 && echo "id=$CLAUDE_RELAY_SESSION_ID""#,
            None,
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "id=CC-1", "stderr: {}", stderr(&out));
    assert_eq!(
        env.registry().load().unwrap().sessions["CC-1"]
            .cwd
            .as_deref(),
        Some(proj.to_str().unwrap())
    );

    // An invalid name fails with the error and exports nothing.
    let out = env
        .bash(
            &proj,
            r#"eval "$("$BIN" init bash)"; claude-session 1bad; echo "rc=$? id=${CLAUDE_RELAY_SESSION_ID:-unset}""#,
            None,
        )
        .await;
    assert_eq!(stdout(&out).trim(), "rc=1 id=unset");
    assert!(
        stderr(&out).contains(r#""1bad" is not a valid session id"#),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn claude_session_without_a_name_reuses_the_one_recorded_for_the_directory() {
    let env = Env::new();
    let proj = env.project("app");
    let other = env.project("other");
    let init = r#"eval "$("$BIN" init bash)"; "#;

    let out = env
        .bash(&proj, &format!("{init}claude-session CC-7"), None)
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    // A fresh shell in the same directory comes home to the same name.
    let out = env
        .bash(
            &proj,
            &format!(r#"{init}claude-session && echo "id=$CLAUDE_RELAY_SESSION_ID""#),
            None,
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "id=CC-7");

    // Also after that session ran and ended.
    let dead = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let s = liveness::stamp(child.id()).unwrap();
        child.wait().unwrap();
        s
    };
    env.registry()
        .update(|f| {
            f.mark_running(
                "CC-7",
                EntryUpdate {
                    bridge: Some(dead),
                    ..Default::default()
                },
            );
            assert!(f.mark_ended("CC-7", dead.pid));
        })
        .unwrap();
    let out = env
        .bash(
            &proj,
            &format!(r#"{init}claude-session && echo "id=$CLAUDE_RELAY_SESSION_ID""#),
            None,
        )
        .await;
    assert_eq!(stdout(&out).trim(), "id=CC-7", "{}", stderr(&out));

    // Where nothing is recorded it prints usage and fails.
    let out = env
        .bash(
            &other,
            &format!(
                r#"{init}claude-session; echo "rc=$? id=${{CLAUDE_RELAY_SESSION_ID:-unset}}""#
            ),
            None,
        )
        .await;
    assert_eq!(stdout(&out).trim(), "rc=1 id=unset");
    let err = stderr(&out);
    assert!(err.contains("no session name is recorded for"), "{err}");
    assert!(err.contains("usage: claude-session NAME"), "{err}");
}

#[tokio::test]
async fn claude_sessions_with_the_hub_down_prints_the_table_and_says_so() {
    let env = Env::new();
    let proj = env.project("app");
    let url = closed_port_url();
    let init = r#"eval "$("$BIN" init bash)"; "#;
    let out = env
        .bash(
            &proj,
            &format!("{init}claude-session CC-1 >/dev/null && claude-sessions"),
            Some(&url),
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "PID", "ALIVE", "CONNECTED", "CWD"],
        "{text}"
    );
    let cwd_col = lines[0].find("CWD").unwrap();
    let cc1 = lines.iter().find(|l| l.starts_with("CC-1 ")).expect(&text);
    assert_eq!(cc1.find(proj.to_str().unwrap()), Some(cwd_col), "{text}");
    assert_eq!(row(&text, "CC-1").unwrap()[..4], ["CC-1", "-", "-", "?"]);
    assert!(
        text.contains(&format!("the hub at {url} is unreachable")),
        "{text}"
    );

    // claude-peers: nothing is known to be connected; it still answers and says why.
    let out = env
        .bash(&proj, &format!("{init}claude-peers"), Some(&url))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(row(&text, "CC-1").is_none(), "{text}");
    assert!(text.contains("is unreachable"), "{text}");

    // --json says the same for machines.
    let out = env.cli(&proj, &["sessions", "--json"], Some(&url)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hub"]["reachable"], false);
    assert_eq!(v["hub"]["url"], url.as_str());
    assert_eq!(v["sessions"][0]["name"], "CC-1");
    assert_eq!(v["sessions"][0]["connected"], Value::Null);
}

#[tokio::test]
async fn listing_prunes_ghosts_but_keeps_their_names() {
    let env = Env::new();
    let proj = env.project("app");
    let dead = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let s = liveness::stamp(child.id()).unwrap();
        child.wait().unwrap();
        s
    };
    let me = liveness::current();
    env.registry()
        .update(|f| {
            for (name, stamp) in [("GHOST", dead), ("LIVE", me)] {
                f.mark_running(
                    name,
                    EntryUpdate {
                        cwd: Some(format!("/w/{name}")),
                        bridge: Some(stamp),
                        ..Default::default()
                    },
                );
            }
        })
        .unwrap();
    let text = env.sessions_hub_down(&proj).await;
    assert!(
        text.contains("pruned 1 ghost session whose process is gone: GHOST"),
        "{text}"
    );
    assert_eq!(
        row(&text, "GHOST").unwrap(),
        ["GHOST", &dead.pid.to_string(), "no", "?", "/w/GHOST"]
    );
    assert_eq!(
        row(&text, "LIVE").unwrap(),
        ["LIVE", &me.pid.to_string(), "yes", "?", "/w/LIVE"]
    );
    let f = env.registry().load().unwrap();
    assert_eq!(f.sessions["GHOST"].state, EntryState::Ended);
    assert_eq!(f.name_for_cwd("/w/GHOST"), Some("GHOST"));
    assert_eq!(f.sessions["LIVE"].state, EntryState::Running);

    // Nothing left to prune the second time.
    let out = env
        .cli(&proj, &["sessions"], Some(&closed_port_url()))
        .await;
    assert!(!stdout(&out).contains("pruned"), "{}", stdout(&out));
}

#[tokio::test]
async fn zsh_and_fish_init_work_when_installed() {
    let env = Env::new();
    let proj = env.project("app");
    let mut ran = 0;
    for (sh, script) in [
        (
            "zsh",
            r#"eval "$("$BIN" init zsh)"; claude-session CC-Z && echo "id=$CLAUDE_RELAY_SESSION_ID""#,
        ),
        (
            "fish",
            r#"$BIN init fish | source; claude-session CC-Z; and echo "id=$CLAUDE_RELAY_SESSION_ID""#,
        ),
    ] {
        if !has_shell(sh) {
            // CI installs both (.ci/run) and sets this, so there the test cannot skip.
            assert!(
                std::env::var_os("RELAY_TEST_REQUIRE_SHELLS").is_none(),
                "{sh} is not installed but RELAY_TEST_REQUIRE_SHELLS is set"
            );
            println!("note: {sh} is not installed; skipping its init test");
            continue;
        }
        ran += 1;
        let out = env.shell(sh, &proj, script, None).await;
        assert!(out.status.success(), "{sh}: {}", stderr(&out));
        assert_eq!(stdout(&out).trim(), "id=CC-Z", "{sh}: {}", stderr(&out));
        // Functions exist and fail cleanly on a bad name.
        let bad = if sh == "fish" {
            r#"$BIN init fish | source; claude-session 9x; echo "rc=$status""#
        } else {
            r#"eval "$("$BIN" init zsh)"; claude-session 9x; echo "rc=$?""#
        };
        let out = env.shell(sh, &proj, bad, None).await;
        assert_eq!(stdout(&out).trim(), "rc=1", "{sh}: {}", stderr(&out));
    }
    // The printed scripts are at least well-formed text that names the binary.
    for sh in ["zsh", "fish"] {
        let out = env.cli(&proj, &["init", sh], None).await;
        assert!(out.status.success());
        let s = stdout(&out);
        assert!(s.contains("claude-session") && s.contains(bin()), "{s}");
    }
    println!("ran init tests for {ran} of zsh/fish");
}

#[tokio::test]
async fn sessions_shows_what_the_live_hub_knows() {
    let env = Env::new();
    let proj = env.project("app");
    let hub = Hub::start(env.dir.path()).await;

    // A session on "another machine", connected over a raw WebSocket.
    let mut ws = Ws::connect(&hub.url).await;
    ws.send(json!({
        "type": "register",
        "clientId": "CC-9",
        "meta": {"pid": 424242, "cwd": "/remote/work", "host": "otherbox.example.com"}
    }))
    .await;
    ws.expect("registered").await;

    // A local session that runs (this test process) but is not connected, and one that is
    // only named.
    env.registry()
        .update(|f| {
            f.mark_running(
                "LOCAL-1",
                EntryUpdate {
                    cwd: Some("/w/local".into()),
                    bridge: Some(liveness::current()),
                    ..Default::default()
                },
            );
            f.mark_named("CC-1", Some("/w/named".into()));
        })
        .unwrap();

    let out = env
        .cli(&proj, &["sessions", "--relay-url", &hub.url], None)
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("unreachable"), "{text}");
    assert_eq!(
        row(&text, "CC-9").unwrap(),
        ["CC-9", "424242", "-", "yes", "otherbox:/remote/work"],
        "{text}"
    );
    assert_eq!(
        row(&text, "LOCAL-1").unwrap()[2..4],
        ["yes", "no"],
        "{text}"
    );
    assert_eq!(
        row(&text, "CC-1").unwrap()[..4],
        ["CC-1", "-", "-", "no"],
        "{text}"
    );
    let names: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["CC-1", "CC-9", "LOCAL-1"], "sorted by name: {text}");

    // --connected (claude-peers) shows only the connected one.
    let out = env
        .cli(&proj, &["sessions", "--connected"], Some(&hub.url))
        .await;
    let text = stdout(&out);
    assert!(row(&text, "CC-9").is_some(), "{text}");
    assert!(
        row(&text, "LOCAL-1").is_none() && row(&text, "CC-1").is_none(),
        "{text}"
    );

    let out = env
        .cli(&proj, &["sessions", "--json"], Some(&hub.url))
        .await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hub"]["reachable"], true);
    let cc9 = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "CC-9")
        .unwrap();
    assert_eq!(cc9["connected"], true);
    assert_eq!(cc9["host"], "otherbox.example.com");
    assert!(cc9["lastSeen"].is_string(), "{cc9}");

    // After it disconnects the hub still knows it, offline.
    drop(ws);
    common::eventually("CC-9 listed as disconnected", WAIT, async || {
        let out = env
            .cli(&proj, &["sessions", "--json"], Some(&hub.url))
            .await;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let cc9 = v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "CC-9")
            .cloned();
        if cc9.as_ref().is_some_and(|s| s["connected"] == false) {
            Ok(())
        } else {
            Err(format!("{cc9:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn one_unreadable_registry_entry_costs_only_itself() {
    let env = Env::new();
    let proj = env.project("app");
    let reg = env.home().join("sessions").join("registry.json");
    std::fs::create_dir_all(reg.parent().unwrap()).unwrap();
    // CC-2 was written by a newer claude-relay: a state this version does not know.
    let newer = json!({"state": "hibernating", "cwd": "/srv/x", "wakeAt": 5});
    let file = json!({"version": 1, "sessions": {
        "CC-1": {"state": "named", "cwd": proj.to_str().unwrap()},
        "CC-2": newer,
    }});
    std::fs::write(&reg, serde_json::to_vec_pretty(&file).unwrap()).unwrap();

    let text = env.sessions_hub_down(&proj).await;
    assert!(
        row(&text, "CC-1").is_some(),
        "the rest is still listed: {text}"
    );
    assert!(
        text.contains("registry entry CC-2 is unreadable") && text.contains("hibernating"),
        "{text}"
    );
    // Naming another session rewrites the file: CC-2 is still there, exactly as it was.
    let out = env.cli(&proj, &["sessions", "name", "CC-3"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&std::fs::read(&reg).unwrap()).unwrap();
    assert_eq!(v["sessions"]["CC-2"], newer, "{v:#}");
    assert_eq!(v["sessions"]["CC-3"]["state"], "named");
    assert_eq!(v["sessions"]["CC-1"]["state"], "named");
    let aside: Vec<_> = std::fs::read_dir(reg.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("corrupt"))
        .collect();
    assert!(aside.is_empty(), "nothing was moved aside");
}
