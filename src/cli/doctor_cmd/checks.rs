//! The checks of `claude-relay doctor`, as pure functions from what was found on this
//! machine (gathered by the parent module) to a verdict with its fix. Nothing here reads a
//! file, runs a program or opens a socket, so every verdict is unit-tested.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::super::{external::sh_quote, hooks_cmd, hub_ping::Ping};

/// The first Claude Code version with channels (`notifications/claude/channel`).
const CHANNELS_SINCE: (u32, u32, u32) = (2, 1, 80);

/// The fix for a missing Claude Code MCP entry.
const ADD_CLAUDE: &str = "claude mcp add --scope user claude-relay -- claude-relay mcp   (or \
                          the plugin: claude plugin marketplace add CLAUDE-RELAY-CHECKOUT && \
                          claude plugin install claude-relay@claude-relay)";

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// Set up and working.
    Ok,
    /// Works, but something deserves attention (the fix says what).
    Warn,
    /// Broken: `doctor` exits 1.
    Fail,
    /// Not applicable here (e.g. Codex is not set up).
    Skip,
}

impl Status {
    /// The word in `--json`.
    pub(super) fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }

    /// The mark at the start of a human-readable line.
    pub(super) fn mark(self) -> &'static str {
        match self {
            Status::Ok => "✔",
            Status::Warn => "!",
            Status::Fail => "✖",
            Status::Skip => "-",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Check {
    /// Stable name (`--json` consumers key on it).
    pub(super) name: &'static str,
    pub(super) status: Status,
    /// What was found.
    pub(super) detail: String,
    /// The command (or edit) that fixes it.
    pub(super) fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Ok, detail, None::<String>)
    }
    fn skip(name: &'static str, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Skip, detail, None::<String>)
    }
    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Status::Warn, detail, Some(fix))
    }
    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Status::Fail, detail, Some(fix))
    }
    fn new(
        name: &'static str,
        status: Status,
        detail: impl Into<String>,
        fix: Option<impl Into<String>>,
    ) -> Self {
        Self {
            name,
            status,
            detail: detail.into(),
            fix: fix.map(Into::into),
        }
    }
}

/// A program found on PATH and what its `--version` said (or why it said nothing).
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub(super) path: PathBuf,
    pub(super) version: Result<String, String>,
}

/// A configuration file: missing, unusable (why), or its contents.
#[derive(Debug, Clone)]
pub(super) enum Config<T> {
    Missing,
    Broken(String),
    Parsed(T),
}

/// An MCP server entry that runs `claude-relay mcp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct McpEntry {
    /// The server's name in the file (with its scope when not the user's).
    pub(super) name: String,
    pub(super) command: String,
    pub(super) env: BTreeMap<String, String>,
}

/// Whether `command args…` is our bridge: a program named `claude-relay`, first argument
/// `mcp`.
fn is_bridge(command: &str, first_arg: Option<&str>) -> bool {
    Path::new(command.trim())
        .file_name()
        .and_then(|n| n.to_str())
        == Some("claude-relay")
        && first_arg == Some("mcp")
}

/// The entry for one server when it runs our bridge.
fn bridge_entry<'a>(
    name: String,
    command: Option<&str>,
    first_arg: Option<&str>,
    env: impl Iterator<Item = (&'a String, Option<&'a str>)>,
) -> Option<McpEntry> {
    let command = command?;
    is_bridge(command, first_arg).then(|| McpEntry {
        name,
        command: command.to_string(),
        env: env
            .filter_map(|(k, v)| Some((k.clone(), v?.to_string())))
            .collect(),
    })
}

/// Our entries among a JSON `mcpServers` object (Claude Code, Gemini CLI).
pub(super) fn json_entries(servers: Option<&Value>, scope: &str) -> Vec<McpEntry> {
    let Some(Value::Object(servers)) = servers else {
        return Vec::new();
    };
    servers
        .iter()
        .filter_map(|(name, s)| {
            bridge_entry(
                scoped(name, scope),
                s.get("command").and_then(Value::as_str),
                s.get("args").and_then(|a| a.get(0)).and_then(Value::as_str),
                s.get("env")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k, v.as_str())),
            )
        })
        .collect()
}

