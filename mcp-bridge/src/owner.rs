//! Owner secrets of claimed names: one file per name, `~/.claude-relay/owners/NAME`
//! (`CLAUDE_RELAY_HOME` aware), mode 0600 in a 0700 directory.
//!
//! The hub mints a secret the first time a client that keeps secrets claims a name, sends it
//! exactly once, and keeps only its hash; every later claim of the name must present it.
//! Whoever holds the file can therefore claim the name — which is also how a name moves to
//! another machine: copy the file, or release the name here (`claude-relay sessions release
//! NAME`) and claim it there.
//!
//! Writes are atomic (a 0600 temp file in the same directory, fsync, rename, fsync of the
//! directory), so a crash never leaves a torn or world-readable secret. Reads are bounded
//! ([`MAX_SECRET_FILE`]).

use std::{
    fs,
    io::{self, Read},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use sessions::SessionId;

use crate::private_file;

/// Largest owner file read (a secret is 64 hex characters; this bounds a mistaken file).
pub const MAX_SECRET_FILE: u64 = 4096;

/// Why an owner secret could not be read, stored or removed. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// The name is not a session id (so it cannot be a file name here either).
    #[error("{name:?} is not a valid session id: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// Why.
        reason: String,
    },
    /// Reading failed (other than "no such file").
    #[error("cannot read the owner secret {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file holds no secret.
    #[error("the owner secret file {} is empty", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Writing failed.
    #[error("cannot store the owner secret in {}: {source}", path.display())]
    Write {
        /// The file (or directory) that could not be written.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Deleting failed.
    #[error("cannot delete the owner secret {}: {source}", path.display())]
    Remove {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The directory of owner-secret files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerStore {
    dir: PathBuf,
}

impl OwnerStore {
    /// Secrets kept in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `~/.claude-relay/owners` (or under `CLAUDE_RELAY_HOME`).
    pub fn default_dir() -> Self {
        Self::new(sessions::paths::owners_dir())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds `name`'s secret. Fails for names outside the id grammar, so a
    /// name can never point outside the directory.
    pub fn path(&self, name: &str) -> Result<PathBuf, OwnerError> {
        let id = SessionId::parse(name).map_err(|e| OwnerError::BadName {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        Ok(self.dir.join(id.as_str()))
    }

    /// `name`'s secret, or `None` when this machine has none.
    pub fn load(&self, name: &str) -> Result<Option<String>, OwnerError> {
        let path = self.path(name)?;
        let read = |source| OwnerError::Read {
            path: path.clone(),
            source,
        };
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read(e)),
        };
        if let Ok(meta) = file.metadata()
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                "owner secret {} is readable by other users (mode {:o}); run: chmod 600 {}",
                path.display(),
                meta.permissions().mode() & 0o777,
                path.display()
            );
        }
        let mut text = String::new();
        file.take(MAX_SECRET_FILE)
            .read_to_string(&mut text)
            .map_err(read)?;
        match text.lines().next().map(str::trim).filter(|s| !s.is_empty()) {
            Some(secret) => Ok(Some(secret.to_string())),
            None => Err(OwnerError::Empty { path }),
        }
    }

    /// Stores `name`'s secret atomically with mode 0600 (the directory 0700). Returns the
    /// file's path.
    pub fn save(&self, name: &str, secret: &str) -> Result<PathBuf, OwnerError> {
        let path = self.path(name)?;
        let write = |p: &Path| {
            let p = p.to_path_buf();
            move |source| OwnerError::Write { path: p, source }
        };
        private_file::private_dir(&self.dir).map_err(write(&self.dir))?;
        let bytes = format!("{}\n", secret.trim());
        private_file::write_atomic(&self.dir, name, &format!(".{name}."), bytes.as_bytes())
            .map_err(write(&path))?;
        Ok(path)
    }

    /// Deletes `name`'s secret. Returns whether there was one.
    pub fn remove(&self, name: &str) -> Result<bool, OwnerError> {
        let path = self.path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(OwnerError::Remove { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn save_load_remove_with_private_modes() {
        let home = tempfile::tempdir().unwrap();
        let store = OwnerStore::new(home.path().join("owners"));
        assert_eq!(store.load("CC-1").unwrap(), None);
        let path = store.save("CC-1", "abc123").unwrap();
        assert_eq!(path, home.path().join("owners").join("CC-1"));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(store.dir()), 0o700);
        assert_eq!(store.load("CC-1").unwrap().as_deref(), Some("abc123"));
        // Overwrite is atomic and leaves no temp files behind.
        store.save("CC-1", "def456").unwrap();
        assert_eq!(store.load("CC-1").unwrap().as_deref(), Some("def456"));
        let names: Vec<_> = fs::read_dir(store.dir()).unwrap().collect();
        assert_eq!(names.len(), 1);
        assert!(store.remove("CC-1").unwrap());
        assert!(!store.remove("CC-1").unwrap());
        assert_eq!(store.load("CC-1").unwrap(), None);
    }

    #[test]
    fn a_loose_directory_is_tightened() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("owners");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        OwnerStore::new(&dir).save("A", "s").unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn names_outside_the_grammar_are_refused() {
        let store = OwnerStore::new("/nonexistent");
        for bad in ["../etc/passwd", "", "a/b", ".hidden", "all"] {
            assert!(
                matches!(store.path(bad), Err(OwnerError::BadName { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_empty_file_is_an_error_that_names_it() {
        let home = tempfile::tempdir().unwrap();
        let store = OwnerStore::new(home.path());
        fs::write(home.path().join("X"), "\n").unwrap();
        let e = store.load("X").unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains('X'), "{e}");
    }

    #[test]
    fn an_unwritable_directory_is_reported() {
        let home = tempfile::tempdir().unwrap();
        // A file where the directory should be.
        let blocker = home.path().join("owners");
        fs::write(&blocker, "").unwrap();
        let e = OwnerStore::new(&blocker).save("A", "s").unwrap_err();
        assert!(matches!(e, OwnerError::Write { .. }), "{e}");
    }
}
