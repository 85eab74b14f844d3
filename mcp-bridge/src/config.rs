//! What a bridge needs to know before it starts: who it is, where the hub is, how patient to
//! be, and which tools to show.
//!
//! Everything here is decided once, at startup, from flags and environment (see
//! [`BridgeConfig::from_env`]); the rest of the crate reads it and never looks at the
//! environment again, so tests can build a config by hand.

use std::time::Duration;

use relay_proto::wire::DEFAULT_URL;

use crate::{dial::ClientAuth, owner::OwnerStore};

/// Environment variable naming the hub URL (`--relay-url` wins over it).
pub(crate) const RELAY_URL_ENV: &str = "RELAY_URL";
/// Environment variable choosing the tool profile (`full` or `claude`).
pub(crate) const TOOL_PROFILE_ENV: &str = "RELAY_TOOL_PROFILE";
/// Environment variable Claude Code passes to MCP servers: its own session id.
pub(crate) const CLAUDE_SESSION_ENV: &str = "CLAUDE_CODE_SESSION_ID";
/// Environment variable that turns channel push off (`off`, `0`, `false`, `no`).
pub(crate) const CHANNEL_ENV: &str = "RELAY_CHANNEL";
/// Environment variable setting [`Timeouts::register_delay`] in milliseconds.
pub(crate) const REGISTER_DELAY_ENV: &str = "RELAY_REGISTER_DELAY_MS";
/// Environment variable setting [`Timeouts::ping_interval`] in milliseconds (the dead-link
/// deadline, [`Timeouts::idle`], is two of them). Production keeps the default; tests of bad
/// links shorten it so they do not wait on it.
pub(crate) const PING_INTERVAL_ENV: &str = "RELAY_PING_INTERVAL_MS";
/// Environment variable that turns the offline outbox off (`off`, `0`, `false`, `no`).
pub(crate) const OUTBOX_ENV: &str = "RELAY_OUTBOX";

/// Whether `relay_send` queues on disk while the hub is unreachable (docs/BRIDGE.md,
/// "Offline outbox"): on, unless `RELAY_OUTBOX=off|0|false|no` — then a send without a hub
/// says "NOT sent", as before the outbox existed.
pub(crate) fn outbox_enabled(env: impl Fn(&str) -> Option<String>) -> bool {
    match env(OUTBOX_ENV)
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("off" | "0" | "false" | "no") => false,
        Some("" | "on" | "1" | "true" | "yes") | None => true,
        Some(other) => {
            tracing::warn!("ignoring {OUTBOX_ENV}={other:?}: expected on or off");
            true
        }
    }
}

/// Whether new mail is pushed into the session as Claude Code channel events
/// (`notifications/claude/channel`, see `channel`): on, unless the `--no-channel` flag or
/// `RELAY_CHANNEL=off|0|false|no` says otherwise.
///
/// On by default because the push is free when the client ignores it (Claude Code without
/// `--dangerously-load-development-channels`, Codex, Gemini CLI), and it is the only way mail
/// reaches an idle Claude Code session without the Stop hook.
pub(crate) fn channel_enabled(flag_off: bool, env: impl Fn(&str) -> Option<String>) -> bool {
    if flag_off {
        return false;
    }
    match env(CHANNEL_ENV)
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("off" | "0" | "false" | "no") => false,
        Some("" | "on" | "1" | "true" | "yes") | None => true,
        Some(other) => {
            tracing::warn!("ignoring {CHANNEL_ENV}={other:?}: expected on or off");
            true
        }
    }
}

/// Which tool set `tools/list` advertises.
///
/// Claude Code pays for every tool definition in context and should not block in a tool call
/// (mail reaches it through channel push and the Stop-hook doorbell instead), so the blocking
/// `relay_wait` is offered only in [`ToolProfile::Full`], to harnesses whose tool calls may
/// block (Codex, Gemini CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ToolProfile {
    /// Every tool, for harnesses whose tool calls may block (Codex, Gemini CLI).
    Full,
    /// The five tools that make sense inside Claude Code (no `relay_wait`).
    Claude,
}

impl ToolProfile {
    /// `RELAY_TOOL_PROFILE` if set to a known value, else `Claude` when running under Claude
    /// Code (it sets `CLAUDE_CODE_SESSION_ID`), else `Full`.
    pub(crate) fn detect(env: impl Fn(&str) -> Option<String>) -> Self {
        match env(TOOL_PROFILE_ENV).as_deref().map(str::trim) {
            Some("full") => return Self::Full,
            Some("claude") => return Self::Claude,
            Some(other) if !other.is_empty() => {
                tracing::warn!("ignoring {TOOL_PROFILE_ENV}={other:?}: expected full or claude");
            }
            _ => {}
        }
        if env(CLAUDE_SESSION_ENV).is_some_and(|v| !v.is_empty()) {
            Self::Claude
        } else {
            Self::Full
        }
    }
}

