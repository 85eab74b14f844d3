//! Spawning real `claude-relay mcp` bridges and driving them with rmcp's client, as Claude
//! Code would: over the child's stdin/stdout, speaking MCP `2025-11-25`.
//!
//! Every wait is bounded ([`WAIT`]); "until" helpers poll a tool with a deadline instead of
//! sleeping a fixed time.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use rmcp::{
    RoleClient, ServiceExt,
    model::{
        CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
    },
    service::RunningService,
};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use super::hub::{WAIT, bin};

/// A tool result as text.
#[derive(Debug, Clone)]
pub(crate) struct ToolOut {
    /// All text content joined.
    pub text: String,
    /// `isError` of the result.
    pub is_error: bool,
}

/// How to start a bridge.
#[derive(Clone, Debug)]
pub(crate) struct BridgeOpts {
    /// `CLAUDE_RELAY_SESSION_ID` (None: not set).
    pub session_id: Option<String>,
    /// Hub URL (`RELAY_URL`).
    pub url: String,
    /// `CLAUDE_RELAY_HOME`.
    pub home: PathBuf,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Extra arguments after `mcp`.
    pub args: Vec<String>,
    /// The MCP client's name in `initialize` (default: `bridge-tests`).
    pub client_name: Option<String>,
    /// Working directory of the bridge (None: the test's).
    pub cwd: Option<PathBuf>,
}

impl BridgeOpts {
    /// A bridge named `id` for the hub at `url`, with its relay home under `dir`.
    pub(crate) fn new(dir: &Path, url: &str, id: &str) -> Self {
        Self {
            session_id: Some(id.to_string()),
            url: url.to_string(),
            home: dir.join("home"),
            env: Vec::new(),
            args: Vec::new(),
            client_name: None,
            cwd: None,
        }
    }
}

/// `claude-relay mcp` with the environment of `opts`, stdio piped, stderr collected into
/// `log`. `wrapper` runs it under `sh -c` (for a parent that can be killed).
pub(crate) fn command(opts: &BridgeOpts, under_shell: bool) -> Command {
    let mut cmd = if under_shell {
        // `; :` keeps sh from exec'ing the bridge, so sh stays its parent.
        let mut c = Command::new("sh");
        c.arg("-c").arg("\"$0\" mcp \"$@\"; :").arg(bin());
        c
    } else {
        let mut c = Command::new(bin());
        c.arg("mcp");
        c
    };
    super::clean_env(&mut cmd);
    cmd.args(&opts.args)
        .env("RELAY_URL", &opts.url)
        .env("CLAUDE_RELAY_HOME", &opts.home)
        .env("RELAY_LOG", "info")
        .env_remove("CLAUDE_RELAY_SESSION_ID")
        .env_remove("RELAY_CLIENT_ID")
        .env_remove("CLAUDE_CODE_SESSION_ID")
        .env_remove("RELAY_TOOL_PROFILE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(id) = &opts.session_id {
        cmd.env("CLAUDE_RELAY_SESSION_ID", id);
    }
    if let Some(cwd) = &opts.cwd {
        cmd.current_dir(cwd);
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    cmd
}

/// Collects a child's stderr lines in the background.
pub(crate) fn collect_stderr(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let stderr = child.stderr.take().expect("stderr piped");
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    log
}

/// The client identity tests present: what Claude Code sends on stdio.
pub(crate) fn client_config() -> ClientConfig {
    client_config_named("bridge-tests")
}

/// [`client_config`] with another client name (say `claude-code`, `codex-mcp-client`).
pub(crate) fn client_config_named(name: &str) -> ClientConfig {
    let mut c = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new(name, "1.0"),
    );
    c.protocol_version = ProtocolVersion::V_2025_11_25;
    c
}

/// A running bridge with an initialized MCP client on its stdio.
pub(crate) struct Bridge {
    /// The session id it was started as.
    pub id: String,
    /// The process (the bridge, or `sh` when started under a shell).
    pub child: Child,
    /// The MCP client (None once closed).
    pub client: Option<RunningService<RoleClient, ClientConfig>>,
    /// Its stderr.
    pub log: Arc<Mutex<Vec<String>>>,
    /// How it was started.
    pub opts: BridgeOpts,
}

impl Bridge {
    /// Starts a bridge named `id` and initializes MCP with it.
    pub(crate) async fn start(dir: &Path, url: &str, id: &str) -> Bridge {
        Self::start_with(BridgeOpts::new(dir, url, id), false).await
    }

