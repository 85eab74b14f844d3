//! Which name a bridge registers under. First match wins:
//!
//! 1. `CLAUDE_RELAY_SESSION_ID` — set by `claude-session NAME` in the shell the agent was
//!    started from; the user's explicit choice.
//! 2. `--client-id` — fixed in an MCP config.
//! 3. `RELAY_CLIENT_ID` — a *base* name for harnesses that run several copies of one config
//!    (Codex windows): `CODEX`, then `CODEX2`, `CODEX3`… while the name is held by a live
//!    session according to the registry.
//! 4. `<HOSTNAME>-<pid in base 36>` — always unique on this machine, stable for the process.
//!
//! An id from the environment or a flag that breaks the grammar is an error naming its
//! source, never silently replaced: the user asked for that name. The core is a pure
//! function over an environment lookup, so tests never touch the process environment.

use std::fmt;

use relay_proto::id::{IdError, MAX_ID_LEN, SessionId};

use crate::registry::RegistryFile;

/// Set by `claude-session NAME`; the strongest source.
pub const SESSION_ENV: &str = "CLAUDE_RELAY_SESSION_ID";
/// Base name auto-numbered when taken (`CODEX` → `CODEX2`).
pub const CLIENT_ID_ENV: &str = "RELAY_CLIENT_ID";

/// How far auto-numbering goes before giving up (`CODEX2` … `CODEX999`), so a registry full
/// of live look-alikes cannot make resolution loop for long.
pub const MAX_NUMBER: u32 = 999;

/// Where an id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSource {
    /// `CLAUDE_RELAY_SESSION_ID`.
    SessionEnv,
    /// `--client-id`.
    Flag,
    /// `RELAY_CLIENT_ID` (possibly numbered).
    ClientIdEnv,
    /// `<HOSTNAME>-<pid base 36>`.
    Hostname,
}

impl IdSource {
    /// A label for status output: the variable or flag name.
    pub fn label(self) -> &'static str {
        match self {
            Self::SessionEnv => SESSION_ENV,
            Self::Flag => "--client-id",
            Self::ClientIdEnv => CLIENT_ID_ENV,
            Self::Hostname => "hostname+pid",
        }
    }
}

impl fmt::Display for IdSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A resolved identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The id to register.
    pub id: SessionId,
    /// Where it came from.
    pub source: IdSource,
    /// For [`IdSource::ClientIdEnv`]: the base name, so the bridge can keep numbering
    /// (with [`numbered`]) when the hub rejects the name as in use.
    pub base: Option<String>,
}

/// Why no identity could be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// An id given by environment or flag breaks the grammar.
    #[error("{source_desc} is not a valid session id: {error}")]
    Invalid {
        /// The source and value as the user wrote them, e.g. `CLAUDE_RELAY_SESSION_ID="1bad"`.
        source_desc: String,
        /// What is wrong with it.
        error: IdError,
    },
    /// Every numbered variant of the `RELAY_CLIENT_ID` base up to [`MAX_NUMBER`] is taken
    /// or too long.
    #[error(
        "{CLIENT_ID_ENV}={base:?}: no free name ({base} … {base}{MAX_NUMBER} are all held by live sessions or too long)"
    )]
    Exhausted {
        /// The base name.
        base: String,
    },
}

/// Resolves the bridge's id. `flag` is `--client-id`; `env` looks up environment variables;
/// `registry` says which names live sessions hold; `my_pid` is the bridge's own pid (used
/// for the hostname fallback, and so the caller's own entry never counts as a rival).
pub fn resolve(
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
    registry: &RegistryFile,
    my_pid: u32,
) -> Result<Identity, IdentityError> {
    let given = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if let Some(v) = given(SESSION_ENV) {
        return fixed(&v, IdSource::SessionEnv, format!("{SESSION_ENV}={v:?}"));
    }
    if let Some(v) = flag.map(str::trim).filter(|v| !v.is_empty()) {
        return fixed(v, IdSource::Flag, format!("--client-id {v:?}"));
    }
    if let Some(base) = given(CLIENT_ID_ENV) {
        SessionId::parse(&base).map_err(|error| IdentityError::Invalid {
            source_desc: format!("{CLIENT_ID_ENV}={base:?}"),
            error,
        })?;
        for n in 1..=MAX_NUMBER {
            let Ok(id) = numbered(&base, n) else { break };
            let taken = registry
                .sessions
                .get(id.as_str())
                .is_some_and(|e| e.is_live() && e.process().is_some_and(|p| p.pid != my_pid));
            if !taken {
                return Ok(Identity {
                    id,
                    source: IdSource::ClientIdEnv,
                    base: Some(base),
                });
            }
        }
        return Err(IdentityError::Exhausted { base });
    }
    Ok(Identity {
        id: fallback_id(&local_hostname(), my_pid),
        source: IdSource::Hostname,
        base: None,
    })
}