/// Our entries in `~/.claude.json`: the user's `mcpServers`, then each project's.
pub(super) fn claude_entries(state: &Value) -> Vec<McpEntry> {
    let mut found = json_entries(state.get("mcpServers"), "");
    if let Some(Value::Object(projects)) = state.get("projects") {
        for (dir, p) in projects {
            found.extend(json_entries(p.get("mcpServers"), dir));
        }
    }
    found
}

/// Our entries in Codex's `config.toml` (`[mcp_servers.NAME]`).
pub(super) fn codex_entries(config: &toml::Table) -> Vec<McpEntry> {
    let Some(toml::Value::Table(servers)) = config.get("mcp_servers") else {
        return Vec::new();
    };
    servers
        .iter()
        .filter_map(|(name, s)| {
            bridge_entry(
                name.clone(),
                s.get("command").and_then(toml::Value::as_str),
                s.get("args")
                    .and_then(|a| a.get(0))
                    .and_then(toml::Value::as_str),
                s.get("env")
                    .and_then(toml::Value::as_table)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k, v.as_str())),
            )
        })
        .collect()
}

fn scoped(name: &str, scope: &str) -> String {
    if scope.is_empty() {
        name.to_string()
    } else {
        format!("{name} (project {scope})")
    }
}

/// The enabled Claude Code plugin of ours (`claude-relay@MARKETPLACE`), from
/// `~/.claude/settings.json`'s `enabledPlugins`.
pub(super) fn enabled_plugin(settings: &Value) -> Option<String> {
    settings
        .get("enabledPlugins")?
        .as_object()?
        .iter()
        .find(|(k, v)| k.starts_with("claude-relay@") && v.as_bool() == Some(true))
        .map(|(k, _)| k.clone())
}

/// `claude-relay` on PATH, and the same version as this binary.
pub(super) fn path_binary(found: Option<&Found>, own_version: &str, own_exe: &Path) -> Check {
    const NAME: &str = "path";
    let Some(found) = found else {
        let dir = own_exe.parent().unwrap_or(own_exe).display().to_string();
        return Check::fail(
            NAME,
            "claude-relay is not on PATH; MCP entries, the Stop hook and the shell functions \
             call it by name",
            format!(
                "cargo install --locked --path . (in the claude-relay checkout), or add {} to PATH",
                sh_quote(&dir)
            ),
        );
    };
    let at = found.path.display();
    match &found.version {
        Err(why) => Check::fail(
            NAME,
            format!("{at} is on PATH but `--version` failed: {why}"),
            "reinstall it: cargo install --locked --path . (in the claude-relay checkout)",
        ),
        Ok(v) if v != own_version => Check::warn(
            NAME,
            format!("claude-relay {v} at {at}, but this doctor is {own_version}"),
            "install one version everywhere: cargo install --locked --path . (in the checkout you want)",
        ),
        Ok(v) => Check::ok(NAME, format!("claude-relay {v} at {at}")),
    }
}