    /// Starts a bridge from `opts` (under `sh` when `under_shell`).
    pub(crate) async fn start_with(opts: BridgeOpts, under_shell: bool) -> Bridge {
        let mut child = command(&opts, under_shell).spawn().expect("spawn bridge");
        let log = collect_stderr(&mut child);
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take().expect("stdin");
        let config = client_config_named(opts.client_name.as_deref().unwrap_or("bridge-tests"));
        let client = tokio::time::timeout(WAIT, config.serve((stdout, stdin)))
            .await
            .expect("initialize timed out")
            .unwrap_or_else(|e| {
                panic!("initialize failed: {e}; stderr: {:#?}", log.lock().unwrap())
            });
        Bridge {
            id: opts.session_id.clone().unwrap_or_default(),
            child,
            client: Some(client),
            log,
            opts,
        }
    }

    /// The MCP client.
    pub(crate) fn client(&self) -> &RunningService<RoleClient, ClientConfig> {
        self.client.as_ref().expect("client open")
    }

    /// Calls `tool` with `args` (a JSON object or null) and returns its text.
    pub(crate) async fn call(&self, tool: &str, args: Value) -> ToolOut {
        let mut params = CallToolRequestParams::new(tool.to_string());
        if let Value::Object(map) = args {
            params = params.with_arguments(map);
        }
        let result = tokio::time::timeout(WAIT, self.client().call_tool(params))
            .await
            .unwrap_or_else(|_| panic!("{tool} on {} timed out", self.id))
            .unwrap_or_else(|e| panic!("{tool} on {} failed: {e}", self.id));
        let text = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect::<Vec<_>>()
            .join("\n");
        ToolOut {
            text,
            is_error: result.is_error == Some(true),
        }
    }

    /// Calls `tool` and asserts it did not fail.
    pub(crate) async fn ok(&self, tool: &str, args: Value) -> String {
        let out = self.call(tool, args).await;
        assert!(!out.is_error, "{tool} on {} failed: {}", self.id, out.text);
        out.text
    }

    /// Polls `relay_status` until the bridge reports a registered connection.
    pub(crate) async fn wait_connected(&self) {
        self.wait_connected_within(WAIT).await;
    }

    /// Like [`Self::wait_connected`] with an explicit limit.
    pub(crate) async fn wait_connected_within(&self, limit: Duration) {
        self.status_until("— connected for", limit).await;
    }

    /// Polls `relay_status` until it contains `needle` (bounded by `limit`); returns it. A
    /// timeout shows the last status and the bridge's stderr.
    pub(crate) async fn status_until(&self, needle: &str, limit: Duration) -> String {
        super::eventually(
            &format!("{}: status says {needle:?}", self.id),
            limit,
            async || {
                let status = self.ok("relay_status", Value::Null).await;
                if status.contains(needle) {
                    Ok(status)
                } else {
                    Err(format!("{status}; stderr: {:#?}", self.log.lock().unwrap()))
                }
            },
        )
        .await
    }

    /// Closes the client's end (stdin EOF for the bridge).
    pub(crate) async fn close_stdin(&mut self) {
        if let Some(mut client) = self.client.take() {
            let _ = tokio::time::timeout(WAIT, client.close()).await;
        }
    }

    /// Waits (bounded by `limit`) for the child to exit.
    pub(crate) async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .map(|r| r.expect("wait child"))
    }

    /// The registry file of this bridge's relay home, as JSON.
    pub(crate) fn registry(&self) -> Value {
        read_registry(&self.opts.home)
    }

    /// Polls the registry until entry `name` has `state` (the bridge records it in the
    /// background), bounded by [`WAIT`]; returns the file.
    pub(crate) async fn registry_until(&self, name: &str, state: &str) -> Value {
        super::eventually(
            &format!("registry entry {name} is {state}"),
            WAIT,
            async || {
                let reg = self.registry();
                if reg["sessions"][name]["state"] == state {
                    Ok(reg)
                } else {
                    Err(reg.to_string())
                }
            },
        )
        .await
    }
}

/// `$CLAUDE_RELAY_HOME/sessions/registry.json` as JSON (null when missing).
pub(crate) fn read_registry(home: &Path) -> Value {
    std::fs::read(home.join("sessions").join("registry.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// True when `pid` no longer runs (gone, or a zombie nobody reaped yet).
pub(crate) fn process_gone(pid: u32) -> bool {
    let out = std::process::Command::new("ps")
        .args(["-o", "stat=", "-p", &pid.to_string()])
        .output()
        .expect("run ps");
    let stat = String::from_utf8_lossy(&out.stdout);
    let stat = stat.trim();
    stat.is_empty() || stat.starts_with('Z')
}

/// The message id in a `relay_send` result ("… — id EPOCH-SEQ …").
pub(crate) fn sent_id(out: &str) -> String {
    let rest = out
        .split("id ")
        .nth(1)
        .unwrap_or_else(|| panic!("no id in {out}"));
    rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .next()
        .unwrap()
        .to_string()
}
