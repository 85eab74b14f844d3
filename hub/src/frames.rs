//! The two frames on the hot path — a routed `message` and its `sent` ack — written straight
//! from the stored message into one buffer, without building the owned [`Envelope`] /
//! [`Sent`] structs or going through serde's field machinery (they were a fifth of the hub's
//! instructions per delivery). Only the content and the request id need JSON escaping; the
//! rest (session ids, epoch, digits, times) cannot contain anything that would. The bytes are
//! exactly what serializing the `sessions::wire` types gives, which the tests check.
//!
//! [`Envelope`]: sessions::wire::Envelope
//! [`Sent`]: sessions::wire::Sent

use sessions::{time::Iso, wire::RequestId};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::store::StoredMessage;

/// The `sent` ack of a stored message.
pub struct SentOut<'a> {
    /// The store epoch (for the id).
    pub epoch: &'a str,
    /// Sequence number.
    pub seq: u64,
    /// Recipient id or `all`.
    pub to: &'a str,
    /// Whether a live connection took it.
    pub delivered: bool,
    /// When it was stored (omitted for duplicates).
    pub ts: Option<i64>,
    /// For broadcasts: how many took it.
    pub recipients: Option<u32>,
    /// The key matched an earlier send.
    pub duplicate: bool,
    /// Echoed request id.
    pub rid: Option<&'a RequestId>,
}

/// Appends text that needs no JSON escaping: session ids (their grammar is
/// `[A-Za-z0-9_-]`), `all`, the hex epoch, digits and ISO times.
fn raw(out: &mut Vec<u8>, s: &str) {
    debug_assert!(!s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20));
    out.extend_from_slice(s.as_bytes());
}

fn num(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn id(out: &mut Vec<u8>, epoch: &str, seq: u64) {
    out.push(b'"');
    raw(out, epoch);
    out.push(b'-');
    num(out, seq);
    out.push(b'"');
}

fn time(out: &mut Vec<u8>, ms: i64) {
    use std::io::Write;
    out.push(b'"');
    let _ = write!(out, "{}", Iso(ms));
    out.push(b'"');
}

fn done(out: Vec<u8>) -> Utf8Bytes {
    Utf8Bytes::try_from(out).expect("frames are built from UTF-8 pieces")
}

/// The `message` frame recipients get:
/// `{"type":"message","id":…,"from":…,"to":…,"content":…,"timestamp":…,"seq":…}`.
pub fn message(epoch: &str, m: &StoredMessage) -> Utf8Bytes {
    let mut out = Vec::with_capacity(128 + m.content.len() + m.content.len() / 8);
    out.extend_from_slice(br#"{"type":"message","id":"#);
    id(&mut out, epoch, m.seq);
    out.extend_from_slice(br#","from":""#);
    raw(&mut out, &m.from);
    out.extend_from_slice(br#"","to":""#);
    raw(&mut out, &m.to);
    out.extend_from_slice(br#"","content":"#);
    serde_json::to_writer(&mut out, &m.content).expect("a string always serializes");
    out.extend_from_slice(br#","timestamp":"#);
    time(&mut out, m.ts);
    out.extend_from_slice(br#","seq":"#);
    num(&mut out, m.seq);
    out.push(b'}');
    done(out)
}

/// The `sent` frame the sender gets.
pub fn sent(ack: &SentOut<'_>) -> Utf8Bytes {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(br#"{"type":"sent","id":"#);
    id(&mut out, ack.epoch, ack.seq);
    out.extend_from_slice(br#","to":""#);
    raw(&mut out, ack.to);
    out.extend_from_slice(if ack.delivered {
        br#"","delivered":true,"seq":"#
    } else {
        br#"","delivered":false,"seq":"#
    });
    num(&mut out, ack.seq);
    if let Some(ts) = ack.ts {
        out.extend_from_slice(br#","timestamp":"#);
        time(&mut out, ts);
    }
    if let Some(n) = ack.recipients {
        out.extend_from_slice(br#","recipients":"#);
        num(&mut out, n.into());
    }
    if ack.duplicate {
        out.extend_from_slice(br#","duplicate":true"#);
    }
    if let Some(rid) = ack.rid {
        out.extend_from_slice(br#","rid":"#);
        serde_json::to_writer(&mut out, rid).expect("a request id always serializes");
    }
    out.push(b'}');
    done(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sessions::wire::{Sent, ServerFrame};

    use super::*;

    fn stored(content: &str) -> StoredMessage {
        StoredMessage {
            seq: 42,
            ts: 1_795_462_667_123,
            from: Arc::from("CC-1"),
            to: Arc::from("CC-2"),
            content: content.into(),
        }
    }

    #[test]
    fn message_bytes_match_the_wire_type() {
        for content in ["hi", "quote \" backslash \\ newline \n tab \t ü 🦀 \u{1}"] {
            let m = stored(content);
            let fast = message("ab12cd34", &m);
            let slow =
                serde_json::to_string(&ServerFrame::Message(m.clone().into_envelope("ab12cd34")))
                    .unwrap();
            assert_eq!(fast.as_str(), slow);
        }
    }

    #[test]
    fn sent_bytes_match_the_wire_type() {
        let rid = RequestId::Str("r1".into());
        for (ts, recipients, duplicate, rid) in [
            (Some(1_795_462_667_123), None, false, Some(&rid)),
            (None, Some(3), true, None),
        ] {
            let fast = sent(&SentOut {
                epoch: "ab12cd34",
                seq: 7,
                to: "all",
                delivered: true,
                ts,
                recipients,
                duplicate,
                rid,
            });
            let slow = serde_json::to_string(&ServerFrame::Sent(Sent {
                id: "ab12cd34-7".into(),
                to: "all".into(),
                delivered: true,
                seq: 7,
                timestamp: ts.map(sessions::time::iso),
                recipients,
                duplicate,
                rid: rid.cloned(),
            }))
            .unwrap();
            assert_eq!(fast.as_str(), slow);
        }
    }
}
