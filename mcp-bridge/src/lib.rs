//! The claude-relay MCP bridge: a stdio MCP server each agent spawns. It holds one
//! reconnecting WebSocket to the hub under the session's name and gives the model the relay
//! tools. The tools only ever talk to the hub client; the hub is the source of truth for
//! mail, read state and presence.

pub mod config;
pub mod connect;
pub mod transport;
