//! Command-line surface of `claude-relay`: the clap definitions and the dispatch to each
//! subcommand's module (one file per subcommand).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod approval_hook_cmd;
mod approvals_cmd;
mod doctor_cmd;
mod external;
mod hooks_cmd;
mod hub_cmd;
mod hub_ping;
mod init_cmd;
mod mcp_cmd;
mod operator_http;
mod search_cmd;
mod service_cmd;
mod sessions_cmd;
mod tail_cmd;
mod tasks_cmd;
mod user_files;
mod wait_cmd;

/// Message hub and MCP bridge that lets AI coding agents talk to each other.
#[derive(Debug, Parser)]
#[command(name = "claude-relay", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Log filter for stderr (e.g. `info`, `debug`, `hub=trace`); also `RUST_LOG`.
    #[arg(long, global = true, env = "RELAY_LOG")]
    pub log: Option<String>,
    /// Log line format on stderr: `text` for people, `json` (one object per line, with the
    /// connection span's peer and session) for log shippers.
    #[arg(
        long,
        global = true,
        env = "RELAY_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the hub: the WebSocket server that routes and stores messages.
    Hub(hub_cmd::HubArgs),
    /// Run the MCP bridge on stdio (what an agent's MCP config starts).
    Mcp(mcp_cmd::McpArgs),
    /// Print shell functions: eval "$(claude-relay init zsh)".
    Init(init_cmd::InitArgs),
    /// List sessions (name, pid, alive, connected, cwd), or name one.
    Sessions(sessions_cmd::SessionsArgs),
    /// Run the hub as a service (launchd on macOS, systemd --user on Linux): install,
    /// uninstall, status.
    Service(service_cmd::ServiceArgs),
    /// Block until a session has unread relay mail; exit 2 with a one-line notice (the
    /// Claude Code Stop-hook doorbell), 0 on timeout.
    Wait(wait_cmd::WaitArgs),
    /// Install or remove the `claude-relay wait` Stop hook (and, with --approvals, the
    /// approval hook) in ~/.claude/settings.json.
    Hooks(hooks_cmd::HooksArgs),
    /// The PermissionRequest hook: file the permission prompt on stdin in the hub's
    /// approval inbox and print a human's verdict; print nothing on timeout or any problem.
    ApprovalHook(approval_hook_cmd::ApprovalHookArgs),
    /// The approval inbox: list permission prompts (--json, --watch), or answer one
    /// (`allow ID` / `deny ID`) — only from an interactive terminal.
    Approvals(approvals_cmd::ApprovalsArgs),
    /// The task board (id, state, from → holder, age, title), one task, or `checkout ID`:
    /// recreate a handed-over task's working state here.
    Tasks(tasks_cmd::TasksArgs),
    /// Search the history a session may see (its sends, mail to it, broadcasts): ranked
    /// results with id, sender, time, thread and a snippet.
    Search(search_cmd::SearchArgs),
    /// Check the set-up on this machine (binary, hub, MCP entries, hook, secrets, registry)
    /// and say how to fix each problem; exit 1 if any.
    Doctor(doctor_cmd::DoctorArgs),
    /// Follow the hub's traffic live, one line per event (time, from → to, kind, size,
    /// state); bodies only with --content. Needs the hub token (or loopback, on a hub
    /// without one).
    Tail(tail_cmd::TailArgs),
}

impl Command {
    /// The default log level of each subcommand: the hub logs its lifecycle, the rest stay
    /// quiet unless asked.
    fn default_log(&self) -> &'static str {
        match self {
            Command::Hub(_) => "info",
            Command::Mcp(_) => "warn",
            _ => "warn",
        }
    }
}

/// Sets up tracing to stderr (stdout belongs to MCP when running the bridge).
///
/// Whatever the filter asks for, no secret reaches the log: the WebSocket library prints
/// every frame and the client's upgrade request (with its `Authorization` header) at trace
/// level, so its trace events are always left out (see docs/SECURITY.md); our own frames
/// print tokens and owner secrets as `<redacted>`.
pub(crate) fn init_tracing(cli: &Cli) {
    use tracing_subscriber::{filter::filter_fn, layer::SubscriberExt, util::SubscriberInitExt};
    let filter = cli
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| cli.command.default_log().to_string());
    let no_frame_dumps =
        filter_fn(|meta| !(*meta.level() == tracing::Level::TRACE && prints_frames(meta.target())));
    let json = matches!(cli.log_format, LogFormat::Json);
    let text = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    // `span` carries the connection's fields (peer, session); one grep on
    // `"session":"CC-1"` follows a session.
    let json = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_current_span(true)
            .with_span_list(false)
    });
    tracing_subscriber::registry()
        .with(text)
        .with(json)
        .with(tracing_subscriber::EnvFilter::new(filter))
        .with(no_frame_dumps)
        .init();
}

/// Targets whose trace events print frame payloads or HTTP headers verbatim.
fn prints_frames(target: &str) -> bool {
    ["tungstenite", "tokio_tungstenite"]
        .iter()
        .any(|t| target == *t || target.starts_with(&format!("{t}::")))
}

/// Runs the chosen subcommand and returns the process exit code.
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Hub(args) => hub_cmd::run(args),
        Command::Mcp(args) => mcp_cmd::run(args),
        Command::Init(args) => init_cmd::run(args),
        Command::Sessions(args) => sessions_cmd::run(args),
        Command::Service(args) => service_cmd::run(args),
        Command::Wait(args) => wait_cmd::run(args),
        Command::Hooks(args) => hooks_cmd::run(args),
        Command::ApprovalHook(args) => approval_hook_cmd::run(args),
        Command::Approvals(args) => approvals_cmd::run(args),
        Command::Tasks(args) => tasks_cmd::run(args),
        Command::Search(args) => search_cmd::run(args),
        Command::Doctor(args) => doctor_cmd::run(args),
        Command::Tail(args) => tail_cmd::run(args),
    }
}
