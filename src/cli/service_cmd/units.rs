//! The two service definitions `claude-relay service install` writes — a launchd LaunchAgent
//! plist (macOS) and a systemd user unit (Linux) — rendered from one [`HubService`], and the
//! hub's command line read back out of an installed file (`service status` pings the hub at
//! the address and with the token file the service was installed with).
//!
//! These renderers are the only source of both files; the repository keeps no templates.

use std::path::PathBuf;

/// The launchd label of the hub agent (and the plist's file name, plus `.plist`).
pub(super) const LAUNCHD_LABEL: &str = "com.claude-relay.hub";
/// The systemd user unit's file name.
pub(super) const SYSTEMD_UNIT: &str = "claude-relay-hub.service";

/// What the service runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HubService {
    /// The program and its arguments: this binary's absolute path, `hub`, then the flags.
    pub(super) argv: Vec<String>,
    /// `CLAUDE_RELAY_HOME` at install time, when set, so the service uses the same home.
    pub(super) relay_home: Option<String>,
    /// Where launchd sends the hub's stdout and stderr (`~/Library/Logs/claude-relay`).
    pub(super) log_dir: PathBuf,
}

/// The LaunchAgent: started at login (`RunAtLoad`), restarted whenever it exits
/// (`KeepAlive`, spaced by `ThrottleInterval`), logs under [`HubService::log_dir`].
pub(super) fn plist(s: &HubService) -> String {
    let args: String = s
        .argv
        .iter()
        .map(|a| format!("\n        <string>{}</string>", xml(a)))
        .collect();
    let env = s
        .relay_home
        .as_deref()
        .map(|h| {
            format!(
                "\n    <key>EnvironmentVariables</key>\n    <dict>\n        \
                 <key>{}</key>\n        <string>{}</string>\n    </dict>",
                sessions::paths::HOME_ENV,
                xml(h)
            )
        })
        .unwrap_or_default();
    let log = |name: &str| xml(&s.log_dir.join(name).to_string_lossy());
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!--
  The claude-relay hub as a launchd LaunchAgent. Written by `claude-relay service install`,
  which rewrites it; removed by `claude-relay service uninstall`; checked by
  `claude-relay service status`. Edits made here are lost on the next install.
-->
<plist version="1.0">
<dict>
    <key>Label</key>
    <string>{LAUNCHD_LABEL}</string>
    <key>ProgramArguments</key>
    <array>{args}
    </array>{env}
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
        out = log("hub.out.log"),
        err = log("hub.err.log"),
    )
}

/// The systemd user unit: started with the user's session (`WantedBy=default.target`),
/// restarted whenever it exits; stderr goes to the journal.
pub(super) fn systemd_unit(s: &HubService) -> String {
    let exec: Vec<String> = s
        .argv
        .iter()
        // ExecStart expands `$VAR`; a literal `$` is written `$$`.
        .map(|a| systemd_quote(&a.replace('$', "$$")))
        .collect();
    let env = s
        .relay_home
        .as_deref()
        .map(|h| {
            format!(
                "Environment={}\n",
                systemd_quote(&format!("{}={h}", sessions::paths::HOME_ENV))
            )
        })
        .unwrap_or_default();
    format!(
        r#"# The claude-relay hub as a systemd user service. Written by `claude-relay service
# install`, which rewrites it; removed by `claude-relay service uninstall`; checked by
# `claude-relay service status`. Edits made here are lost on the next install.
# Logs: journalctl --user -u claude-relay-hub -f
# To keep it running while you are logged out: loginctl enable-linger $USER
[Unit]
Description=claude-relay hub (message hub for AI coding agents)
After=network.target

[Service]
Type=simple
ExecStart={exec}
{env}Restart=always
RestartSec=2

[Install]
WantedBy=default.target
"#,
        exec = exec.join(" "),
    )
}

/// The program and arguments of an installed plist ([`plist`]'s `ProgramArguments`).
pub(super) fn plist_argv(text: &str) -> Option<Vec<String>> {
    let rest = &text[text.find("<key>ProgramArguments</key>")?..];
    let array = &rest[rest.find("<array>")? + "<array>".len()..rest.find("</array>")?];
    let mut argv = Vec::new();
    let mut tail = array;
    while let Some(start) = tail.find("<string>") {
        let after = &tail[start + "<string>".len()..];
        let end = after.find("</string>")?;
        argv.push(unxml(&after[..end]));
        tail = &after[end + "</string>".len()..];
    }
    (!argv.is_empty()).then_some(argv)
}

