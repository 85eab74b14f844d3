//! `claude-relay init` (scaffold: replaced by the real implementation).

use std::process::ExitCode;

/// Arguments of `claude-relay init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {}

/// Runs `claude-relay init`.
pub fn run(_args: InitArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