/// Time limits of the hub connection. Each one bounds a wait, so nothing the model triggers
/// can hang.
#[derive(Debug, Clone)]
pub(crate) struct Timeouts {
    /// TCP connect + WebSocket handshake.
    pub connect: Duration,
    /// How long a request (send, receive, status…) waits for the hub's reply.
    pub request: Duration,
    /// How long a tool call waits for a connection attempt already in progress before it
    /// answers "not connected" (a disconnected bridge answers at once).
    pub connecting_grace: Duration,
    /// Interval of the bridge's application-level `ping`.
    pub ping_interval: Duration,
    /// No frame at all from the hub for this long means the connection is half-open: drop it
    /// and reconnect. Two ping intervals: the hub answers every ping, so a live link is never
    /// silent that long (docs/BRIDGE.md, "Dead links").
    pub idle: Duration,
    /// A connection that stayed up this long was healthy: the reconnect backoff starts over
    /// when it ends. A link that drops sooner (registers, then dies) keeps backing off, so a
    /// flapping tunnel is not hammered. Two ping intervals by default.
    pub healthy_after: Duration,
    /// First reconnect delay (before jitter).
    pub backoff_start: Duration,
    /// Largest reconnect delay (before jitter).
    pub backoff_cap: Duration,
    /// How long after the client's `initialized` the bridge registers with the hub on its
    /// own, if no tool was called first (a tool call registers at once). A health check —
    /// `claude mcp list`, the MCP Inspector's connect — initializes and hangs up well within
    /// it, so it never shows up on the hub: no session, no owner secret, and no mail marked
    /// delivered to a session nobody runs (see docs/BRIDGE.md, "Lifecycle").
    pub register_delay: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(10),
            connecting_grace: Duration::from_secs(3),
            ping_interval: Duration::from_secs(20),
            idle: Duration::from_secs(40),
            healthy_after: Duration::from_secs(40),
            backoff_start: Duration::from_millis(250),
            backoff_cap: Duration::from_secs(15),
            register_delay: Duration::from_secs(3),
        }
    }
}

impl Timeouts {
    /// Pings every `every`; a link silent for two of them is dead, and one that lasted two
    /// was healthy.
    pub(crate) fn set_ping_interval(&mut self, every: Duration) {
        self.ping_interval = every;
        self.idle = every * 2;
        self.healthy_after = every * 2;
    }
}

/// Where the session id came from, for `relay_status` and for the auto-numbering rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdentitySource {
    /// Human label: `CLAUDE_RELAY_SESSION_ID`, `--client-id`, `RELAY_CLIENT_ID`, `hostname+pid`.
    pub label: String,
    /// For ids from `RELAY_CLIENT_ID`: the base name that gets numbered (`CODEX` → `CODEX2`)
    /// when the hub says the name is held by a live connection. `None` means the id is
    /// fixed and a rejection is reported rather than worked around.
    pub auto_number_base: Option<String>,
    /// The id was made up for this process (`<HOSTNAME>-<pid base 36>`): nobody will claim
    /// it again, so it registers as `transient` (the hub forgets it when the bridge leaves,
    /// unless mail to it waits) and its owner secret is kept in memory only.
    pub transient: bool,
}

/// The bridge's resolved identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The session id to register (already validated against the id grammar).
    pub id: String,
    /// Where it came from.
    pub source: IdentitySource,
}

/// How the bridge proves who it is: to the hub (the token; the CA it checks the hub's
/// certificate against) and for its name (owner secrets).
#[derive(Debug, Clone, Default)]
pub(crate) struct Security {
    /// Hub token and `wss://` trust (`RELAY_TOKEN`, `RELAY_TOKEN_FILE`, `RELAY_CA_CERT`).
    pub auth: ClientAuth,
    /// Where owner secrets are kept. `None`: this client keeps none, so it does not ask the
    /// hub to make its names owned (and cannot claim owned ones).
    pub owners: Option<OwnerStore>,
}

impl Security {
    /// From the environment: token and CA as [`ClientAuth::resolve`] reads them, owner
    /// secrets in `~/.claude-relay/owners`.
    pub(crate) fn from_env(env: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            auth: ClientAuth::resolve(None, None, env),
            owners: Some(OwnerStore::default_dir()),
        }
    }
}

/// Everything the bridge is started with.
#[derive(Debug, Clone)]
pub(crate) struct BridgeConfig {
    /// Who this session is.
    pub identity: Identity,
    /// The hub's WebSocket URL.
    pub relay_url: String,
    /// Connection time limits.
    pub timeouts: Timeouts,
    /// Which tools to advertise.
    pub profile: ToolProfile,
    /// `CLAUDE_CODE_SESSION_ID` when Claude Code started us (recorded in meta and registry so
    /// hooks can find this session).
    pub claude_session_id: Option<String>,
    /// Hub token, TLS trust and owner secrets.
    pub security: Security,
    /// `relay_send` queues on disk while the hub is unreachable ([`outbox_enabled`]).
    pub outbox: bool,
}

