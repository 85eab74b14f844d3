//! The metadata a bridge reports on `register`: which process it is, which agent it serves,
//! where, since when. Other sessions see it in `relay_sessions`; `claude-relay sessions` and
//! the Stop hook use `claudeSessionId` to find the session of a Claude Code window.

use relay_proto::wire::Meta;
use serde_json::Value;

use crate::config::BridgeConfig;

/// `source` value identifying connections made by this bridge.
pub(crate) const SOURCE: &str = "mcp-bridge";

/// The current directory as a string (empty when unknown).
pub(crate) fn cwd() -> String {
    std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// `{pid, agentPid, cwd, host, started, source, version, claudeSessionId?}` for `register`;
/// `client {name, version}` (the MCP client's `clientInfo`) is added at `initialize` by
/// [`HubClient::set_client`](crate::hub_client::HubClient::set_client).
pub(crate) fn register_meta(config: &BridgeConfig, started_ms: i64) -> Meta {
    let mut m = Meta::new();
    m.insert("pid".into(), Value::from(std::process::id()));
    m.insert(
        "agentPid".into(),
        Value::from(std::os::unix::process::parent_id()),
    );
    m.insert("cwd".into(), Value::from(cwd()));
    m.insert(
        "host".into(),
        Value::from(relay_local::identity::local_hostname()),
    );
    m.insert(
        "started".into(),
        Value::from(relay_proto::time::iso(started_ms)),
    );
    m.insert("source".into(), Value::from(SOURCE));
    m.insert("version".into(), Value::from(env!("CARGO_PKG_VERSION")));
    if let Some(id) = &config.claude_session_id {
        m.insert("claudeSessionId".into(), Value::from(id.clone()));
    }
    m
}
