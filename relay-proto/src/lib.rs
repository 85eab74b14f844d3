//! The words the hub and its clients share: session ids and their grammar ([`id`]), the wire
//! frames spoken over the WebSocket ([`wire`], docs/PROTOCOL.md), the protocol's timestamps
//! ([`time`]) and the hub token both ends hold ([`token`]).
//!
//! This is everything the hub needs from the rest of the workspace, and nothing more: what
//! only a client machine knows (its session registry, identity, process liveness, file
//! locations) lives in `relay-local`, so the hub never links sysinfo or reads `~/.claude-relay`.

pub mod id;
pub mod time;
pub mod token;
pub mod wire;
pub mod wire_approvals;
pub mod wire_feed;
pub mod wire_search;
pub mod wire_tasks;

pub use id::{BROADCAST, IdError, SessionId};
