//! Errors that stop the hub from starting or serving.

use crate::store::StoreError;

/// Why the hub could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The TLS certificate or key could not be used.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// A socket-level failure.
    #[error("hub I/O error: {0}")]
    Io(#[from] std::io::Error),
}
