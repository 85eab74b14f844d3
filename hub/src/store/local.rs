//! The operator's edits to a hub's store on this machine (`claude-relay sessions forget|release
//! --local`, docs/REGISTRY.md): no hub connection and no owner secret, only the right to open
//! the data directory. It may run next to a live hub: SQLite in WAL mode lets a second writer
//! wait its turn, and the hub's own data-directory lock is not taken.

use std::path::{Path, PathBuf};

use super::{Backend, StoreError, sqlite::SqliteBackend};
use crate::config::SyncMode;

/// A hub's store opened by an operator tool, offering only the edits an operator may make.
pub struct LocalStore {
    backend: SqliteBackend,
}

impl LocalStore {
    /// The database file a hub keeps in `data_dir` (to say whether there is a store at all
    /// before [`LocalStore::open`] creates one).
    pub fn db_file(data_dir: &Path) -> PathBuf {
        data_dir.join(super::sqlite::DB_FILE)
    }

    /// Opens the store in `data_dir`, shared with a hub that may be running.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            backend: SqliteBackend::open(data_dir, SyncMode::Normal)?,
        })
    }

    /// Forgets the session `id` (its record, owner and read state); whether there was one.
    pub fn forget(&mut self, id: &str) -> Result<bool, StoreError> {
        self.backend.forget_session(id)
    }

    /// Frees the name `id` for any machine to claim; whether it had an owner.
    pub fn release(&mut self, id: &str) -> Result<bool, StoreError> {
        self.backend.release_owner(id)
    }
}
