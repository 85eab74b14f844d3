//! Session ids: the names agents are known by (`CC-1`, `CODEX2`, `laptop-3f2k`).
//!
//! The grammar is `^[A-Za-z][A-Za-z0-9_-]{0,63}$` and `all` (any case) is reserved for
//! broadcasts. Every id that crosses a process boundary is checked here, once, so the hub,
//! the bridge and the registry agree on what a name is.

use std::{fmt, str::FromStr, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest id the grammar admits.
pub const MAX_ID_LEN: usize = 64;

/// The reserved recipient meaning "every session".
pub const BROADCAST: &str = "all";

/// Why a string is not a session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is empty.
    #[error("session id is empty")]
    Empty,
    /// Longer than [`MAX_ID_LEN`] bytes.
    #[error("session id is {0} characters long; the limit is {MAX_ID_LEN}")]
    TooLong(usize),
    /// Must start with an ASCII letter.
    #[error("session id must start with a letter (A-Z, a-z)")]
    BadStart,
    /// Contains a character outside `[A-Za-z0-9_-]`.
    #[error("session id may only contain letters, digits, '_' and '-' (found {0:?})")]
    BadChar(char),
    /// `all` names every session and cannot be held by one.
    #[error("'all' is reserved for broadcasts")]
    Reserved,
}

/// A validated session id. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Arc<str>);

impl SessionId {
    /// Validates `s` against the grammar.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        validate(s)?;
        Ok(Self(Arc::from(s)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks `s` against the session id grammar without allocating.
pub fn validate(s: &str) -> Result<(), IdError> {
    let mut chars = s.chars();
    let first = chars.next().ok_or(IdError::Empty)?;
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(s.chars().count()));
    }
    if !first.is_ascii_alphabetic() {
        return Err(IdError::BadStart);
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(IdError::BadChar(bad));
    }
    if s.eq_ignore_ascii_case(BROADCAST) {
        return Err(IdError::Reserved);
    }
    Ok(())
}

impl FromStr for SessionId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for SessionId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for SessionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_grammar() {
        for ok in [
            "CC-1",
            "a",
            "CODEX2",
            "laptop-3f2k",
            "A_b-C",
            &"x".repeat(64),
        ] {
            assert!(SessionId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(validate(""), Err(IdError::Empty));
        assert_eq!(validate("1abc"), Err(IdError::BadStart));
        assert_eq!(validate("-x"), Err(IdError::BadStart));
        assert_eq!(validate("a b"), Err(IdError::BadChar(' ')));
        assert_eq!(validate("é"), Err(IdError::BadStart));
        assert_eq!(validate("aé"), Err(IdError::BadChar('é')));
        assert_eq!(validate("a/b"), Err(IdError::BadChar('/')));
        assert_eq!(validate(&"x".repeat(65)), Err(IdError::TooLong(65)));
        assert_eq!(validate("all"), Err(IdError::Reserved));
        assert_eq!(validate("ALL"), Err(IdError::Reserved));
        assert!(validate("allison").is_ok());
    }

    #[test]
    fn serde_round_trip_validates() {
        let id: SessionId = serde_json::from_str("\"CC-2\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"CC-2\"");
        assert!(serde_json::from_str::<SessionId>("\"all\"").is_err());
    }
}
