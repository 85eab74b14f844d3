//! Private files written atomically: a 0600 temporary file in the same directory, fsync,
//! rename over the target, fsync of the directory. A crash leaves either the old file or the
//! new one — never a torn or world-readable one — plus at worst a stray temporary file.
//! Used for owner secrets ([`crate::owner`]) and outbox entries ([`crate::outbox`]).

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// Creates `dir` (and any missing parents) with mode 0700 and tightens `dir` itself to 0700
/// if it already existed looser. Parents that already exist are left alone.
pub(crate) fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // An existing directory keeps its mode on create; make sure only we can list it.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Writes `bytes` to `dir/name` atomically with mode 0600. The temporary file is named
/// `{tmp_prefix}{pid}.{random}.tmp` and removed on error. Returns the file's path.
pub(crate) fn write_atomic(
    dir: &Path,
    name: &str,
    tmp_prefix: &str,
    bytes: &[u8],
) -> io::Result<PathBuf> {
    let tmp = dir.join(format!(
        "{tmp_prefix}{}.{:08x}.tmp",
        std::process::id(),
        rand::random::<u32>()
    ));
    let path = dir.join(name);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        // The rename is durable once the directory is.
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| path)
}

/// Makes renames and unlinks in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}
