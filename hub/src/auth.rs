//! Who may connect and who may hold a name: the hub token (checked on the WebSocket upgrade
//! or on `register`) and owner secrets for names.
//!
//! Secrets are compared in constant time. The hub keeps only a SHA-256 hash of each owner
//! secret, so a copy of its database does not let anyone claim a name.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Constant-time equality of two byte strings (`subtle`; the length is not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

/// Checks a presented hub token against the configured one.
pub(crate) fn token_ok(expected: &str, presented: &str) -> bool {
    ct_eq(expected.as_bytes(), presented.as_bytes())
}

/// The token in an `Authorization: Bearer …` header value, if that is what it is.
pub(crate) fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// A new owner secret: 32 random bytes, hex.
pub(crate) fn mint_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    hex(&bytes)
}

/// The stored form of an owner secret.
pub(crate) fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Checks a presented owner secret against a stored hash.
pub(crate) fn secret_matches(stored_hash: &str, presented: &str) -> bool {
    ct_eq(stored_hash.as_bytes(), hash_secret(presented).as_bytes())
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_through_their_hash() {
        let s = mint_secret();
        assert_eq!(s.len(), 64);
        assert_ne!(s, mint_secret());
        let h = hash_secret(&s);
        assert!(secret_matches(&h, &s));
        assert!(!secret_matches(&h, "nope"));
        assert!(!secret_matches(&h, &mint_secret()));
    }

    #[test]
    fn tokens_and_bearer_headers() {
        assert!(token_ok("abc", "abc"));
        assert!(!token_ok("abc", "abd"));
        assert!(!token_ok("abc", "ab"));
        assert_eq!(bearer("Bearer  xyz "), Some("xyz"));
        assert_eq!(bearer("bearer xyz"), Some("xyz"));
        assert_eq!(bearer("Basic xyz"), None);
        assert_eq!(bearer("xyz"), None);
    }
}
