//! `claude-relay service plist|systemd`: prints a service definition that runs this very
//! binary as the hub — a launchd LaunchAgent on macOS, a systemd user unit on Linux — so
//! the hub comes back after crashes and logins without the user writing paths by hand.
//!
//! Printing only; installing is a separate, later step (`service install`). The files in
//! `examples/` are the same definitions as commented templates.

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use sessions::{paths, wire::DEFAULT_PORT};

/// The launchd label (and plist file name) of the hub agent.
pub const HUB_LABEL: &str = "com.claude-relay.hub";

/// Arguments of `claude-relay service`.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    #[command(subcommand)]
    kind: ServiceKind,
}

/// Which service manager to print a definition for.
#[derive(Debug, clap::Subcommand)]
enum ServiceKind {
    /// A launchd LaunchAgent plist for the hub (macOS). Save it as
    /// ~/Library/LaunchAgents/com.claude-relay.hub.plist.
    Plist(HubOpts),
    /// A systemd --user unit for the hub (Linux). Save it as
    /// ~/.config/systemd/user/claude-relay-hub.service.
    Systemd(HubOpts),
}

/// Where the service's hub listens.
#[derive(Debug, clap::Args)]
struct HubOpts {
    /// Port for the hub (RELAY_PORT).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Address for the hub (RELAY_HOST). Keep loopback unless the hub has auth configured.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
}

