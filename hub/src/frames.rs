//! The two frames on the hot path — a routed `message` and its `sent` ack — written straight
//! from the stored message into one buffer, without building the owned [`Envelope`] /
//! [`Sent`] structs or going through serde's field machinery (they were a fifth of the hub's
//! instructions per delivery). Only the content and the request id need JSON escaping; the
//! rest (session ids, epoch, digits, times) cannot contain anything that would. The bytes are
//! exactly what serializing the `relay_proto::wire` types gives, which the tests check.
//!
//! [`Envelope`]: relay_proto::wire::Envelope
//! [`Sent`]: relay_proto::wire::Sent

use std::cell::Cell;

use relay_proto::{time::Iso, wire::RequestId};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::store::StoredMessage;

/// The `sent` ack of a stored message.
pub(crate) struct SentOut<'a> {
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
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn id(out: &mut Vec<u8>, epoch: &str, seq: u64) {
    out.push(b'"');
    raw(out, epoch);
    out.push(b'-');
    num(out, seq);
    out.push(b'"');
}

thread_local! {
    /// The last time written and its bytes: a message and its `sent` carry the same time,
    /// and under load many messages share a millisecond, so most times are copied rather
    /// than worked out again (computing each was 1.4 % of the hub's instructions per
    /// delivery, docs/BENCHMARKS.md, "Routing").
    static LAST_TIME: Cell<Option<(i64, [u8; 24])>> = const { Cell::new(None) };
}

fn time(out: &mut Vec<u8>, ms: i64) {
    out.push(b'"');
    let known = LAST_TIME.with(|last| match last.get() {
        Some((at, b)) if at == ms => Some(b),
        _ => {
            let b = Iso(ms).bytes();
            last.set(b.map(|b| (ms, b)));
            b
        }
    });
    match known {
        Some(b) => out.extend_from_slice(&b),
        None => {
            use std::io::Write;
            let _ = write!(out, "{}", Iso(ms));
        }
    }
    out.push(b'"');
}

fn done(out: Vec<u8>) -> Utf8Bytes {
    Utf8Bytes::try_from(out).expect("frames are built from UTF-8 pieces")
}

/// What a [`message`] frame can take, so it is written into one allocation: a fixed guess
/// came short of a 100-byte message with its ids and time, and every frame grew its buffer
/// once (docs/BENCHMARKS.md, "Routing"). The keys, quotes, a time and two numbers of up to
/// 20 digits are 144 bytes, a reply's two ids 67 more; content that needs escaping gets an
/// eighth more and may still grow it.
fn message_capacity(epoch: &str, m: &StoredMessage) -> usize {
    let reply = if m.reply.is_some() {
        67 + 2 * epoch.len()
    } else {
        0
    };
    144 + epoch.len() + m.from.len() + m.to.len() + m.content.len() + m.content.len() / 8 + reply
}

/// What a [`sent`] frame can take, likewise: 184 bytes of keys, quotes, a time and numbers,
/// and the request id (a string's escapes aside).
fn sent_capacity(ack: &SentOut<'_>) -> usize {
    let rid = match ack.rid {
        Some(RequestId::Str(s)) => s.len() + 2,
        Some(RequestId::Int(_)) => 20,
        None => 0,
    };
    184 + ack.epoch.len() + ack.to.len() + rid
}

