//! Shared vocabulary of claude-relay: session ids and their grammar, the wire frames spoken
//! between hub and clients, identity resolution, the session registry file, and process
//! liveness. No server code lives here, so the bridge and CLI can depend on it without pulling
//! in the hub.

pub mod display;
pub mod id;
pub mod identity;
pub mod liveness;
pub mod paths;
pub mod registry;
pub mod time;
pub mod wire;
pub mod wire_feed;
pub mod wire_tasks;

pub use id::{BROADCAST, IdError, SessionId};
pub use identity::{IdSource, Identity, IdentityError};
pub use liveness::ProcessStamp;
pub use registry::{Entry, EntryState, EntryUpdate, Registry, RegistryError, RegistryFile};
