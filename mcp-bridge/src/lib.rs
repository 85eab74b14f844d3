//! The claude-relay MCP bridge: a stdio MCP server each agent spawns. It holds one
//! reconnecting WebSocket to the hub under the session's name and gives the model the relay
//! tools. The tools only ever talk to the hub client; the hub is the source of truth for
//! mail, read state and presence.
//!
//! Layout, one concern per module:
//! - [`config`]: identity, hub URL, timeouts, tool profile — decided once at startup.
//! - [`transport`]: newline-delimited JSON-RPC on stdio that answers malformed input.
//! - [`mcp`]: rmcp's `ServerHandler` by hand; [`tools`] defines and parses the tools,
//!   [`actions`] runs them ([`search`]: `relay_receive`'s search), [`format`] words their
//!   results; [`channel`] pushes new mail into the session as Claude Code channel events.
//! - [`hub_client`]: the one reconnecting WebSocket to the hub ([`dial`]: token and TLS,
//!   [`backoff`], [`meta`], [`owner`]: the owner secrets of claimed names).
//! - [`git`]: the git half of a task handoff — the sender's repository state, its unpushed
//!   and uncommitted work as a bundle, and the receiver's checkout (docs/HANDOFF.md).
//! - [`watchdog`]: exits when the parent dies or a signal arrives; [`lifecycle`] runs it all
//!   and [`local`] keeps the session's entry in this machine's registry.
//! - [`outbox`]: the offline outbox on disk — messages waiting for an unreachable hub;
//!   [`offline`] decides when `relay_send` queues and drains the queue to the hub.

mod actions;
pub mod backoff;
mod channel;
mod config;
pub mod dial;
mod format;
pub mod git;
mod hub_client;
mod lifecycle;
mod local;
mod mcp;
mod meta;
mod offline;
pub mod outbox;
pub mod owner;
mod permission;
mod search;
pub mod tasks;
mod tools;
mod transport;
mod watchdog;

pub use lifecycle::{Options, run};

/// Helpers shared by the crate's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    /// A fake environment lookup over fixed pairs.
    pub(crate) fn env_of(
        pairs: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        }
    }
}