/// The `message` frame recipients get:
/// `{"type":"message","id":…,"from":…,"to":…,"content":…,"timestamp":…,"seq":…}`, plus
/// `"replyTo":…,"thread":…` on a reply.
pub(crate) fn message(epoch: &str, m: &StoredMessage) -> Utf8Bytes {
    let mut out = Vec::with_capacity(message_capacity(epoch, m));
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
    if let Some(r) = m.reply {
        out.extend_from_slice(br#","replyTo":"#);
        id(&mut out, epoch, r.to);
        out.extend_from_slice(br#","thread":"#);
        id(&mut out, epoch, r.thread);
    }
    out.push(b'}');
    done(out)
}

/// The `sent` frame the sender gets.
pub(crate) fn sent(ack: &SentOut<'_>) -> Utf8Bytes {
    let mut out = Vec::with_capacity(sent_capacity(ack));
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

/// `registered`, with the peer list already rendered as a JSON array (see
/// [`Router::online_json`](crate::router::Router::online_json)): a registration storm would
/// otherwise clone and serialize every name again for every joiner.
pub(crate) struct RegisteredOut<'a> {
    /// The id now held.
    pub client_id: &'a str,
    /// JSON array of the other online ids (for a delta client: the first page of them).
    pub peers_json: &'a str,
    /// For a delta client: how many other sessions are online in all.
    pub peers_total: Option<u64>,
    /// Store epoch.
    pub epoch: &'a str,
    /// Unread count, if known.
    pub unread: Option<u64>,
    /// A newly minted owner secret.
    pub owner_secret: Option<&'a str>,
    /// Whether the name is owned.
    pub owned: Option<bool>,
    /// Echoed request id.
    pub rid: Option<&'a RequestId>,
}

/// The `registered` frame.
pub(crate) fn registered(r: &RegisteredOut<'_>) -> Utf8Bytes {
    let mut out = Vec::with_capacity(128 + r.peers_json.len());
    out.extend_from_slice(br#"{"type":"registered","clientId":""#);
    raw(&mut out, r.client_id);
    out.extend_from_slice(br#"","peers":"#);
    out.extend_from_slice(r.peers_json.as_bytes());
    if let Some(n) = r.peers_total {
        out.extend_from_slice(br#","peersTotal":"#);
        num(&mut out, n);
    }
    out.extend_from_slice(br#","epoch":""#);
    raw(&mut out, r.epoch);
    out.push(b'"');
    if let Some(n) = r.unread {
        out.extend_from_slice(br#","unread":"#);
        num(&mut out, n);
    }
    if let Some(secret) = r.owner_secret {
        out.extend_from_slice(br#","ownerSecret":""#);
        raw(&mut out, secret);
        out.push(b'"');
    }
    if let Some(owned) = r.owned {
        out.extend_from_slice(if owned {
            br#","owned":true"#
        } else {
            br#","owned":false"#
        });
    }
    if let Some(rid) = r.rid {
        out.extend_from_slice(br#","rid":"#);
        serde_json::to_writer(&mut out, rid).expect("a request id always serializes");
    }
    out.push(b'}');
    done(out)
}

/// `peer_joined` / `peer_left` in the Node relay's format, with the whole (pre-rendered)
/// peer list.
pub(crate) fn presence_full(joined: bool, client_id: &str, peers_json: &str) -> Utf8Bytes {
    let mut out = Vec::with_capacity(64 + peers_json.len());
    out.extend_from_slice(if joined {
        br#"{"type":"peer_joined","clientId":""#
    } else {
        br#"{"type":"peer_left","clientId":""#
    });
    raw(&mut out, client_id);
    out.extend_from_slice(br#"","peers":"#);
    out.extend_from_slice(peers_json.as_bytes());
    out.push(b'}');
    done(out)
}

/// A JSON array of session ids (which need no escaping).
pub(crate) fn id_array<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (i, id) in ids.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(id);
        out.push('"');
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use relay_proto::wire::{Sent, ServerFrame};

    use super::*;

    fn stored(content: &str) -> StoredMessage {
        StoredMessage {
            seq: 42,
            ts: 1_795_462_667_123,
            from: Arc::from("CC-1"),
            to: Arc::from("CC-2"),
            content: content.into(),
            reply: None,
        }
    }

    #[test]
    fn message_bytes_match_the_wire_type() {
        let reply = Some(crate::store::Reply { to: 40, thread: 3 });
        for (content, reply) in [
            ("hi", None),
            ("quote \" backslash \\ newline \n tab \t ü 🦀 \u{1}", None),
            ("an answer", reply),
        ] {
            let m = StoredMessage {
                reply,
                ..stored(content)
            };
            let fast = message("ab12cd34", &m);
            let slow =
                serde_json::to_string(&ServerFrame::Message(m.clone().into_envelope("ab12cd34")))
                    .unwrap();
            assert_eq!(fast.as_str(), slow);
        }
    }

    #[test]
    fn each_time_is_its_own_whatever_came_before() {
        let far = 253_402_300_800_000; // year 10000: not the fixed 24 bytes
        for ms in [5, 5, 1_795_462_667_123, 5, far, far, 5, -1] {
            let mut out = Vec::new();
            time(&mut out, ms);
            let iso = relay_proto::time::iso(ms);
            assert_eq!(out, format!("\"{iso}\"").into_bytes());
        }
    }

    #[test]
    fn the_hot_frames_fit_the_buffer_they_start_with() {
        let epoch = "0123456789abcdef";
        let m = StoredMessage {
            seq: u64::MAX,
            ts: 253_402_300_799_999,
            from: Arc::from("a".repeat(64)),
            to: Arc::from("b".repeat(64)),
            reply: Some(crate::store::Reply {
                to: u64::MAX,
                thread: u64::MAX,
            }),
            ..stored("7 bytes") // under 8: no slack for escapes
        };
        assert!(message(epoch, &m).len() <= message_capacity(epoch, &m));
        let rid = RequestId::Str("r".repeat(40));
        for rid in [Some(&rid), Some(&RequestId::Int(i64::MIN)), None] {
            let ack = SentOut {
                epoch,
                seq: u64::MAX,
                to: &m.to,
                delivered: false,
                ts: Some(m.ts),
                recipients: Some(u32::MAX),
                duplicate: true,
                rid,
            };
            assert!(sent(&ack).len() <= sent_capacity(&ack), "{rid:?}");
        }
    }

    #[test]
    fn registered_and_presence_bytes_match_the_wire_types() {
        use relay_proto::wire::{Presence, Registered};
        let peers = vec!["CC-1".to_string(), "CC-3".to_string()];
        let json = id_array(peers.iter().map(String::as_str));
        let rid = RequestId::Int(9);
        for (unread, secret, owned, rid, total) in [
            (Some(3), Some("ab12"), Some(true), Some(&rid), None),
            (None, None, None, None, Some(7)),
            (Some(0), None, Some(false), None, Some(2)),
        ] {
            let fast = registered(&RegisteredOut {
                client_id: "CC-2",
                peers_json: &json,
                peers_total: total,
                epoch: "e1",
                unread,
                owner_secret: secret,
                owned,
                rid,
            });
            let slow = serde_json::to_string(&ServerFrame::Registered(Registered {
                client_id: "CC-2".into(),
                peers: peers.clone(),
                peers_total: total,
                epoch: Some("e1".into()),
                unread,
                owner_secret: secret.map(str::to_string),
                owned,
                rid: rid.cloned(),
            }))
            .unwrap();
            assert_eq!(fast.as_str(), slow);
        }
        assert_eq!(id_array(std::iter::empty()), "[]");
        for joined in [true, false] {
            let change = Presence {
                client_id: "CC-9".into(),
                peers: Some(peers.clone()),
            };
            let slow = serde_json::to_string(&if joined {
                ServerFrame::PeerJoined(change)
            } else {
                ServerFrame::PeerLeft(change)
            })
            .unwrap();
            assert_eq!(presence_full(joined, "CC-9", &json).as_str(), slow);
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
                timestamp: ts.map(relay_proto::time::iso),
                recipients,
                duplicate,
                rid: rid.cloned(),
            }))
            .unwrap();
            assert_eq!(fast.as_str(), slow);
        }
    }
}
