//! `claude-relay sessions` (scaffold: replaced by the real implementation).

use std::process::ExitCode;

/// Arguments of `claude-relay sessions`.
#[derive(Debug, clap::Args)]
pub struct SessionsArgs {}

/// Runs `claude-relay sessions`.
pub fn run(_args: SessionsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
