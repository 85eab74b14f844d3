//! What one client machine knows about its sessions: which name a bridge takes ([`identity`]),
//! the session registry file shared by every bridge and CLI on the machine ([`registry`]),
//! whether a recorded process is still alive ([`liveness`]), where claude-relay keeps its
//! files ([`paths`]) and how they are rewritten ([`files`]), and how text that came from the hub is made safe to show ([`display`]).
//!
//! The hub depends on none of this (it needs only `relay-proto`), so the bridge and the CLI can
//! use it without the hub linking sysinfo or touching `~/.claude-relay`.

pub mod display;
pub mod files;
pub mod identity;
pub mod liveness;
pub mod paths;
pub mod registry;

pub use identity::{IdSource, Identity, IdentityError};
pub use liveness::ProcessStamp;
pub use registry::{Entry, EntryState, EntryUpdate, Registry, RegistryError, RegistryFile};