fn fixed(value: &str, source: IdSource, source_desc: String) -> Result<Identity, IdentityError> {
    let id =
        SessionId::parse(value).map_err(|error| IdentityError::Invalid { source_desc, error })?;
    Ok(Identity {
        id,
        source,
        base: None,
    })
}

/// This machine's host name as the OS reports it (empty when it cannot say).
pub fn local_hostname() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// This machine's short host name (cut at the first `.`), as tables show it and as
/// [`fallback_id`] uses it; compare hosts recorded by other tools through this.
pub fn short_hostname() -> String {
    short_host(&local_hostname()).to_string()
}

/// `host.example.com` → `host`.
pub fn short_host(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}

/// The `n`th name of a numbered family: `n <= 1` is `base` itself, `n >= 2` appends the
/// number (`CODEX`, `CODEX2`, `CODEX3`…). Fails when the result breaks the grammar (too long).
pub fn numbered(base: &str, n: u32) -> Result<SessionId, IdError> {
    if n <= 1 {
        SessionId::parse(base)
    } else {
        SessionId::parse(&format!("{base}{n}"))
    }
}

/// `<host>-<pid in base 36>` from a raw host name: cut at the first `.`, characters outside
/// `[A-Za-z0-9_-]` become `-`, an `h` is prefixed when it does not start with a letter
/// (`host` when empty), and it is shortened so the whole id fits [`MAX_ID_LEN`].
pub fn fallback_id(hostname: &str, pid: u32) -> SessionId {
    let suffix = format!("-{}", base36(u64::from(pid)));
    let mut host: String = short_host(hostname)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if host.is_empty() {
        host = "host".into();
    } else if !host.starts_with(|c: char| c.is_ascii_alphabetic()) {
        host.insert(0, 'h');
    }
    host.truncate(MAX_ID_LEN - suffix.len());
    SessionId::parse(&format!("{host}{suffix}")).expect("sanitized host id is always valid")
}