/// The hub answers at the configured URL with the configured token and CA, and runs the
/// version on PATH.
pub(super) fn hub(url: &str, origin: &str, ping: &Ping, expected: &str) -> Check {
    const NAME: &str = "hub";
    let start = "claude-relay service install   (or run it in a terminal: claude-relay hub)";
    match ping {
        Ping::Answered { version: Some(v) } if v == expected => {
            Check::ok(NAME, format!("{url} answered: hub {v} ({origin})"))
        }
        Ping::Answered { version: Some(v) } => Check::fail(
            NAME,
            format!(
                "{url} answered, but the hub runs {v} and claude-relay on PATH is {expected} ({origin})"
            ),
            "restart the hub on the new binary: claude-relay service install   (or restart `claude-relay hub`)",
        ),
        Ping::Answered { version: None } => Check::warn(
            NAME,
            format!(
                "{url} answered, but does not say its version: an older hub, or the Node relay ({origin})"
            ),
            "restart the hub on this binary: claude-relay service install",
        ),
        Ping::Token(why) => Check::fail(
            NAME,
            format!("{why} ({origin})"),
            "give the hub's token file: export RELAY_TOKEN_FILE=/path/to/hub.token (and put the \
             same in the MCP entry's env), or claude-relay doctor --token-file FILE",
        ),
        Ping::Tls(why) => Check::fail(
            NAME,
            format!("{why} ({origin})"),
            "give the CA that signed the hub's certificate: export RELAY_CA_CERT=/path/to/ca.pem \
             (and the same in the MCP entry's env), or use the ws:// / wss:// scheme the hub serves",
        ),
        Ping::Unreachable(why) => Check::fail(NAME, format!("{why} ({origin})"), start),
        Ping::Other(why) => Check::fail(
            NAME,
            format!("{why} ({origin})"),
            "check RELAY_URL (ws://HOST:PORT or wss://HOST:PORT)",
        ),
    }
}

/// What a command in an MCP entry or hook runs: `Ok(path)` when it exists, else why not.
pub(super) type Resolve<'a> = &'a dyn Fn(&str) -> Result<PathBuf, String>;

/// Claude Code's MCP entry (or the plugin) runs a bridge that exists.
pub(super) fn claude_mcp(
    state: &Config<Vec<McpEntry>>,
    shown: &str,
    plugin: Option<&str>,
    resolve: Resolve,
) -> Check {
    const NAME: &str = "claude-mcp";
    let entries = match state {
        Config::Broken(why) => {
            return Check::fail(
                NAME,
                format!("{shown} is unusable: {why}"),
                format!("repair {shown} (Claude Code keeps a backup in ~/.claude/backups)"),
            );
        }
        Config::Missing => &Vec::new(),
        Config::Parsed(entries) => entries,
    };
    let verdict = entries_verdict(NAME, entries, shown, resolve, || {
        "claude mcp remove --scope user claude-relay && claude mcp add --scope user claude-relay \
         -- claude-relay mcp"
            .to_string()
    });
    match (plugin, verdict) {
        (Some(p), None) => Check::ok(NAME, format!("the {p} plugin runs `claude-relay mcp`")),
        (Some(p), Some(c)) if c.status == Status::Ok => Check::warn(
            NAME,
            format!(
                "both the {p} plugin and {shown} start a relay server: every session gets two \
                 bridges claiming the same name"
            ),
            "keep one: claude mcp remove --scope user claude-relay   (or claude plugin uninstall \
             claude-relay)",
        ),
        (_, Some(c)) => c,
        (None, None) => Check::fail(
            NAME,
            format!("no MCP server in {shown} runs `claude-relay mcp`"),
            ADD_CLAUDE,
        ),
    }
}

/// Another agent's MCP entries (Codex, Gemini CLI): skipped when the agent's configuration
/// does not exist; a warning when it exists without our entry.
pub(super) fn other_mcp(
    name: &'static str,
    agent: &str,
    state: &Config<Vec<McpEntry>>,
    shown: &str,
    resolve: Resolve,
    how_to_add: &str,
) -> Check {
    match state {
        Config::Missing => Check::skip(name, format!("{agent} is not set up here (no {shown})")),
        Config::Broken(why) => Check::fail(
            name,
            format!("{shown} is unusable: {why}"),
            format!("repair {shown}"),
        ),
        Config::Parsed(entries) => entries_verdict(name, entries, shown, resolve, || {
            format!("point the entry at an existing binary: {how_to_add}")
        })
        .unwrap_or_else(|| {
            Check::warn(
                name,
                format!("{agent} is set up, but no MCP server in {shown} runs `claude-relay mcp`"),
                how_to_add.to_string(),
            )
        }),
    }
}