/// The program and arguments of an installed unit ([`systemd_unit`]'s `ExecStart`).
pub(super) fn systemd_argv(text: &str) -> Option<Vec<String>> {
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("ExecStart="))?;
    let mut argv = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => word.push(chars.next()?),
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    argv.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return None;
    }
    if in_word {
        argv.push(word);
    }
    let argv: Vec<String> = argv
        .into_iter()
        .map(|w| w.replace("$$", "$").replace("%%", "%"))
        .collect();
    (!argv.is_empty()).then_some(argv)
}

/// Escapes text for an XML element.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Undoes [`xml`] (and `&apos;`, which other writers use).
fn unxml(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Quotes a word for a systemd unit line: `%` doubles (specifier escape); words with
/// spaces, quotes or backslashes are double-quoted with C-style escapes.
fn systemd_quote(s: &str) -> String {
    let s = s.replace('%', "%%");
    if s.is_empty()
        || s.chars()
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

    fn service() -> HubService {
        HubService {
            argv: [
                "/Users/me/my tools/claude-relay",
                "hub",
                "--host",
                "127.0.0.1",
                "--port",
                "9999",
                "--token-file",
                "/Users/me/a&b \"c\" 50%$HOME.token",
            ]
            .map(String::from)
            .to_vec(),
            relay_home: None,
            log_dir: PathBuf::from("/Users/me/Library/Logs/claude-relay"),
        }
    }

    fn with_home(home: &str) -> HubService {
        HubService {
            relay_home: Some(home.into()),
            ..service()
        }
    }

    #[test]
    fn plist_has_the_essentials_and_reads_back() {
        let s = service();
        let p = plist(&s);
        for want in [
            "<string>com.claude-relay.hub</string>",
            "<string>/Users/me/my tools/claude-relay</string>\n        <string>hub</string>",
            "<string>/Users/me/a&amp;b &quot;c&quot; 50%$HOME.token</string>",
            "<key>KeepAlive</key>\n    <true/>",
            "<key>RunAtLoad</key>\n    <true/>",
            "<string>/Users/me/Library/Logs/claude-relay/hub.err.log</string>",
        ] {
            assert!(p.contains(want), "missing {want:?} in\n{p}");
        }
        assert!(!p.contains("EnvironmentVariables"));
        assert_eq!(plist_argv(&p), Some(s.argv.clone()));
        // No `--` inside the XML comment (it would end the document's validity).
        let comment = &p[p.find("<!--").unwrap() + 4..p.find("-->").unwrap()];
        assert!(!comment.contains("--"), "{comment}");

        assert!(
            plist(&with_home("/x&y"))
                .contains("<key>CLAUDE_RELAY_HOME</key>\n        <string>/x&amp;y</string>")
        );
    }

    #[test]
    fn systemd_unit_quotes_and_reads_back() {
        let s = service();
        let u = systemd_unit(&s);
        assert!(
            u.contains(
                "ExecStart=\"/Users/me/my tools/claude-relay\" hub --host 127.0.0.1 --port 9999 \
                 --token-file \"/Users/me/a&b \\\"c\\\" 50%%$$HOME.token\"\n"
            ),
            "{u}"
        );
        assert!(u.contains("Restart=always"));
        assert!(u.contains("WantedBy=default.target"));
        assert_eq!(systemd_argv(&u), Some(s.argv.clone()));
        assert!(
            systemd_unit(&with_home("/srv/relay home"))
                .contains("Environment=\"CLAUDE_RELAY_HOME=/srv/relay home\"\n")
        );
        assert_eq!(systemd_quote("50%"), "50%%");
        assert_eq!(systemd_quote(""), "\"\"");
    }

    #[test]
    fn garbage_reads_back_as_nothing() {
        assert_eq!(systemd_argv("[Service]\nType=simple\n"), None);
        assert_eq!(systemd_argv("ExecStart=\"/unterminated hub\n"), None);
        assert_eq!(plist_argv("<plist><dict></dict></plist>"), None);
        assert_eq!(
            plist_argv("<key>ProgramArguments</key><array></array>"),
            None
        );
    }
}