/// Lower-case base 36, as JavaScript's `pid.toString(36)` prints it.
pub fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii digits")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{
        liveness::{self, ProcessStamp},
        registry::EntryUpdate,
    };

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn live(reg: &mut RegistryFile, name: &str, bridge: ProcessStamp) {
        reg.mark_running(
            name,
            EntryUpdate {
                bridge: Some(bridge),
                ..Default::default()
            },
        );
    }

    const ME: u32 = 4_000_000_000;

    #[test]
    fn precedence_session_env_then_flag_then_client_id_then_hostname() {
        let reg = RegistryFile::default();
        let all = env_of(&[(SESSION_ENV, "CC-1"), (CLIENT_ID_ENV, "CODEX")]);
        let id = resolve(Some("FLAG"), &all, &reg, ME).unwrap();
        assert_eq!((id.id.as_str(), id.source), ("CC-1", IdSource::SessionEnv));
        assert_eq!(id.base, None);

        let no_session = env_of(&[(CLIENT_ID_ENV, "CODEX")]);
        let id = resolve(Some("FLAG"), &no_session, &reg, ME).unwrap();
        assert_eq!((id.id.as_str(), id.source), ("FLAG", IdSource::Flag));

        let id = resolve(None, &no_session, &reg, ME).unwrap();
        assert_eq!(
            (id.id.as_str(), id.source),
            ("CODEX", IdSource::ClientIdEnv)
        );
        assert_eq!(id.base.as_deref(), Some("CODEX"));

        let id = resolve(None, env_of(&[]), &reg, 36 * 36).unwrap();
        assert_eq!(id.source, IdSource::Hostname);
        assert_eq!(id.id, fallback_id(&local_hostname(), 36 * 36));
        assert!(id.id.as_str().ends_with("-100"), "{}", id.id);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let reg = RegistryFile::default();
        let env = env_of(&[(SESSION_ENV, ""), (CLIENT_ID_ENV, "  ")]);
        let id = resolve(Some(""), &env, &reg, ME).unwrap();
        assert_eq!(id.source, IdSource::Hostname);
    }

    #[test]
    fn invalid_ids_name_their_source() {
        let reg = RegistryFile::default();
        let err = resolve(None, env_of(&[(SESSION_ENV, "1bad")]), &reg, ME).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CLAUDE_RELAY_SESSION_ID=\"1bad\" is not a valid session id: session id must start with a letter (A-Z, a-z)"
        );
        let err = resolve(Some("a b"), env_of(&[]), &reg, ME).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--client-id \"a b\" is not a valid session id"),
            "{err}"
        );
        let err = resolve(None, env_of(&[(CLIENT_ID_ENV, "all")]), &reg, ME).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("RELAY_CLIENT_ID=\"all\" is not a valid"),
            "{err}"
        );
        // A bad session env is an error even if a good flag is present: no silent fallback.
        assert!(resolve(Some("OK"), env_of(&[(SESSION_ENV, "x/y")]), &reg, ME).is_err());
    }

    #[test]
    fn client_id_is_numbered_past_live_holders_only() {
        let me = liveness::current();
        let other_live = liveness::parent().expect("test runner");
        let dead = ProcessStamp {
            started: me.started - 7200,
            ..me
        };
        let env = env_of(&[(CLIENT_ID_ENV, "CODEX")]);

        let mut reg = RegistryFile::default();
        live(&mut reg, "CODEX", other_live);
        live(&mut reg, "CODEX2", other_live);
        let id = resolve(None, &env, &reg, me.pid).unwrap();
        assert_eq!(id.id.as_str(), "CODEX3");
        assert_eq!(id.base.as_deref(), Some("CODEX"));

        // A dead holder does not keep the name.
        let mut reg = RegistryFile::default();
        live(&mut reg, "CODEX", dead);
        assert_eq!(
            resolve(None, &env, &reg, me.pid).unwrap().id.as_str(),
            "CODEX"
        );

        // The caller's own live entry is not a rival.
        let mut reg = RegistryFile::default();
        live(&mut reg, "CODEX", me);
        assert_eq!(
            resolve(None, &env, &reg, me.pid).unwrap().id.as_str(),
            "CODEX"
        );

        // A merely named (not running) entry does not block either.
        let mut reg = RegistryFile::default();
        reg.mark_named("CODEX", None);
        assert_eq!(
            resolve(None, &env, &reg, me.pid).unwrap().id.as_str(),
            "CODEX"
        );
    }

    #[test]
    fn numbering_gives_up_when_names_get_too_long() {
        let base = "C".repeat(MAX_ID_LEN);
        let me = liveness::current();
        let mut reg = RegistryFile::default();
        live(&mut reg, &base, liveness::parent().unwrap());
        let env = env_of(&[(CLIENT_ID_ENV, base.as_str())]);
        let err = resolve(None, &env, &reg, me.pid).unwrap_err();
        assert!(matches!(err, IdentityError::Exhausted { .. }), "{err}");
    }

    #[test]
    fn numbered_names() {
        assert_eq!(numbered("CODEX", 0).unwrap().as_str(), "CODEX");
        assert_eq!(numbered("CODEX", 1).unwrap().as_str(), "CODEX");
        assert_eq!(numbered("CODEX", 2).unwrap().as_str(), "CODEX2");
        assert_eq!(numbered("CODEX", 17).unwrap().as_str(), "CODEX17");
        assert_eq!(numbered(&"x".repeat(64), 2), Err(IdError::TooLong(65)));
        assert!(numbered("1x", 1).is_err());
    }

    #[test]
    fn hostname_fallback_is_sanitized() {
        assert_eq!(fallback_id("macbook.local", 35).as_str(), "macbook-z");
        assert_eq!(fallback_id("My Mac's box", 36).as_str(), "My-Mac-s-box-10");
        assert_eq!(fallback_id("123host", 1).as_str(), "h123host-1");
        assert_eq!(fallback_id("-x", 1).as_str(), "h-x-1");
        assert_eq!(fallback_id("", 1).as_str(), "host-1");
        assert_eq!(fallback_id(".hidden", 1).as_str(), "host-1");
        assert_eq!(fallback_id("hôte", 1).as_str(), "h-te-1");
        assert_eq!(fallback_id("all", 1).as_str(), "all-1");
        let long = fallback_id(&"a".repeat(200), u32::MAX);
        assert_eq!(long.as_str().len(), MAX_ID_LEN);
        assert!(
            long.as_str()
                .ends_with(&format!("-{}", base36(u64::from(u32::MAX))))
        );
    }

    #[test]
    fn base36_matches_javascript() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(12345), "9ix");
        assert_eq!(base36(u64::from(u32::MAX)), "1z141z3");
    }
}
