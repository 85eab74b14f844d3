//! Test harness shared by the integration tests: real `claude-relay` processes on
//! 127.0.0.1 port 0, real temp dirs, and waits that are always bounded by a timeout.
//!
//! Each test binary includes this with `mod common;` and uses what it needs.
#![allow(dead_code)]

pub mod bridge;
pub mod channel;
pub mod chromium;
pub mod http;
pub mod hub;
pub mod impair;
pub mod ws;

/// Removes every variable that configures claude-relay (or Claude Code's session) from a
/// child's environment, so a developer's own settings (a `RELAY_TOKEN_FILE`, a
/// `CLAUDE_CODE_SESSION_ID` when the tests run inside Claude Code) never leak into a test.
pub fn clean_env(cmd: &mut tokio::process::Command) -> &mut tokio::process::Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("RELAY_")
            || k.starts_with("CLAUDE_RELAY_")
            || k == "CLAUDE_CODE_SESSION_ID"
            || k == "RUST_LOG"
        {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd
}
