//! One queued message on disk: what a resend needs (the idempotency key, the recipient and
//! the text — exactly the `message` frame the first attempt would have sent) plus its
//! bookkeeping (when it was queued, attempts, the last error).
//!
//! Format: one JSON object per file, `NNNNNNNNNNNNNNNNNNNN.msg` (20-digit sequence number,
//! so names sort in queue order), written whole to a temporary file, fsync'd, then renamed
//! into place (see `docs/BRIDGE.md`, "Offline outbox"). A file is therefore either absent or
//! complete; a crash mid-write leaves only a `.tmp-*` file, which is never read as an entry.

use std::{fs, io, path::Path};

use relay_proto::wire::{ClientFrame, SendMessage};
use serde::{Deserialize, Serialize};

/// Suffix of a queued entry.
pub(crate) const QUEUED: &str = "msg";
/// Suffix of an entry the hub refused for good (kept until the bridge has reported it).
pub(crate) const REJECTED: &str = "rejected";
/// Suffix of a file that is not a readable entry (damage from outside); kept for a human.
pub(crate) const CORRUPT: &str = "corrupt";

/// Version of the on-disk format, stored in every file.
const FORMAT: u32 = 1;

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the queue (from the file name; not stored inside the file).
    #[serde(skip)]
    pub seq: u64,
    /// Format version.
    v: u32,
    /// The idempotency key the message is (re)sent with — the hub stores a (sender, key)
    /// pair at most once, so every resend of this entry is safe.
    pub key: String,
    /// Recipient session id, or `all`.
    pub to: String,
    /// The message text.
    pub content: String,
    /// The id of the message it answers, if it is a reply (absent from entries written
    /// before replies existed, which read as answering nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// When it was queued, Unix ms.
    pub queued_at_ms: i64,
    /// Send attempts that failed so far.
    pub attempts: u32,
    /// Why the last attempt failed (or, for a rejected entry, why the hub refused it).
    pub last_error: Option<String>,
}

impl Entry {
    pub(crate) fn new(key: &str, to: &str, content: &str, queued_at_ms: i64) -> Self {
        Self {
            seq: 0,
            v: FORMAT,
            key: key.to_string(),
            to: to.to_string(),
            content: content.to_string(),
            reply_to: None,
            queued_at_ms,
            attempts: 0,
            last_error: None,
        }
    }

    /// The `message` frame that (re)sends this entry: same recipient, same text, same key,
    /// same `replyTo`.
    /// The caller sets the request id.
    pub fn frame(&self) -> ClientFrame {
        ClientFrame::Message(SendMessage {
            to: Some(self.to.clone()),
            content: self.content.clone(),
            key: Some(self.key.clone()),
            reply_to: self.reply_to.clone(),
            rid: None,
        })
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).expect("an entry always serializes");
        bytes.push(b'\n');
        bytes
    }
}

/// The file name of entry `seq` with `suffix`.
pub(crate) fn file_name(seq: u64, suffix: &str) -> String {
    format!("{seq:020}.{suffix}")
}

/// `(seq, suffix)` of a file name this module wrote, else `None`.
pub(crate) fn parse_name(name: &str) -> Option<(u64, &str)> {
    let (stem, suffix) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let suffix = [QUEUED, REJECTED, CORRUPT]
        .into_iter()
        .find(|s| *s == suffix)?;
    Some((stem.parse().ok()?, suffix))
}

/// Reads the entry in `path` (named for `seq`). `Ok(None)`: no such file. `Err` with
/// `InvalidData`: the file is not an entry.
pub(crate) fn read(path: &Path, seq: u64, max_bytes: u64) -> io::Result<Option<Entry>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.len() as u64 > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} bytes, more than an entry can be", bytes.len()),
        ));
    }
    let mut entry: Entry = serde_json::from_slice(&bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if entry.v != FORMAT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown outbox format {}", entry.v),
        ));
    }
    entry.seq = seq;
    Ok(Some(entry))
}
