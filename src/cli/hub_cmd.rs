//! `claude-relay hub` (scaffold: replaced by the real implementation).

use std::process::ExitCode;

/// Arguments of `claude-relay hub`.
#[derive(Debug, clap::Args)]
pub struct HubArgs {}

/// Runs `claude-relay hub`.
pub fn run(_args: HubArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
