//! The bridge's record in this machine's session registry
//! (`~/.claude-relay/sessions/registry.json`).
//!
//! - At start: resolve the session id (the registry says which names live sessions hold).
//! - When the hub connection starts (first tool call, or a moment after `initialized`; never
//!   for a health check): mark the entry `Running` with the agent (our parent), the bridge,
//!   cwd, host, Claude Code session id and hub URL — unless another live bridge owns that
//!   entry (then we wait until the hub gives us the name, and never clobber its record).
//! - When the hub registers us under a (new) name: that name is ours; record it.
//! - On the way out: mark the entry `Ended`, only if we still own it.
//!
//! Registry I/O is blocking file work under a lock, so it runs on the blocking pool with a
//! short lock timeout; a registry problem is logged and never stops the bridge.

use std::{sync::Arc, time::Duration};

use relay_local::{
    liveness,
    registry::{EntryState, EntryUpdate, Registry, RegistryFile},
};

use crate::{
    actions::{LocalSession, LocalSessions},
    config::{BridgeConfig, Identity, IdentitySource},
    meta,
};

/// How long the bridge waits for the registry lock (other claude-relay processes hold it
/// only for a read-modify-write).
const LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// This bridge's handle on the registry.
#[derive(Clone)]
pub(crate) struct LocalRecord {
    registry: Registry,
    bridge_pid: u32,
}

impl LocalRecord {
    /// The default registry (`CLAUDE_RELAY_HOME` aware).
    pub(crate) fn open_default() -> Self {
        Self {
            registry: Registry::open_default().with_lock_timeout(LOCK_TIMEOUT),
            bridge_pid: std::process::id(),
        }
    }

    /// The registry file, or an empty one (with a warning) when it cannot be read.
    pub(crate) fn load(&self) -> RegistryFile {
        self.registry.load().unwrap_or_else(|e| {
            tracing::warn!("session registry unreadable: {e}");
            RegistryFile::default()
        })
    }

    /// Resolves the session id (docs/REGISTRY.md, "Which name a bridge takes"). The error
    /// names the bad source.
    pub(crate) fn resolve_identity(
        &self,
        flag: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Identity, String> {
        let file = self.load();
        let ident = relay_local::identity::resolve(flag, env, &file, self.bridge_pid)
            .map_err(|e| e.to_string())?;
        Ok(Identity {
            id: ident.id.to_string(),
            source: IdentitySource {
                label: ident.source.label().to_string(),
                auto_number_base: ident.base,
                transient: ident.source == relay_local::IdSource::Hostname,
            },
        })
    }

    /// Marks `name` running under this bridge. With `claim` false (at start, before the hub
    /// accepted the name) an entry owned by another live bridge is left alone.
    pub(crate) async fn mark_running(&self, name: String, config: &BridgeConfig, claim: bool) {
        let up = EntryUpdate {
            cwd: Some(meta::cwd()).filter(|c| !c.is_empty()),
            host: Some(relay_local::identity::local_hostname()).filter(|h| !h.is_empty()),
            agent: liveness::parent(),
            bridge: Some(liveness::current()),
            claude_session_id: config.claude_session_id.clone(),
            relay_url: Some(config.relay_url.clone()),
        };
        let this = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            this.registry.update(|file| {
                if let Some(e) = file.sessions.get(&name) {
                    let ours = e.bridge.is_some_and(|b| b.pid == this.bridge_pid);
                    if e.state == EntryState::Running && ours {
                        return false;
                    }
                    if !claim && !ours && e.is_live() {
                        return false;
                    }
                }
                file.mark_running(&name, up);
                true
            })
        })
        .await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("could not record the session in the registry: {e}"),
            Err(e) => tracing::warn!("registry update failed: {e}"),
        }
    }

    /// Marks `name` ended if this bridge still owns it. Blocking; bounded by the lock timeout.
    pub(crate) fn mark_ended_blocking(&self, name: &str) {
        match self
            .registry
            .update(|file| file.mark_ended(name, self.bridge_pid))
        {
            Ok(_) => {}
            Err(e) => tracing::warn!("could not mark the session ended in the registry: {e}"),
        }
    }

    /// Marks `name` ended on the blocking pool, waiting at most `limit`.
    pub(crate) async fn mark_ended(&self, name: String, limit: Duration) {
        let this = self.clone();
        let job = tokio::task::spawn_blocking(move || this.mark_ended_blocking(&name));
        if tokio::time::timeout(limit, job).await.is_err() {
            tracing::warn!("gave up marking the session ended in the registry after {limit:?}");
        }
    }

    /// A reader of the registry for `relay_sessions`.
    pub(crate) fn sessions_reader(&self) -> LocalSessions {
        let registry = self.registry.clone();
        Arc::new(move || {
            let file = registry.load().map_err(|e| e.to_string())?;
            Ok(file
                .sessions
                .iter()
                .map(|(id, e)| {
                    let state = match e.state {
                        EntryState::Named => "named",
                        EntryState::Running => "running",
                        EntryState::Ended => "ended",
                    };
                    let proc = e.process();
                    let last = e
                        .ended_at
                        .as_deref()
                        .or(e.updated_at.as_deref())
                        .and_then(relay_proto::time::parse_iso);
                    LocalSession {
                        id: id.clone(),
                        state: state.to_string(),
                        alive: (e.state == EntryState::Running)
                            .then(|| proc.is_some_and(|p| liveness::is_alive(&p))),
                        pid: e.agent.or(proc).map(|p| p.pid),
                        host: e.host.clone().unwrap_or_default(),
                        cwd: e.cwd.clone().unwrap_or_default(),
                        last_seen_ms: last,
                    }
                })
                .collect())
        })
    }
}
