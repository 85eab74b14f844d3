//! `claude-relay doctor [--json]`: checks the whole set-up on this machine — the binary on
//! PATH, the hub (reachable with the configured URL, token and CA, and running the same
//! version), the MCP entries of Claude Code, Codex and Gemini CLI, the Stop hook, channels,
//! the modes of secret files, and the session registry — and says how to fix each problem.
//! Exit 1 when any check fails.
//!
//! This module gathers the facts (reads files, runs `--version`, pings the hub); the verdicts
//! are pure functions in [`checks`]. Doctor changes nothing, with one exception it inherits
//! from the registry: a corrupt registry file is moved aside when read (docs/REGISTRY.md).
//!
//! The hub is asked the way a bridge would ask it: the URL from `--relay-url` / `RELAY_URL`,
//! else the claude-relay entry in `~/.claude.json`, else the default; the token and CA from
//! the flags, the environment, else that entry's `env`. The token is never printed.

mod checks;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use mcp_bridge::connect::{ClientAuth, TokenSource};
use serde_json::{Value, json};
use sessions::{EntryState, Registry, wire::DEFAULT_URL};

use super::{external, hub_ping, user_files::Home};
use checks::{Check, Config, Found, McpEntry, Status};

/// How long a `--version` call may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest configuration file read (`~/.claude.json` keeps per-project history and grows).
const MAX_CONFIG: u64 = 64 << 20;

/// Arguments of `claude-relay doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Machine-readable output: a JSON array of {check, ok, status, detail, fix}.
    #[arg(long)]
    json: bool,
    /// The hub's URL [default: RELAY_URL, else the claude-relay entry in ~/.claude.json, else
    /// ws://127.0.0.1:9999].
    #[arg(long, value_name = "URL")]
    relay_url: Option<String>,
    /// File whose first line is the hub token [default: RELAY_TOKEN, RELAY_TOKEN_FILE, else
    /// the claude-relay entry's env].
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// PEM certificate of the CA of a wss:// hub [default: RELAY_CA_CERT, else the
    /// claude-relay entry's env, else the system's roots].
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

