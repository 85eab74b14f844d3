//! Test harness shared by the integration tests: real `claude-relay` processes on
//! 127.0.0.1 port 0 ([`hub`], [`bridge`]), a hub served inside the test's own process
//! ([`inproc`]) where the process is not the point, real temp dirs, and waits that are always
//! bounded by a timeout ([`eventually`] for conditions nothing announces).
//!
//! `tests/suite.rs` declares it once; each test file takes it with `use crate::common;`.
#![allow(dead_code)]

pub(crate) mod bridge;
pub(crate) mod channel;
pub(crate) mod chromium;
pub(crate) mod http;
pub(crate) mod hub;
pub(crate) mod impair;
pub(crate) mod inproc;
pub(crate) mod ws;

use std::time::Duration;

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(25);

/// Polls `probe` until it returns `Ok(value)` and returns the value; fails the test after
/// `limit`, naming `what` and the last `Err` the probe gave (what it saw instead). The one
/// bounded way these tests wait for a condition nothing announces; anything that sends a
/// frame or an event is waited for directly instead.
pub(crate) async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = match probe().await {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}; last seen: {last}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Removes every variable that configures claude-relay (or Claude Code's session) from a
/// child's environment, so a developer's own settings (a `RELAY_TOKEN_FILE`, a
/// `CLAUDE_CODE_SESSION_ID` when the tests run inside Claude Code) never leak into a test.
pub(crate) fn clean_env(cmd: &mut tokio::process::Command) -> &mut tokio::process::Command {
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
