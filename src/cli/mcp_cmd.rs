//! `claude-relay mcp`: the stdio MCP bridge an agent starts from its MCP config.
//!
//! stdout is the MCP channel, so nothing here prints to it; logs go to stderr (default level
//! `warn`, see `--log`). The bridge runs on its own small runtime; see `mcp_bridge::lifecycle`
//! for how it ends.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;

/// Arguments of `claude-relay mcp`.
#[derive(Debug, clap::Args)]
pub(crate) struct McpArgs {
    /// Session id to register as. `CLAUDE_RELAY_SESSION_ID` (set by `claude-session`) wins
    /// over it; without either, `RELAY_CLIENT_ID` (auto-numbered) or `<HOSTNAME>-<pid>`.
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Hub URL.
    #[arg(long, env = "RELAY_URL", value_name = "URL", default_value = relay_proto::wire::DEFAULT_URL)]
    pub relay_url: String,
    /// Do not push new mail into the session as Claude Code channel events
    /// (`RELAY_CHANNEL=off` does the same). The tools work either way.
    #[arg(long)]
    pub no_channel: bool,
    /// File holding the hub token (first line). Otherwise `RELAY_TOKEN`, then
    /// `RELAY_TOKEN_FILE`.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// PEM CA certificate to trust for a `wss://` hub (instead of the system roots).
    /// Otherwise `RELAY_CA_CERT`.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
}

/// Runs `claude-relay mcp` until stdin closes (or the agent goes away).
pub(super) fn run(args: McpArgs) -> anyhow::Result<ExitCode> {
    // One thread: a bridge serves one agent; every blocking step (registry file, owner
    // secret) goes through spawn_blocking. Measured: ~0.5 MiB less RSS than two workers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let code = runtime.block_on(mcp_bridge::run(mcp_bridge::Options {
        client_id: args.client_id,
        relay_url: Some(args.relay_url),
        no_channel: args.no_channel,
        token_file: args.token_file,
        ca_cert: args.ca_cert,
    }));
    // Do not wait for a blocking stdin read that may never return.
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