/// Runs `claude-relay doctor`.
pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let home = Home::current()?;
    let report = examine(&args, &home)?;
    if args.json {
        let rows: Vec<Value> = report
            .iter()
            .map(|c| {
                json!({
                    "check": c.name,
                    "ok": c.status != Status::Fail,
                    "status": c.status.word(),
                    "detail": c.detail,
                    "fix": c.fix,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", render(&report));
    }
    let failed = report.iter().any(|c| c.status == Status::Fail);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The human-readable report: one line per check, the fix indented below it.
fn render(report: &[Check]) -> String {
    let width = report.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in report {
        out.push_str(&format!(
            "{} {:width$}  {}\n",
            c.status.mark(),
            c.name,
            c.detail
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("  {:width$}  fix: {fix}\n", ""));
        }
    }
    let failed = report.iter().filter(|c| c.status == Status::Fail).count();
    let warned = report.iter().filter(|c| c.status == Status::Warn).count();
    out.push_str(&match (failed, warned) {
        (0, 0) => "All good.\n".to_string(),
        (0, w) => format!("No problems; {w} hint(s) above.\n"),
        (f, _) => format!("{f} problem(s) to fix.\n"),
    });
    out
}

/// Gathers the facts and runs every check, in a stable order.
fn examine(args: &DoctorArgs, home: &Home) -> anyhow::Result<Vec<Check>> {
    let own_version = env!("CARGO_PKG_VERSION");
    let own_exe = std::env::current_exe().context("cannot find the path of this binary")?;
    let on_path = which("claude-relay").map(|path| {
        let version = version_of(&path).map(|v| {
            v.strip_prefix("claude-relay ")
                .unwrap_or(&v)
                .trim()
                .to_string()
        });
        Found { path, version }
    });
    let resolve = |command: &str| resolve(command);

    // Claude Code: its MCP entries, its settings (hook, plugin).
    let claude_json = home.claude_json();
    let claude_state = read_json(&claude_json);
    let claude_entries = map_config(&claude_state, checks::claude_entries);
    let settings_path = home.claude_settings();
    let settings = read_json(&settings_path);
    let plugin = match &settings {
        Config::Parsed(s) => checks::enabled_plugin(s),
        _ => None,
    };
    let first_entry = match &claude_entries {
        Config::Parsed(e) => e.first().cloned(),
        _ => None,
    };

    // The hub, asked as a bridge would.
    let entry_env = first_entry
        .as_ref()
        .map(|e| e.env.clone())
        .unwrap_or_default();
    let env = |k: &str| {
        std::env::var(k)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .or_else(|| entry_env.get(k).cloned())
    };
    let (url, origin) = match (
        &args.relay_url,
        std::env::var("RELAY_URL").ok().filter(|v| !v.is_empty()),
    ) {
        (Some(u), _) => (u.clone(), "the URL given with --relay-url".to_string()),
        (None, Some(u)) => (u, "the URL in RELAY_URL".to_string()),
        (None, None) => match (&first_entry, entry_env.get("RELAY_URL")) {
            (Some(e), Some(u)) => (
                u.clone(),
                format!(
                    "the URL of the {} entry in {}",
                    e.name,
                    home.show(&claude_json)
                ),
            ),
            _ => (DEFAULT_URL.to_string(), "the default URL".to_string()),
        },
    };
    let auth = ClientAuth::resolve(args.token_file.as_deref(), args.ca_cert.as_deref(), env);
    let ping = hub_ping::ping(&url, &auth)?;
    let expected = on_path
        .as_ref()
        .and_then(|f| f.version.clone().ok())
        .unwrap_or_else(|| own_version.to_string());

    // The other agents.
    let codex_path = home.codex_config();
    let codex = map_config(&read_toml(&codex_path), checks::codex_entries);
    let gemini_path = home.gemini_settings();
    let gemini = map_config(&read_json(&gemini_path), |v| {
        checks::json_entries(v.get("mcpServers"), "")
    });

    let claude = which("claude").map(|path| {
        let version = version_of(&path);
        Found { path, version }
    });
    let channel_server = match (&plugin, &first_entry) {
        (Some(p), _) => format!("plugin:{p}"),
        (None, Some(e)) => format!("server:{}", e.name),
        (None, None) => "server:claude-relay".to_string(),
    };

    let owners = sessions::paths::owners_dir();
    let token_file = match &auth.token {
        TokenSource::File(p) => modes(p, false).and_then(|m| {
            m.map(|m| vec![m])
                .ok_or_else(|| format!("{} does not exist", p.display()))
        }),
        _ => Ok(Vec::new()),
    };
    let registry = Registry::open_default();

    Ok(vec![
        checks::path_binary(on_path.as_ref(), own_version, &own_exe),
        checks::hub(&url, &origin, &ping, &expected),
        checks::claude_mcp(
            &claude_entries,
            &home.show(&claude_json),
            plugin.as_deref(),
            &resolve,
        ),
        checks::other_mcp(
            "codex-mcp",
            "Codex",
            &codex,
            &home.show(&codex_path),
            &resolve,
            "add to ~/.codex/config.toml: [mcp_servers.claude-relay] command = \"claude-relay\" \
             args = [\"mcp\"] env = { RELAY_CLIENT_ID = \"CODEX\" }",
        ),
        checks::other_mcp(
            "gemini-mcp",
            "Gemini CLI",
            &gemini,
            &home.show(&gemini_path),
            &resolve,
            "add to ~/.gemini/settings.json: {\"mcpServers\": {\"claude-relay\": {\"command\": \
             \"claude-relay\", \"args\": [\"mcp\"]}}}",
        ),
        checks::stop_hook(
            &settings,
            &home.show(&settings_path),
            plugin.as_deref(),
            &resolve,
        ),
        checks::channels(claude.as_ref(), &channel_server),
        checks::private_files("owner-secrets", "owner secrets", &owner_modes(&owners)),
        checks::private_files("token-file", "hub token file", &token_file),
        checks::registry(&home.show(registry.path()), registry_state(&registry)),
    ])
}

/// The first executable `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What a command in an MCP entry or hook runs: a path (must exist and be executable) or a
/// name looked up on PATH.
fn resolve(command: &str) -> Result<PathBuf, String> {
    let command = command.trim();
    if command.contains('/') {
        let p = PathBuf::from(command);
        if is_executable(&p) {
            Ok(p)
        } else if p.exists() {
            Err("which is not an executable file".into())
        } else {
            Err("which does not exist".into())
        }
    } else {
        which(command).ok_or_else(|| format!("which is not on PATH ({command})"))
    }
}

/// The first line `PROGRAM --version` prints.
fn version_of(program: &Path) -> Result<String, String> {
    let argv = [program.to_string_lossy().into_owned(), "--version".into()];
    match external::run(&argv, VERSION_TIMEOUT) {
        Ok(o) if o.success() => o
            .stdout
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(String::from)
            .ok_or_else(|| "it printed nothing".into()),
        Ok(o) => Err(format!("exit {:?}: {}", o.code, o.first_line())),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads a file of at most [`MAX_CONFIG`] bytes.
fn read_bounded(path: &Path) -> Config<String> {
    use std::io::Read as _;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Config::Missing,
        Err(e) => return Config::Broken(e.to_string()),
    };
    let mut text = String::new();
    match file.take(MAX_CONFIG + 1).read_to_string(&mut text) {
        Err(e) => Config::Broken(e.to_string()),
        Ok(n) if n as u64 > MAX_CONFIG => {
            Config::Broken(format!("larger than {} MiB", MAX_CONFIG >> 20))
        }
        Ok(_) => Config::Parsed(text),
    }
}

fn read_json(path: &Path) -> Config<Value> {
    match read_bounded(path) {
        Config::Parsed(t) if t.trim().is_empty() => Config::Parsed(json!({})),
        Config::Parsed(t) => match serde_json::from_str(&t) {
            Ok(v) => Config::Parsed(v),
            Err(e) => Config::Broken(format!("not valid JSON ({e})")),
        },
        Config::Missing => Config::Missing,
        Config::Broken(e) => Config::Broken(e),
    }
}

fn read_toml(path: &Path) -> Config<toml::Table> {
    match read_bounded(path) {
        Config::Parsed(t) => match t.parse::<toml::Table>() {
            Ok(v) => Config::Parsed(v),
            Err(e) => Config::Broken(format!("not valid TOML ({})", e.message())),
        },
        Config::Missing => Config::Missing,
        Config::Broken(e) => Config::Broken(e),
    }
}

fn map_config<T>(c: &Config<T>, f: impl Fn(&T) -> Vec<McpEntry>) -> Config<Vec<McpEntry>> {
    match c {
        Config::Missing => Config::Missing,
        Config::Broken(e) => Config::Broken(e.clone()),
        Config::Parsed(v) => Config::Parsed(f(v)),
    }
}

/// `(path, permission bits, is a directory)` of a file, `None` when it does not exist.
fn modes(p: &Path, dir: bool) -> Result<Option<(PathBuf, u32, bool)>, String> {
    match std::fs::metadata(p) {
        Ok(m) => Ok(Some((p.to_path_buf(), m.permissions().mode(), dir))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// The owners directory and every secret file in it (temp files of an interrupted save,
/// `.NAME.….tmp`, are skipped).
fn owner_modes(dir: &Path) -> Result<Vec<(PathBuf, u32, bool)>, String> {
    let Some(d) = modes(dir, true)? else {
        return Ok(Vec::new());
    };
    let mut found = vec![d];
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    files.sort();
    for f in files {
        found.extend(modes(&f, false)?);
    }
    Ok(found)
}

/// How many sessions the registry holds, and the names marked running whose process is gone.
fn registry_state(registry: &Registry) -> Result<(usize, Vec<String>), String> {
    let file = registry.load().map_err(|e| e.to_string())?;
    let dead = file
        .sessions
        .iter()
        .filter(|(_, e)| e.state == EntryState::Running && !e.is_live())
        .map(|(n, _)| n.clone())
        .collect();
    Ok((file.sessions.len(), dead))
}
