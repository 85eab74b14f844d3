//! `claude-relay doctor` against a throw-away HOME: the real binary on PATH, a real hub with a
//! token on 127.0.0.1:0, the MCP entry in `~/.claude.json`, the Stop hook written by the real
//! `claude-relay hooks install`, owner secrets and the registry in `~/.claude-relay`. First
//! all green; then each broken piece — no MCP entry, an entry whose binary is gone, no Stop
//! hook, a wrong token, the hub down, a secret readable by others, a ghost in the registry —
//! must be reported with its fix.

use crate::common;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Output, Stdio},
};

use common::hub::{Hub, HubOpts, WAIT, bin};
use relay_local::{EntryUpdate, Registry, liveness};
use serde_json::{Value, json};
use tokio::process::Command;

const TOKEN: &str = "doctor-token-6c1f0a";

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("hub.token")
    }

    /// `claude-relay ARGS` as the user of this HOME: the binary's directory first on PATH,
    /// no relay variables from the developer's environment unless given.
    async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let bin_dir = Path::new(bin()).parent().unwrap();
        let mut c = Command::new(bin());
        common::clean_env(&mut c);
        c.args(args)
            .env("HOME", self.home())
            .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
            .env_remove("XDG_CONFIG_HOME")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in env {
            c.env(k, v);
        }
        tokio::time::timeout(WAIT, c.output())
            .await
            .expect("claude-relay timed out")
            .unwrap()
    }

    /// `doctor --json` → (exit code, the checks by name).
    async fn doctor(&self, env: &[(&str, &str)]) -> (i32, Vec<Value>, String) {
        let out = self.run(&["doctor", "--json"], env).await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let checks: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "doctor --json is not JSON ({e}): {text}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap(), checks, text)
    }

    fn write_claude_json(&self, state: &Value) {
        std::fs::write(self.home().join(".claude.json"), state.to_string()).unwrap();
    }
}

fn check<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {checks:#?}"))
}

