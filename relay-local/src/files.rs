//! Files replaced whole, atomically: the one writer every file claude-relay rewrites goes
//! through (the session registry, owner secrets, outbox entries, Claude Code's settings, the
//! hub's service unit).
//!
//! A write goes to a temporary file in the same directory (`.<name>.<pid>.<n>.tmp`, created
//! new, never followed through a link), is fsynced, renamed over the target, and then the
//! directory is fsynced so the rename itself survives a power loss. A crash leaves either the
//! old file or the new one — never a torn one — plus at worst a stray temporary file, which
//! [`is_temp`] recognises. A private file is created 0600 from the start, so no reader ever
//! sees it with looser permissions.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
};

/// Who may read a file written by [`write_atomic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only the owner (0600): secrets, mail, the registry.
    Private,
    /// The permissions the file had before; `0644` (less the umask) for a new file. For files
    /// that are the user's own (Claude Code's `settings.json`, a service unit).
    KeepOr644,
}

/// Attempts at a fresh temporary name before giving up (a name is taken only by a leftover of
/// a crashed process that had the same pid and counter).
const TEMP_ATTEMPTS: u32 = 16;

/// Replaces `path` with `bytes` atomically (see the module doc). The parent directory must
/// exist. On error the temporary file is removed and `path` is as it was.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Mode) -> io::Result<()> {
    let dir = parent(path);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let perms = match mode {
        Mode::Private => 0o600,
        Mode::KeepOr644 => fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777),
    };
    let (tmp, mut file) = create_temp(dir, name, perms)?;
    let result = (|| {
        file.write_all(bytes)?;
        if mode == Mode::KeepOr644 {
            // The umask applied at create; an existing file's mode is copied exactly.
            file.set_permissions(fs::Permissions::from_mode(perms))?;
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// True for the name of a temporary file [`write_atomic`] makes (a write in progress, or torn
/// by a crash), so a directory scan can skip or clean it.
pub fn is_temp(file_name: &str) -> bool {
    file_name.starts_with('.') && file_name.ends_with(".tmp")
}

/// Creates `dir` (and any missing parents) with mode 0700 and tightens `dir` itself to 0700
/// if it already existed looser. Parents that already exist are left alone.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // An existing directory keeps its mode on create; make sure only we can list it.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Makes renames and unlinks in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A new temporary file beside the target, created exclusively with `perms`.
fn create_temp(dir: &Path, name: &str, perms: u32) -> io::Result<(std::path::PathBuf, fs::File)> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(perms)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no temporary name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn replaces_whole_files_private_from_the_start_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_atomic(&path, b"one", Mode::Private).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(mode(&path), 0o600);
        write_atomic(&path, b"two", Mode::Private).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn keeps_the_users_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        write_atomic(&path, b"{}", Mode::KeepOr644).unwrap();
        assert_eq!(mode(&path) & 0o600, 0o600);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"{\"a\":1}", Mode::KeepOr644).unwrap();
        assert_eq!(mode(&path), 0o640);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target");
        write_atomic(&path, b"old", Mode::Private).unwrap();
        // A directory where the file should go: the rename fails.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("inside"), b"x").unwrap();
        assert!(write_atomic(&blocked, b"new", Mode::Private).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        let temps: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| is_temp(n))
            .collect();
        assert!(temps.is_empty(), "{temps:?}");
    }

    #[test]
    fn temp_names_are_recognised() {
        assert!(is_temp(".registry.json.42.0.tmp"));
        assert!(!is_temp("registry.json"));
        assert!(!is_temp("00000001.msg"));
    }

    #[test]
    fn private_dir_tightens_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("owners");
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
    }
}