/// Runs `claude-relay service`.
pub fn run(args: ServiceArgs) -> anyhow::Result<ExitCode> {
    let install = Install::current();
    match args.kind {
        ServiceKind::Plist(o) => print!("{}", plist(&install, &o.host.to_string(), o.port)),
        ServiceKind::Systemd(o) => print!("{}", systemd(&install, &o.host.to_string(), o.port)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The facts of this install that go into a service definition.
struct Install {
    /// Absolute path of this binary.
    exe: String,
    /// `~/.claude-relay` (or `CLAUDE_RELAY_HOME`).
    home: PathBuf,
    /// Set when `CLAUDE_RELAY_HOME` is, so the service uses the same home.
    home_env: Option<String>,
}

impl Install {
    fn current() -> Self {
        let exe = std::env::current_exe()
            .ok()
            .and_then(|p| p.into_os_string().into_string().ok())
            .unwrap_or_else(|| "/usr/local/bin/claude-relay".into());
        let home_env = std::env::var(paths::HOME_ENV)
            .ok()
            .filter(|v| !v.is_empty());
        Self {
            exe,
            home: paths::relay_home(),
            home_env,
        }
    }
}

fn plist(i: &Install, host: &str, port: u16) -> String {
    let logs = i.home.join("logs");
    let out = logs.join("hub.out.log");
    let err = logs.join("hub.err.log");
    let home_env = i
        .home_env
        .as_deref()
        .map(|h| {
            format!(
                "\n        <key>{}</key>\n        <string>{}</string>",
                paths::HOME_ENV,
                xml(h)
            )
        })
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!--
  claude-relay hub as a launchd LaunchAgent (made by `claude-relay service plist`).
  Load it:
    mkdir -p "{logs_dir}"
    claude-relay service plist > ~/Library/LaunchAgents/{HUB_LABEL}.plist
    launchctl bootstrap gui/$(id -u) ~/Library/LaunchAgents/{HUB_LABEL}.plist
  Restart: launchctl kickstart -k gui/$(id -u)/{HUB_LABEL}
  Remove:  launchctl bootout gui/$(id -u)/{HUB_LABEL}
-->
<plist version="1.0">
<dict>
    <key>Label</key>
    <string>{HUB_LABEL}</string>
    <key>ProgramArguments</key>
    <array>
        <string>{exe}</string>
        <string>hub</string>
    </array>
    <key>EnvironmentVariables</key>
    <dict>
        <key>RELAY_HOST</key>
        <string>{host}</string>
        <key>RELAY_PORT</key>
        <string>{port}</string>{home_env}
    </dict>
    <key>RunAtLoad</key>
    <true/>
    <key>KeepAlive</key>
    <true/>
    <key>ThrottleInterval</key>
    <integer>5</integer>
    <key>StandardOutPath</key>
    <string>{out}</string>
    <key>StandardErrorPath</key>
    <string>{err}</string>
</dict>
</plist>
"#,
        logs_dir = comment_safe(&logs.to_string_lossy()),
        exe = xml(&i.exe),
        host = xml(host),
        out = xml(&out.to_string_lossy()),
        err = xml(&err.to_string_lossy()),
    )
}

fn systemd(i: &Install, host: &str, port: u16) -> String {
    let home_env = i
        .home_env
        .as_deref()
        .map(|h| {
            format!(
                "Environment={}\n",
                systemd_quote(&format!("{}={h}", paths::HOME_ENV))
            )
        })
        .unwrap_or_default();
    format!(
        r#"# claude-relay hub as a systemd user service (made by `claude-relay service systemd`).
# Load it:
#   mkdir -p ~/.config/systemd/user
#   claude-relay service systemd > ~/.config/systemd/user/claude-relay-hub.service
#   systemctl --user daemon-reload
#   systemctl --user enable --now claude-relay-hub.service
# Logs: journalctl --user -u claude-relay-hub -f
# To keep it running while you are logged out: loginctl enable-linger $USER
[Unit]
Description=claude-relay hub (message hub for AI coding agents)
After=network.target

[Service]
Type=simple
ExecStart={exe} hub
Environment={host_env}
Environment={port_env}
{home_env}Restart=always
RestartSec=2

[Install]
WantedBy=default.target
"#,
        // ExecStart expands `$VAR`; a literal `$` is written `$$`.
        exe = systemd_quote(&i.exe.replace('$', "$$")),
        host_env = systemd_quote(&format!("RELAY_HOST={host}")),
        port_env = systemd_quote(&format!("RELAY_PORT={port}")),
    )
}

/// A path for the XML comment (`--` may not appear in one).
fn comment_safe(path: &str) -> String {
    if path.contains("--") {
        "<the directory of StandardOutPath below>".into()
    } else {
        path.to_string()
    }
}

/// Escapes text for an XML element.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Quotes a word for a systemd unit line: `%` doubles (specifier escape); words with
/// spaces, quotes or backslashes are double-quoted with C-style escapes.
fn systemd_quote(s: &str) -> String {
    let s = s.replace('%', "%%");
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '\'')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install() -> Install {
        Install {
            exe: "/Users/me/my tools/claude-relay".into(),
            home: PathBuf::from("/Users/me/.claude-relay"),
            home_env: None,
        }
    }

    #[test]
    fn plist_has_the_essentials() {
        let p = plist(&install(), "127.0.0.1", 9999);
        for want in [
            "<string>com.claude-relay.hub</string>",
            "<string>/Users/me/my tools/claude-relay</string>\n        <string>hub</string>",
            "<key>RELAY_HOST</key>\n        <string>127.0.0.1</string>",
            "<key>RELAY_PORT</key>\n        <string>9999</string>",
            "<key>KeepAlive</key>\n    <true/>",
            "<key>RunAtLoad</key>\n    <true/>",
            "<string>/Users/me/.claude-relay/logs/hub.err.log</string>",
            "launchctl bootstrap gui/$(id -u)",
        ] {
            assert!(p.contains(want), "missing {want:?} in\n{p}");
        }
        assert!(!p.contains("CLAUDE_RELAY_HOME"));
        let with_home = Install {
            home_env: Some("/x&y".into()),
            ..install()
        };
        assert!(plist(&with_home, "127.0.0.1", 1).contains("<string>/x&amp;y</string>"));
    }

    #[test]
    fn systemd_unit_quotes_paths() {
        let u = systemd(&install(), "127.0.0.1", 4000);
        assert!(
            u.contains("ExecStart=\"/Users/me/my tools/claude-relay\" hub\n"),
            "{u}"
        );
        assert!(u.contains("Environment=RELAY_PORT=4000\n"), "{u}");
        assert!(u.contains("Restart=always"));
        assert!(u.contains("systemctl --user enable --now claude-relay-hub.service"));
        assert_eq!(systemd_quote("50%"), "50%%");
    }
}
