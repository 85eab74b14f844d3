//! The hub's data directory on disk: private to its user, and used by one hub at a time.
//!
//! Everything in it is mail, so the directory is made mode 0700 and `relay.db` (and its
//! `-wal`, `-shm` and the lock file) 0600 — also for installs made before this rule: a
//! looser mode found at start is tightened (see `docs/STORAGE.md`, "Files and modes").
//!
//! Two hubs writing one store corrupt each other's view of it (duplicate sequence numbers,
//! one name live on both). So a hub holds an exclusive advisory lock (`flock`) on
//! [`LOCK_FILE`] for its whole life; the kernel frees it when the process dies, however it
//! dies, so a crashed hub never leaves a stale lock behind. A second hub finds the lock held
//! and refuses to start, naming the pid written in the file by the holder.

use std::{
    fs::{self, File, OpenOptions, TryLockError},
    io::{Read, Seek, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use super::StoreError;

/// Name of the lock file inside the data directory.
pub(crate) const LOCK_FILE: &str = "relay.lock";
/// Mode of the data directory.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of every file in it.
pub(crate) const FILE_MODE: u32 = 0o600;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Creates `dir` (mode 0700) if it is missing, and makes sure `db` and its companion files
/// are 0600. An existing directory is tightened to 0700 when it is the hub's (it holds
/// nothing but the store's files); a directory that holds other things (someone pointed
/// `--data-dir` at a shared place such as `/tmp`) keeps its mode, with a warning — the
/// store's files in it are 0600 either way.
pub(crate) fn prepare(dir: &Path, db: &Path) -> Result<(), StoreError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(io(dir))?;
    }
    let mode = fs::metadata(dir).map_err(io(dir))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let db_name = db
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let ours = fs::read_dir(dir).map_err(io(dir))?.all(|e| {
            e.is_ok_and(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(&db_name)
                    || name.starts_with(super::sqlite::DB_FILE)
                    || name.starts_with(super::sqlite::INDEX_FILE)
                    || name == LOCK_FILE
            })
        });
        if ours {
            fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(io(dir))?;
            tracing::info!(dir = %dir.display(), was = format!("{mode:o}"), "data directory made private (0700)");
        } else {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{mode:o}"),
                "the data directory is shared with other files and readable by other users; \
                 the store's files are 0600, but a directory of its own is safer"
            );
        }
    }
    // SQLite creates `-wal` and `-shm` with the mode of the database file, so a database
    // made 0600 here keeps its companions 0600 too.
    if !db.exists() {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(db)
            .map_err(io(db))?;
    }
    for file in files_of(db) {
        tighten(&file)?;
    }
    tighten(&dir.join(LOCK_FILE))
}

/// A database file and the companions SQLite may make beside it (`-wal`, `-shm`,
/// `-journal`): what is made private with it, or deleted with it.
pub(crate) fn files_of(db: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    ["", "-wal", "-shm", "-journal"]
        .into_iter()
        .map(move |suffix| {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            PathBuf::from(p)
        })
}

/// Makes an existing file 0600 (a missing one is fine).
fn tighten(path: &Path) -> Result<(), StoreError> {
    match fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            fs::set_permissions(path, fs::Permissions::from_mode(FILE_MODE)).map_err(io(path))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

/// The exclusive lock on a data directory; held until dropped (or the process dies).
#[derive(Debug)]
pub(crate) struct DataDirLock {
    /// The open lock file: the `flock` lives as long as this descriptor.
    _file: File,
}

impl DataDirLock {
    /// Takes the lock on `dir` (which must exist) and writes this process's pid into the lock
    /// file. Fails with [`StoreError::Locked`] when another process holds it.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StoreError::Locked {
                    dir: dir.display().to_string(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        // Only the holder writes: the pid in the file is always the holder's (or empty for
        // the moment between the lock and this write).
        file.set_len(0).map_err(io(&path))?;
        file.rewind().map_err(io(&path))?;
        writeln!(file, "{}", std::process::id()).map_err(io(&path))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_with_the_holders_pid_until_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        match DataDirLock::acquire(dir.path()) {
            Err(StoreError::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("second lock: {other:?}"),
        }
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn an_old_install_is_made_private_and_a_new_one_starts_private() {
        let root = tempfile::tempdir().unwrap();
        let old = root.path().join("old");
        fs::create_dir(&old).unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o755)).unwrap();
        let db = old.join("relay.db");
        for f in ["relay.db", "relay.db-wal", "relay.db-shm", LOCK_FILE] {
            fs::write(old.join(f), b"").unwrap();
            fs::set_permissions(old.join(f), fs::Permissions::from_mode(0o644)).unwrap();
        }
        prepare(&old, &db).unwrap();
        assert_eq!(mode(&old), 0o700);
        for f in ["relay.db", "relay.db-wal", "relay.db-shm", LOCK_FILE] {
            assert_eq!(mode(&old.join(f)), 0o600, "{f}");
        }

        let new = root.path().join("a/b/new");
        prepare(&new, &new.join("relay.db")).unwrap();
        assert_eq!(mode(&new), 0o700);
        assert_eq!(mode(&new.join("relay.db")), 0o600);
    }

    #[test]
    fn a_shared_directory_keeps_its_mode_but_the_store_files_do_not() {
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::write(shared.join("someone-elses-file"), b"x").unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&shared, &shared.join("relay.db")).unwrap();
        assert_eq!(mode(&shared), 0o755);
        assert_eq!(mode(&shared.join("relay.db")), 0o600);
    }
}
