//! `claude-relay mcp` (scaffold: replaced by the real implementation).

use std::process::ExitCode;

/// Arguments of `claude-relay mcp`.
#[derive(Debug, clap::Args)]
pub struct McpArgs {}

/// Runs `claude-relay mcp`.
pub fn run(_args: McpArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