/// `None` without entries; else ok when every entry's command exists, the first broken one
/// otherwise.
fn entries_verdict(
    name: &'static str,
    entries: &[McpEntry],
    shown: &str,
    resolve: Resolve,
    fix: impl Fn() -> String,
) -> Option<Check> {
    if entries.is_empty() {
        return None;
    }
    let mut ok = Vec::new();
    for e in entries {
        match resolve(&e.command) {
            Ok(path) => ok.push(format!("{} → {}", e.name, path.display())),
            Err(why) => {
                return Some(Check::fail(
                    name,
                    format!("{shown}: the server {} runs {}, {why}", e.name, e.command),
                    fix(),
                ));
            }
        }
    }
    Some(Check::ok(name, format!("{shown}: {}", ok.join(", "))))
}

/// The Stop-hook doorbell is installed (or comes with the plugin) and runs a binary that
/// exists.
pub(super) fn stop_hook(
    settings: &Config<Value>,
    shown: &str,
    plugin: Option<&str>,
    resolve: Resolve,
) -> Check {
    const NAME: &str = "stop-hook";
    const INSTALL: &str = "claude-relay hooks install";
    let settings = match settings {
        Config::Broken(why) => {
            return Check::fail(
                NAME,
                format!("{shown} is unusable: {why}"),
                format!("repair {shown}"),
            );
        }
        Config::Missing => &Value::Null,
        Config::Parsed(v) => v,
    };
    let ours = settings
        .get("hooks")
        .and_then(|h| h.get("Stop"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g.get("hooks").and_then(Value::as_array))
        .flatten()
        .find_map(|h| hooks_cmd::our_program(h).map(|p| (h, p)));
    match (ours, plugin) {
        (None, Some(p)) => Check::ok(NAME, format!("the {p} plugin rings `claude-relay wait`")),
        (None, None) => Check::fail(
            NAME,
            format!(
                "no Stop hook runs `claude-relay wait` in {shown}: idle sessions are not woken by mail"
            ),
            INSTALL,
        ),
        (Some((hook, program)), _) => match resolve(&program) {
            Err(why) => Check::fail(
                NAME,
                format!("the Stop hook in {shown} runs {program}, {why}"),
                format!("{INSTALL}   (it updates the entry in place)"),
            ),
            Ok(path) => {
                let command = hook
                    .get("command")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if *hook != hooks_cmd::our_entry(command) {
                    Check::warn(
                        NAME,
                        format!(
                            "the Stop hook in {shown} runs {} but is not async with asyncRewake \
                             and a 3600 s timeout, so it may not wake the session",
                            path.display()
                        ),
                        INSTALL,
                    )
                } else {
                    Check::ok(NAME, format!("{shown}: Stop → {} wait", path.display()))
                }
            }
        },
    }
}

/// `2.1.197 (Claude Code)` → (2, 1, 197).
fn claude_version(text: &str) -> Option<(u32, u32, u32)> {
    let word = text.split_whitespace().next()?;
    let mut parts = word.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// A hint about channels: whether this Claude Code has them, and how to switch them on for
/// the relay server (`server` is what `--dangerously-load-development-channels` takes).
pub(super) fn channels(claude: Option<&Found>, server: &str) -> Check {
    const NAME: &str = "channels";
    let flag = format!("claude --dangerously-load-development-channels {server}");
    let Some(found) = claude else {
        return Check::skip(
            NAME,
            format!(
                "claude is not on PATH; with Claude Code ≥ 2.1.80, start it as `{flag}` to have mail pushed into busy sessions"
            ),
        );
    };
    let text = found.version.as_deref().unwrap_or_default();
    match claude_version(text) {
        Some(v) if v >= CHANNELS_SINCE => Check::ok(
            NAME,
            format!(
                "Claude Code {}.{}.{} has channels: start it as `{flag}` to have mail pushed into \
                 busy sessions (without it the Stop hook still wakes idle ones)",
                v.0, v.1, v.2
            ),
        ),
        Some(v) => Check::warn(
            NAME,
            format!(
                "Claude Code {}.{}.{} has no channels (2.1.80 or newer): mail reaches a session \
                 only when it is idle (Stop hook) or asks",
                v.0, v.1, v.2
            ),
            "claude update",
        ),
        None => Check::skip(
            NAME,
            format!(
                "cannot tell the version of {} ({text:?})",
                found.path.display()
            ),
        ),
    }
}

/// Secret files (owner secrets, the token file) readable or writable only by their owner.
/// `found` lists every file and directory checked with its permission bits.
pub(super) fn private_files(
    name: &'static str,
    what: &str,
    found: &Result<Vec<(PathBuf, u32, bool)>, String>,
) -> Check {
    let found = match found {
        Err(why) => {
            return Check::fail(
                name,
                format!("cannot check {what}: {why}"),
                "fix the path, or the permissions of the file named",
            );
        }
        Ok(f) if f.is_empty() => return Check::skip(name, format!("no {what} on this machine")),
        Ok(f) => f,
    };
    let loose: Vec<&(PathBuf, u32, bool)> = found
        .iter()
        .filter(|(_, mode, _)| mode & 0o077 != 0)
        .collect();
    if loose.is_empty() {
        let files = found.iter().filter(|(_, _, dir)| !dir).count();
        return Check::ok(name, format!("{files} file(s), private (0600)"));
    }
    let listed: Vec<String> = loose
        .iter()
        .map(|(p, mode, _)| format!("{} is {:o}", p.display(), mode & 0o777))
        .collect();
    let mut fix = Vec::new();
    let dirs: Vec<String> = loose
        .iter()
        .filter(|l| l.2)
        .map(|l| sh_quote(&l.0.to_string_lossy()))
        .collect();
    let files: Vec<String> = loose
        .iter()
        .filter(|l| !l.2)
        .map(|l| sh_quote(&l.0.to_string_lossy()))
        .collect();
    if !dirs.is_empty() {
        fix.push(format!("chmod 700 {}", dirs.join(" ")));
    }
    if !files.is_empty() {
        fix.push(format!("chmod 600 {}", files.join(" ")));
    }
    Check::fail(
        name,
        format!("{what} readable by other users: {}", listed.join(", ")),
        fix.join(" && "),
    )
}

/// The session registry is readable and has no entries for processes that are gone.
pub(super) fn registry(shown: &str, loaded: Result<(usize, Vec<String>), String>) -> Check {
    const NAME: &str = "registry";
    match loaded {
        Err(why) => Check::fail(
            NAME,
            format!("{shown} is unusable: {why}"),
            format!("move it aside (names are learned again): mv {shown} {shown}.bad"),
        ),
        Ok((total, dead)) if dead.is_empty() => Check::ok(
            NAME,
            format!("{shown}: {total} session(s), none for a dead process"),
        ),
        Ok((_, dead)) => Check::warn(
            NAME,
            format!(
                "{shown}: {} session(s) marked running whose process is gone: {}",
                dead.len(),
                dead.join(", ")
            ),
            "claude-relay sessions   (lists them and prunes the dead ones)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn exists(cmd: &str) -> Result<PathBuf, String> {
        if cmd.contains("gone") {
            Err("which does not exist".into())
        } else if cmd.starts_with('/') {
            Ok(PathBuf::from(cmd))
        } else {
            Ok(PathBuf::from("/bin").join(cmd))
        }
    }

    fn found(v: Result<&str, &str>) -> Found {
        Found {
            path: "/usr/local/bin/claude-relay".into(),
            version: v.map(String::from).map_err(String::from),
        }
    }

    #[test]
    fn binary_on_path() {
        let exe = Path::new("/src/target/debug/claude-relay");
        let c = path_binary(None, "0.1.0", exe);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("/src/target/debug"));
        assert_eq!(
            path_binary(Some(&found(Ok("0.1.0"))), "0.1.0", exe).status,
            Status::Ok
        );
        assert_eq!(
            path_binary(Some(&found(Ok("0.0.9"))), "0.1.0", exe).status,
            Status::Warn
        );
        assert_eq!(
            path_binary(Some(&found(Err("exit 1"))), "0.1.0", exe).status,
            Status::Fail
        );
    }

    #[test]
    fn hub_verdicts() {
        let answered = |v: Option<&str>| Ping::Answered {
            version: v.map(String::from),
        };
        assert_eq!(
            hub("ws://h", "default", &answered(Some("0.1.0")), "0.1.0").status,
            Status::Ok
        );
        let old = hub("ws://h", "default", &answered(Some("0.0.1")), "0.1.0");
        assert_eq!(old.status, Status::Fail);
        assert!(old.detail.contains("0.0.1"), "{old:?}");
        assert_eq!(
            hub("ws://h", "d", &answered(None), "0.1.0").status,
            Status::Warn
        );
        let down = hub("ws://h", "d", &Ping::Unreachable("refused".into()), "0.1.0");
        assert!(down.fix.unwrap().contains("service install"));
        let token = hub("ws://h", "d", &Ping::Token("401".into()), "0.1.0");
        assert!(token.fix.unwrap().contains("RELAY_TOKEN_FILE"));
    }

    #[test]
    fn finds_our_entries_only() {
        let state = json!({
            "mcpServers": {
                "claude-relay": {"type": "stdio", "command": "claude-relay", "args": ["mcp"],
                                 "env": {"RELAY_URL": "ws://127.0.0.1:4000"}},
                "other": {"command": "node", "args": ["server.js"]},
                "hub-by-mistake": {"command": "claude-relay", "args": ["hub"]}
            },
            "projects": {"/src/app": {"mcpServers": {"relay": {"command": "/opt/claude-relay", "args": ["mcp"]}}}}
        });
        let e = claude_entries(&state);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].env["RELAY_URL"], "ws://127.0.0.1:4000");
        assert_eq!(e[1].name, "relay (project /src/app)");
        let codex: toml::Table = r#"
            [mcp_servers.claude-relay]
            command = "claude-relay"
            args = ["mcp"]
            env = { RELAY_CLIENT_ID = "CODEX" }
            [mcp_servers.x]
            command = "x"
        "#
        .parse()
        .unwrap();
        let e = codex_entries(&codex);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].env["RELAY_CLIENT_ID"], "CODEX");
    }

    #[test]
    fn claude_mcp_verdicts() {
        let entry = |cmd: &str| McpEntry {
            name: "claude-relay".into(),
            command: cmd.into(),
            env: BTreeMap::new(),
        };
        let shown = "~/.claude.json";
        let none = claude_mcp(&Config::Parsed(vec![]), shown, None, &exists);
        assert_eq!(none.status, Status::Fail);
        assert!(
            none.fix
                .unwrap()
                .starts_with("claude mcp add --scope user claude-relay")
        );
        assert_eq!(
            claude_mcp(&Config::Missing, shown, None, &exists).status,
            Status::Fail
        );
        let good = claude_mcp(
            &Config::Parsed(vec![entry("claude-relay")]),
            shown,
            None,
            &exists,
        );
        assert_eq!(good.status, Status::Ok, "{good:?}");
        let gone = claude_mcp(
            &Config::Parsed(vec![entry("/old/gone/claude-relay")]),
            shown,
            None,
            &exists,
        );
        assert_eq!(gone.status, Status::Fail);
        assert!(gone.detail.contains("/old/gone/claude-relay"));
        let plugin = Some("claude-relay@claude-relay");
        assert_eq!(
            claude_mcp(&Config::Missing, shown, plugin, &exists).status,
            Status::Ok
        );
        let both = claude_mcp(
            &Config::Parsed(vec![entry("claude-relay")]),
            shown,
            plugin,
            &exists,
        );
        assert_eq!(both.status, Status::Warn);
        let broken = claude_mcp(&Config::Broken("EOF".into()), shown, plugin, &exists);
        assert_eq!(broken.status, Status::Fail);
    }

    #[test]
    fn other_agents_are_optional() {
        let c = other_mcp(
            "codex-mcp",
            "Codex",
            &Config::Missing,
            "~/.codex/config.toml",
            &exists,
            "add",
        );
        assert_eq!(c.status, Status::Skip);
        let c = other_mcp(
            "codex-mcp",
            "Codex",
            &Config::Parsed(vec![]),
            "~/.codex/config.toml",
            &exists,
            "add",
        );
        assert_eq!(c.status, Status::Warn);
    }

    #[test]
    fn stop_hook_verdicts() {
        let shown = "~/.claude/settings.json";
        let with = |command: &str| {
            let mut s = json!({});
            let entry = hooks_cmd::our_entry(command);
            s["hooks"] = json!({"Stop": [{"matcher": "", "hooks": [entry]}]});
            Config::Parsed(s)
        };
        assert_eq!(
            stop_hook(&with("/usr/bin/claude-relay wait"), shown, None, &exists).status,
            Status::Ok
        );
        let gone = stop_hook(&with("/gone/claude-relay wait"), shown, None, &exists);
        assert_eq!(gone.status, Status::Fail);
        assert!(gone.fix.unwrap().starts_with("claude-relay hooks install"));
        let missing = stop_hook(
            &Config::Parsed(json!({"model": "opus"})),
            shown,
            None,
            &exists,
        );
        assert_eq!(missing.status, Status::Fail);
        assert_eq!(
            stop_hook(&Config::Missing, shown, Some("claude-relay@m"), &exists).status,
            Status::Ok
        );
        let sync = Config::Parsed(json!({"hooks": {"Stop": [{"matcher": "", "hooks": [
            {"type": "command", "command": "claude-relay wait"}]}]}}));
        assert_eq!(stop_hook(&sync, shown, None, &exists).status, Status::Warn);
    }

    #[test]
    fn channels_hint() {
        let claude = |v: &str| Found {
            path: "/bin/claude".into(),
            version: Ok(v.into()),
        };
        let new = channels(
            Some(&claude("2.1.197 (Claude Code)")),
            "server:claude-relay",
        );
        assert_eq!(new.status, Status::Ok);
        assert!(
            new.detail
                .contains("--dangerously-load-development-channels server:claude-relay")
        );
        assert_eq!(
            channels(Some(&claude("2.1.79 (Claude Code)")), "s").status,
            Status::Warn
        );
        assert_eq!(channels(None, "s").status, Status::Skip);
    }

    #[test]
    fn secrets_must_be_private() {
        let f = |p: &str, mode: u32, dir: bool| (PathBuf::from(p), mode, dir);
        let ok = private_files(
            "owner-secrets",
            "owner secrets",
            &Ok(vec![f("/o", 0o700, true), f("/o/CC-1", 0o600, false)]),
        );
        assert_eq!(ok.status, Status::Ok);
        let bad = private_files(
            "owner-secrets",
            "owner secrets",
            &Ok(vec![f("/o", 0o755, true), f("/o/CC 1", 0o644, false)]),
        );
        assert_eq!(bad.status, Status::Fail);
        assert_eq!(bad.fix.unwrap(), "chmod 700 /o && chmod 600 '/o/CC 1'");
        assert_eq!(
            private_files("token-file", "a token file", &Ok(vec![])).status,
            Status::Skip
        );
    }

    #[test]
    fn registry_verdicts() {
        assert_eq!(registry("r", Ok((3, vec![]))).status, Status::Ok);
        let dead = registry("r", Ok((3, vec!["CC-1".into()])));
        assert_eq!(dead.status, Status::Warn);
        assert!(dead.detail.contains("CC-1"));
        assert_eq!(registry("r", Err("bad".into())).status, Status::Fail);
    }
}
