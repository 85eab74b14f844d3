//! `claude-relay`: one binary for the hub, the MCP bridge and the command-line tools.
//! This file only parses arguments and dispatches to the crates; each subcommand lives in
//! its own module under `cli/`.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(&args);
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("claude-relay: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
