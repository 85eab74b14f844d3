//! The Claude Code plugin in this repository (`.claude-plugin/marketplace.json`,
//! `plugins/claude-relay/`), installed the way the README tells a user to: real Claude Code
//! (npm `@anthropic-ai/claude-code`, the binary named by `RELAY_TEST_CLAUDE`; `.ci/run`
//! installs it and sets `RELAY_TEST_REQUIRE_CLAUDE=1`) with a throw-away HOME and an empty
//! environment, `claude plugin marketplace add <repo>`, `claude plugin install
//! claude-relay@claude-relay`, then `claude mcp list` must show the plugin's relay server
//! connected — and the hub this test started must have seen the bridge register, which proves
//! the server got `RELAY_URL` from the environment and really reached the hub.
//!
//! Nothing here needs the network: the marketplace is a local directory and the hub listens on
//! 127.0.0.1:0.

use crate::common;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use common::{
    hub::{Hub, bin},
    ws::Ws,
};
use serde_json::json;
use tokio::process::Command;

/// How long one `claude` command may take (it starts the bridge for `mcp list`).
const CLAUDE_WAIT: Duration = Duration::from_secs(60);

/// The Claude Code binary, or `None` (with a loud note) when it is not available and not
/// required.
fn claude() -> Option<PathBuf> {
    let found = std::env::var_os("RELAY_TEST_CLAUDE")
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("RELAY_TEST_REQUIRE_CLAUDE").is_none(),
            "RELAY_TEST_REQUIRE_CLAUDE is set but RELAY_TEST_CLAUDE ({:?}) is not a Claude Code \
             binary",
            std::env::var_os("RELAY_TEST_CLAUDE")
        );
        // Straight to stderr: the test harness would swallow eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: the Claude Code plugin test needs Claude Code. Install it with\n    \
             npm install --prefix \"$HOME/.cache/claude-relay-ci/claude\" @anthropic-ai/claude-code\n\
             and set RELAY_TEST_CLAUDE=\"$HOME/.cache/claude-relay-ci/claude/node_modules/.bin/claude\" \
             (.ci/run does both) ***\n"
        );
    }
    found
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Claude {
    program: PathBuf,
    home: PathBuf,
    work: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl Claude {
    /// `claude ARGS` in an empty environment: HOME, a PATH that starts with our binary's
    /// directory (the plugin runs `claude-relay` by name), no auto-update or telemetry.
    async fn run(&self, args: &[&str]) -> Output {
        let bin_dir = Path::new(bin()).parent().unwrap();
        let mut c = Command::new(&self.program);
        c.args(args)
            .current_dir(&self.work)
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
            .env("DISABLE_AUTOUPDATER", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_ERROR_REPORTING", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let out = tokio::time::timeout(CLAUDE_WAIT, c.output())
            .await
            .unwrap_or_else(|_| panic!("claude {args:?} took more than {CLAUDE_WAIT:?}"))
            .unwrap();
        assert!(
            out.status.success(),
            "claude {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn the_plugin_installs_from_the_repo_and_its_relay_server_connects() {
    let Some(program) = claude() else { return };
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let claude = Claude {
        program,
        home: dir.path().join("home"),
        work: dir.path().join("work"),
        env: vec![
            ("RELAY_URL", hub.url.clone()),
            ("CLAUDE_RELAY_SESSION_ID", "PLUGIN-1".into()),
            (
                "CLAUDE_RELAY_HOME",
                dir.path().join("relay-home").display().to_string(),
            ),
        ],
    };
    std::fs::create_dir_all(&claude.home).unwrap();
    std::fs::create_dir_all(&claude.work).unwrap();

    // Claude Code's own validator accepts both manifests, warnings included.
    let repo_root = repo().to_str().unwrap();
    let plugin_dir = repo().join("plugins/claude-relay");
    for path in [repo_root, plugin_dir.to_str().unwrap()] {
        let out = claude.run(&["plugin", "validate", "--strict", path]).await;
        assert!(text(&out).contains("Validation passed"), "{}", text(&out));
    }

    let added = claude
        .run(&["plugin", "marketplace", "add", repo_root])
        .await;
    assert!(text(&added).contains("claude-relay"), "{}", text(&added));
    let installed = claude
        .run(&["plugin", "install", "claude-relay@claude-relay"])
        .await;
    assert!(
        text(&installed).contains("installed plugin: claude-relay@claude-relay"),
        "{}",
        text(&installed)
    );
    // Its parts: the skill, the Stop hook, the MCP server.
    let details = text(
        &claude
            .run(&["plugin", "details", "claude-relay@claude-relay"])
            .await,
    );
    for part in ["Skills (1)", "Hooks (1)", "Stop", "MCP servers (1)"] {
        assert!(details.contains(part), "no {part:?} in\n{details}");
    }

    let listed = text(&claude.run(&["mcp", "list"]).await);
    let line = listed
        .lines()
        .find(|l| l.starts_with("plugin:claude-relay:relay:"))
        .unwrap_or_else(|| panic!("no plugin:claude-relay:relay server in\n{listed}"));
    assert!(line.contains("claude-relay mcp"), "{line}");
    assert!(line.contains("✔ Connected"), "{line}");

    // `mcp list` is a health check: the bridge answered `initialize` and was closed without a
    // tool call, so it must leave nothing behind — no session on the hub, no owner secret on
    // disk (docs/BRIDGE.md, "Lifecycle": registration waits for a tool call or a few seconds
    // of a live client).
    let mut ws = Ws::connect(&hub.url).await;
    ws.send(json!({"type": "get_sessions"})).await;
    let s = ws.expect("sessions").await;
    assert!(
        s["sessions"].get("PLUGIN-1").is_none(),
        "a health check registered PLUGIN-1 on the hub: {s}"
    );
    let owners = dir.path().join("relay-home/owners");
    let left: Vec<_> = std::fs::read_dir(&owners)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a health check left owner files: {left:?}");
}
