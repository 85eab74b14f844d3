//! Which files never travel in a snapshot because they look like secrets
//! (docs/HANDOFF.md, "What never travels").
//!
//! The rule looks at the file name only (the last path component), case-insensitively:
//! - `.env`, `.env.local`, `.envrc`, … — anything starting with `.env`;
//! - private keys and certificates: `*.pem`, `*.key`, `*.p12`, `*.pfx`;
//! - ssh key files: `id_` followed by letters, digits, `_` or `-` and no dot (`id_rsa`,
//!   `id_ed25519_sk`, `id_work`), so `id_rsa.pub` and a source file `id_map.rs` are not
//!   secrets;
//! - credential stores: `.netrc`, `_netrc`, `.git-credentials`, `.pgpass`.
//!
//! Untracked files matched by `.gitignore` never travel either; git itself leaves them out
//! (the snapshot adds exactly the paths `git status` lists).

/// Whether the work-tree path (bytes, `/`-separated, as git prints it) looks like a secret.
pub fn is_secret(path: &[u8]) -> bool {
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    let name = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(slash) => &trimmed[slash + 1..],
        None => trimmed,
    };
    let name = name.to_ascii_lowercase();
    let ends = |suffix: &[u8]| name.ends_with(suffix);
    name.starts_with(b".env")
        || ends(b".pem")
        || ends(b".key")
        || ends(b".p12")
        || ends(b".pfx")
        || matches!(
            name.as_slice(),
            b".netrc" | b"_netrc" | b".git-credentials" | b".pgpass"
        )
        || name.strip_prefix(b"id_").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::is_secret;

    #[test]
    fn secret_looking_names() {
        for p in [
            ".env",
            "app/.env.local",
            ".envrc",
            "deploy/server.PEM",
            "tls/private.key",
            "cert.p12",
            "x/y/cert.pfx",
            "id_rsa",
            "home/.ssh/id_ed25519",
            "id_ed25519_sk",
            "keys/id_work-2",
            ".netrc",
            ".git-credentials",
            "db/.pgpass",
        ] {
            assert!(is_secret(p.as_bytes()), "{p}");
        }
    }

    #[test]
    fn ordinary_names() {
        for p in [
            "src/main.rs",
            "id_rsa.pub",
            "src/id_map.rs",
            "id_",
            "environment.md",
            "my.env/readme",
            "keyboard.rs",
            "docs/keys.md",
            "pem",
            "src/.environment/x.rs",
        ] {
            assert!(!is_secret(p.as_bytes()), "{p}");
        }
    }
}
