//! `claude-relay service` (scaffold: replaced by the real implementation).

use std::process::ExitCode;

/// Arguments of `claude-relay service`.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {}

/// Runs `claude-relay service`.
pub fn run(_args: ServiceArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
