//! Where claude-relay keeps its files: `~/.claude-relay` unless `CLAUDE_RELAY_HOME` says
//! otherwise. One function per location so every binary and test agrees.

use std::path::PathBuf;

/// Environment variable that moves `~/.claude-relay`.
pub const HOME_ENV: &str = "CLAUDE_RELAY_HOME";

/// The claude-relay home directory: `$CLAUDE_RELAY_HOME`, else `$HOME/.claude-relay`
/// (falling back to `./.claude-relay` when no home directory is known).
pub fn relay_home() -> PathBuf {
    if let Some(dir) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    std::env::home_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".claude-relay")
}

/// The session registry file.
pub fn registry_path() -> PathBuf {
    relay_home().join("sessions").join("registry.json")
}

/// The hub's default data directory (its store lives here).
pub fn hub_data_dir() -> PathBuf {
    relay_home().join("hub")
}

/// Where owner secrets for claimed names are kept (mode 0600 files, one per name).
pub fn owners_dir() -> PathBuf {
    relay_home().join("owners")
}

/// Lock files for single-instance helpers (e.g. one `claude-relay wait` per session).
pub fn locks_dir() -> PathBuf {
    relay_home().join("locks")
}

/// Per-session offline outboxes of the MCP bridge (`outbox/NAME/`, mode 0700): messages
/// queued while the hub was unreachable, waiting to be sent.
pub fn outbox_dir() -> PathBuf {
    relay_home().join("outbox")
}
