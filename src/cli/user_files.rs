//! Where the files of the programs we plug into live, under the user's home directory:
//! Claude Code's `~/.claude.json` and `~/.claude/settings.json`, Codex's
//! `~/.codex/config.toml`, Gemini CLI's `~/.gemini/settings.json`, and the service managers'
//! directories. One place, so `hooks`, `doctor` and `service` agree on every path.
//!
//! `HOME` wins over the password database, so tests and unusual setups move everything at
//! once by setting it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The user's home directory, and the paths under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Home {
    dir: PathBuf,
}

impl Home {
    /// `$HOME`, else the system's idea of the home directory.
    pub(crate) fn current() -> anyhow::Result<Self> {
        let dir = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(std::env::home_dir)
            .context("no home directory (HOME is not set)")?;
        Ok(Self { dir })
    }

    /// A home directory at `dir` (tests).
    #[cfg(test)]
    pub(crate) fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Claude Code's user state, where `claude mcp add --scope user` writes `mcpServers`.
    pub(crate) fn claude_json(&self) -> PathBuf {
        self.dir.join(".claude.json")
    }

    /// Claude Code's user settings: hooks, enabled plugins.
    pub(crate) fn claude_settings(&self) -> PathBuf {
        self.dir.join(".claude").join("settings.json")
    }

    /// Codex's configuration (`[mcp_servers.NAME]`).
    pub(crate) fn codex_config(&self) -> PathBuf {
        self.dir.join(".codex").join("config.toml")
    }

    /// Gemini CLI's settings (`mcpServers`, the same shape as Claude Code's).
    pub(crate) fn gemini_settings(&self) -> PathBuf {
        self.dir.join(".gemini").join("settings.json")
    }

    /// Where launchd looks for a user's agents (macOS).
    pub(crate) fn launch_agents(&self) -> PathBuf {
        self.dir.join("Library").join("LaunchAgents")
    }

    /// Where the launchd service's hub writes its stdout and stderr (macOS convention).
    pub(crate) fn launchd_logs(&self) -> PathBuf {
        self.dir.join("Library").join("Logs").join("claude-relay")
    }

    /// Where systemd looks for a user's units: `$XDG_CONFIG_HOME/systemd/user`, else
    /// `~/.config/systemd/user` (what the user manager itself reads).
    pub(crate) fn systemd_user_units(&self) -> PathBuf {
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| self.dir.join(".config"));
        config.join("systemd").join("user")
    }

    /// `p` as `~/…` when it is under this home, for messages.
    pub(crate) fn show(&self, p: &Path) -> String {
        match p.strip_prefix(&self.dir) {
            Ok(rest) if !self.dir.as_os_str().is_empty() => format!("~/{}", rest.display()),
            _ => p.display().to_string(),
        }
    }
}

/// Replaces `path` (a file of the user's: settings, a service unit) atomically, keeping its
/// permissions; creates its directory if needed (`relay_local::files`).
pub(crate) fn write_user_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("the path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    relay_local::files::write_atomic(path, bytes, relay_local::files::Mode::KeepOr644)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_display() {
        let h = Home::at("/home/me");
        assert_eq!(h.claude_json(), Path::new("/home/me/.claude.json"));
        assert_eq!(h.show(&h.claude_settings()), "~/.claude/settings.json");
        assert_eq!(h.show(Path::new("/etc/x")), "/etc/x");
        assert_eq!(
            h.launchd_logs(),
            Path::new("/home/me/Library/Logs/claude-relay")
        );
    }
}
