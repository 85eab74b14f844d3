//! The hub operator's secret: the key to the every-session task view (`task_list` with
//! `all`, `task_get` of any task; `claude-relay tasks --all`).
//!
//! Who the operator is (see `docs/SECURITY.md`): whoever can read the hub's data directory.
//! That person can already read every task and message in `relay.db`, so the view reveals
//! nothing new to them, and it does not depend on the hub token (which every member holds)
//! or on the client's address (every SSH-tunnelled machine arrives from loopback). The hub
//! makes `operator.secret` (32 random bytes, hex, mode 0600) in its data directory on first
//! start and keeps only its hash in memory.

use std::{io::Write, path::Path};

use crate::auth::{hash_secret, mint_secret};

/// File name of the operator secret in the hub's data directory.
pub const FILE: &str = "operator.secret";

/// Reads the operator secret of `data_dir`, making it first if there is none; returns its
/// hash. None (logged) when it can be neither read nor made: then nobody is the operator.
pub(crate) fn ensure(data_dir: &Path) -> Option<String> {
    let path = data_dir.join(FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let secret = text.trim();
        if !secret.is_empty() {
            return Some(hash_secret(secret));
        }
    }
    let secret = mint_secret();
    let made = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&path)?;
        f.write_all(secret.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    })();
    match made {
        Ok(()) => Some(hash_secret(&secret)),
        Err(e) => {
            tracing::warn!(
                "cannot write the operator secret {}: {e}; the every-session task view is off",
                path.display()
            );
            None
        }
    }
}

/// Reads the operator secret a CLI on the hub's host presents (first line of the file).
pub fn read(data_dir: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(data_dir.join(FILE))?;
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let h1 = ensure(dir.path()).unwrap();
        let h2 = ensure(dir.path()).unwrap();
        assert_eq!(h1, h2, "a restart keeps the same secret");
        let secret = read(dir.path()).unwrap();
        assert!(crate::auth::secret_matches(&h1, &secret));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
