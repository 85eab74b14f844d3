//! The hub token: the shared secret a hub may require of every connection (docs/SECURITY.md).
//! Both ends hold it — the hub to check it, each client to present it — so its one type and
//! its one file reader live here.
//!
//! A [`HubToken`]'s `Debug` never shows the value and it has no `Display`, so it cannot end up
//! in a log line, an error message or a `Debug` of a config by accident. A token file is read
//! capped ([`MAX_TOKEN_FILE`]: a token is one short line, the cap bounds a mistaken path such
//! as `/dev/zero`) and only its first line counts, trimmed.

use std::{
    fmt,
    io::{self, Read},
    path::Path,
};

/// Largest token file read.
pub const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// The hub token.
#[derive(Clone, PartialEq, Eq)]
pub struct HubToken(String);

impl HubToken {
    /// A token from its text (trimmed). `None` when empty.
    pub fn new(text: &str) -> Option<Self> {
        let t = text.trim();
        (!t.is_empty()).then(|| Self(t.to_string()))
    }

    /// The secret value, for the places that send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for HubToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HubToken(<redacted>)")
    }
}

/// Why a token file gave no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be opened or read.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The first line is empty.
    #[error("the file is empty (the token is its first line)")]
    Empty,
}

/// Reads a token file: its first line, trimmed, reading at most [`MAX_TOKEN_FILE`] bytes.
pub fn read_token_file(path: &Path) -> Result<HubToken, TokenFileError> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_TOKEN_FILE)
        .read_to_string(&mut text)?;
    HubToken::new(text.lines().next().unwrap_or_default()).ok_or(TokenFileError::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_trimmed_capped_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "  s3cret-tok \nsecond line\n").unwrap();
        let t = read_token_file(&p).unwrap();
        assert_eq!(t.expose(), "s3cret-tok");
        assert!(!format!("{t:?}").contains("s3cret"));
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(read_token_file(&p), Err(TokenFileError::Empty)));
        // A huge single line is cut at the cap, not read whole.
        std::fs::write(&p, "x".repeat(MAX_TOKEN_FILE as usize * 2)).unwrap();
        assert_eq!(
            read_token_file(&p).unwrap().expose().len(),
            MAX_TOKEN_FILE as usize
        );
        assert!(matches!(
            read_token_file(&dir.path().join("missing")),
            Err(TokenFileError::Io(_))
        ));
    }
}