impl BridgeConfig {
    /// The hub URL: `--relay-url`, else `RELAY_URL`, else the default (`ws://127.0.0.1:9999`).
    /// Empty values count as unset.
    pub(crate) fn resolve_url(flag: Option<&str>, env: impl Fn(&str) -> Option<String>) -> String {
        flag.map(str::to_string)
            .or_else(|| env(RELAY_URL_ENV))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_URL.to_string())
    }

    /// A config with default timeouts, reading the profile, the Claude session id, the hub
    /// token and the CA from `env`; owner secrets live in `~/.claude-relay/owners`.
    pub(crate) fn new(
        identity: Identity,
        relay_url: String,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let mut timeouts = Timeouts::default();
        if let Some(ms) = env(REGISTER_DELAY_ENV) {
            match ms.trim().parse::<u64>() {
                Ok(ms) => timeouts.register_delay = Duration::from_millis(ms),
                Err(_) => {
                    tracing::warn!("ignoring {REGISTER_DELAY_ENV}={ms:?}: expected milliseconds")
                }
            }
        }
        if let Some(ms) = env(PING_INTERVAL_ENV) {
            match ms.trim().parse::<u64>() {
                Ok(ms) if ms >= 50 => timeouts.set_ping_interval(Duration::from_millis(ms)),
                _ => tracing::warn!(
                    "ignoring {PING_INTERVAL_ENV}={ms:?}: expected milliseconds, at least 50"
                ),
            }
        }
        Self {
            identity,
            relay_url,
            timeouts,
            profile: ToolProfile::detect(&env),
            claude_session_id: env(CLAUDE_SESSION_ENV).filter(|v| !v.is_empty()),
            security: Security::from_env(&env),
            outbox: outbox_enabled(&env),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::env_of;

    #[test]
    fn url_precedence() {
        let env = env_of(&[("RELAY_URL", "ws://env:1")]);
        assert_eq!(
            BridgeConfig::resolve_url(Some("ws://flag:2"), &env),
            "ws://flag:2"
        );
        assert_eq!(BridgeConfig::resolve_url(None, &env), "ws://env:1");
        assert_eq!(BridgeConfig::resolve_url(None, env_of(&[])), DEFAULT_URL);
        assert_eq!(
            BridgeConfig::resolve_url(None, env_of(&[("RELAY_URL", " ")])),
            DEFAULT_URL
        );
    }

    #[test]
    fn channel_switch() {
        assert!(channel_enabled(false, env_of(&[])));
        assert!(!channel_enabled(true, env_of(&[])));
        for off in ["off", "OFF", "0", "false", " no "] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(Box::new([("RELAY_CHANNEL", off)]));
            assert!(!channel_enabled(false, env_of(pairs)), "{off}");
        }
        assert!(channel_enabled(false, env_of(&[("RELAY_CHANNEL", "on")])));
        assert!(channel_enabled(
            false,
            env_of(&[("RELAY_CHANNEL", "bogus")])
        ));
        assert!(!channel_enabled(true, env_of(&[("RELAY_CHANNEL", "on")])));
    }

    #[test]
    fn outbox_switch_and_ping_interval() {
        assert!(outbox_enabled(env_of(&[])));
        assert!(!outbox_enabled(env_of(&[("RELAY_OUTBOX", "off")])));
        assert!(!outbox_enabled(env_of(&[("RELAY_OUTBOX", " 0 ")])));
        assert!(outbox_enabled(env_of(&[("RELAY_OUTBOX", "bogus")])));
        let mut t = Timeouts::default();
        assert_eq!(t.idle, t.ping_interval * 2, "dead within two intervals");
        t.set_ping_interval(Duration::from_millis(500));
        assert_eq!(t.idle, Duration::from_secs(1));
        assert_eq!(t.healthy_after, Duration::from_secs(1));
    }

    #[test]
    fn profile_detection() {
        assert_eq!(ToolProfile::detect(env_of(&[])), ToolProfile::Full);
        assert_eq!(
            ToolProfile::detect(env_of(&[("CLAUDE_CODE_SESSION_ID", "abc")])),
            ToolProfile::Claude
        );
        assert_eq!(
            ToolProfile::detect(env_of(&[
                ("CLAUDE_CODE_SESSION_ID", "abc"),
                ("RELAY_TOOL_PROFILE", "full")
            ])),
            ToolProfile::Full
        );
        assert_eq!(
            ToolProfile::detect(env_of(&[("RELAY_TOOL_PROFILE", "bogus")])),
            ToolProfile::Full
        );
    }
}