fn status<'a>(checks: &'a [Value], name: &str) -> &'a str {
    check(checks, name)["status"].as_str().unwrap()
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn doctor_is_green_when_set_up_and_names_each_broken_piece_with_its_fix() {
    let s = Setup {
        dir: tempfile::tempdir().unwrap(),
    };
    std::fs::create_dir_all(s.home()).unwrap();
    std::fs::write(s.token_file(), format!("{TOKEN}\n")).unwrap();
    chmod(&s.token_file(), 0o600);
    let mut hub = Hub::start_with(
        s.dir.path(),
        HubOpts {
            args: vec!["--token-file".into(), s.token_file().display().to_string()],
            ..HubOpts::default()
        },
    )
    .await;

    // Set up as the README says: the MCP entry (with the hub's URL and token file in its env),
    // the Stop hook, an owned name's secret.
    let entry = json!({"mcpServers": {"claude-relay": {"type": "stdio", "command": "claude-relay",
        "args": ["mcp"], "env": {"RELAY_URL": hub.url, "RELAY_TOKEN_FILE": s.token_file()}}},
        "numStartups": 3});
    s.write_claude_json(&entry);
    let hooks = s.run(&["hooks", "install"], &[]).await;
    assert!(hooks.status.success(), "{hooks:?}");
    let owners = s.home().join(".claude-relay").join("owners");
    std::fs::create_dir_all(&owners).unwrap();
    chmod(&owners, 0o700);
    let secret = owners.join("CC-1");
    std::fs::write(&secret, "5f1c0de\n").unwrap();
    chmod(&secret, 0o600);

    let (code, checks, text) = s.doctor(&[]).await;
    for c in &checks {
        assert!(
            ["ok", "skip"].contains(&c["status"].as_str().unwrap()),
            "not green: {c}\n{text}"
        );
        assert_eq!(c["ok"], true, "{c}");
    }
    assert_eq!(code, 0, "{text}");
    let names: Vec<&str> = checks
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "path",
            "hub",
            "claude-mcp",
            "codex-mcp",
            "gemini-mcp",
            "stop-hook",
            "channels",
            "owner-secrets",
            "token-file",
            "registry"
        ]
    );
    let hub_check = check(&checks, "hub");
    assert!(
        hub_check["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("hub {}", env!("CARGO_PKG_VERSION"))),
        "{hub_check}"
    );
    assert!(
        hub_check["detail"]
            .as_str()
            .unwrap()
            .contains("~/.claude.json"),
        "{hub_check}"
    );
    assert_eq!(status(&checks, "codex-mcp"), "skip");
    assert!(!text.contains(TOKEN), "the token leaked: {text}");

    // Codex set up without our server: a hint, not a failure; with it: checked.
    std::fs::create_dir_all(s.home().join(".codex")).unwrap();
    std::fs::write(s.home().join(".codex/config.toml"), "model = \"o3\"\n").unwrap();
    let (code, checks, _) = s.doctor(&[]).await;
    assert_eq!(status(&checks, "codex-mcp"), "warn");
    assert!(
        check(&checks, "codex-mcp")["fix"]
            .as_str()
            .unwrap()
            .contains("[mcp_servers.claude-relay]")
    );
    assert_eq!(code, 0);
    std::fs::write(
        s.home().join(".codex/config.toml"),
        "[mcp_servers.claude-relay]\ncommand = \"/nowhere/claude-relay\"\nargs = [\"mcp\"]\n",
    )
    .unwrap();
    let (code, checks, _) = s.doctor(&[]).await;
    assert_eq!(status(&checks, "codex-mcp"), "fail");
    assert!(
        check(&checks, "codex-mcp")["detail"]
            .as_str()
            .unwrap()
            .contains("/nowhere/claude-relay")
    );
    assert_eq!(code, 1);
    std::fs::remove_dir_all(s.home().join(".codex")).unwrap();

    // A ghost in the registry: a hint (with the command that prunes it), not a failure.
    let dead = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let stamp = liveness::stamp(child.id()).unwrap();
        child.wait().unwrap();
        stamp
    };
    let registry = Registry::at(s.home().join(".claude-relay/sessions/registry.json"));
    registry
        .update(|f| {
            f.mark_running(
                "GHOST",
                EntryUpdate {
                    bridge: Some(dead),
                    ..Default::default()
                },
            )
        })
        .unwrap();
    let (code, checks, _) = s.doctor(&[]).await;
    assert_eq!(status(&checks, "registry"), "warn");
    assert!(
        check(&checks, "registry")["detail"]
            .as_str()
            .unwrap()
            .contains("GHOST")
    );
    assert!(
        check(&checks, "registry")["fix"]
            .as_str()
            .unwrap()
            .starts_with("claude-relay sessions")
    );
    assert_eq!(code, 0);

    // A wrong token (the environment wins over the entry's env): the hub check fails and says
    // how to give the right one, without showing either token.
    let (code, checks, text) = s.doctor(&[("RELAY_TOKEN", "not-the-token")]).await;
    assert_eq!(code, 1);
    let hub_check = check(&checks, "hub");
    assert_eq!(hub_check["status"], "fail");
    assert!(
        hub_check["detail"].as_str().unwrap().contains("token"),
        "{hub_check}"
    );
    assert!(
        hub_check["fix"]
            .as_str()
            .unwrap()
            .contains("RELAY_TOKEN_FILE"),
        "{hub_check}"
    );
    assert!(
        !text.contains("not-the-token") && !text.contains(TOKEN),
        "{text}"
    );

    // No MCP entry.
    s.write_claude_json(&json!({"numStartups": 3}));
    let token_file = s.token_file().display().to_string();
    let env = [
        ("RELAY_URL", hub.url.as_str()),
        ("RELAY_TOKEN_FILE", token_file.as_str()),
    ];
    let (code, checks, _) = s.doctor(&env).await;
    assert_eq!(code, 1);
    assert_eq!(status(&checks, "hub"), "ok", "{checks:#?}");
    let mcp = check(&checks, "claude-mcp");
    assert_eq!(mcp["status"], "fail");
    assert!(
        mcp["fix"]
            .as_str()
            .unwrap()
            .starts_with("claude mcp add --scope user claude-relay -- claude-relay mcp"),
        "{mcp}"
    );

    // An entry whose binary is gone.
    s.write_claude_json(&json!({"mcpServers": {"claude-relay": {"command": "/opt/old/claude-relay", "args": ["mcp"]}}}));
    let (code, checks, _) = s.doctor(&env).await;
    assert_eq!(code, 1);
    let mcp = check(&checks, "claude-mcp");
    assert_eq!(mcp["status"], "fail");
    assert!(
        mcp["detail"]
            .as_str()
            .unwrap()
            .contains("/opt/old/claude-relay"),
        "{mcp}"
    );
    s.write_claude_json(&entry);

    // No Stop hook.
    assert!(s.run(&["hooks", "uninstall"], &[]).await.status.success());
    let (code, checks, _) = s.doctor(&[]).await;
    assert_eq!(code, 1);
    assert_eq!(status(&checks, "stop-hook"), "fail");
    assert_eq!(
        check(&checks, "stop-hook")["fix"],
        "claude-relay hooks install"
    );
    assert!(s.run(&["hooks", "install"], &[]).await.status.success());

    // Secrets readable by others: the owner secret, then the token file.
    chmod(&secret, 0o644);
    chmod(&s.token_file(), 0o640);
    let (code, checks, _) = s.doctor(&[]).await;
    assert_eq!(code, 1);
    let owners_check = check(&checks, "owner-secrets");
    assert_eq!(owners_check["status"], "fail");
    assert_eq!(
        owners_check["fix"],
        format!("chmod 600 {}", secret.display())
    );
    let token_check = check(&checks, "token-file");
    assert_eq!(token_check["status"], "fail");
    assert_eq!(
        token_check["fix"],
        format!("chmod 600 {}", s.token_file().display())
    );
    chmod(&secret, 0o600);
    chmod(&s.token_file(), 0o600);

    // The hub down; the human-readable report marks it and gives the fix on the next line.
    hub.kill().await;
    let out = s.run(&["doctor"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = report.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("✖ hub"))
        .unwrap_or_else(|| panic!("no failed hub line in\n{report}"));
    assert!(lines[at].contains("unreachable"), "{report}");
    assert!(
        lines[at + 1]
            .trim_start()
            .starts_with("fix: claude-relay service install"),
        "{report}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("✔ claude-mcp")),
        "{report}"
    );
    assert!(
        report.trim_end().ends_with("1 problem(s) to fix."),
        "{report}"
    );
}
