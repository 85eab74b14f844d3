//! The message body every load message carries, and the `message` frame around it.
//!
//! The body says who sent it, to whom, which number it is in its sender's stream and when it
//! was written (nanoseconds on this process's one monotonic clock), so the receiving side can
//! check exactly-once, in-order, correctly-routed delivery and measure one-way latency without
//! any shared state beyond the clock. It is fixed-width lowercase hex padded with `x` to the
//! requested size: nothing in it needs JSON escaping, so the hub's envelope carries it verbatim
//! and the receiver can slice it out of the frame without a JSON parser.
//!
//! Layout: `LG` + sender (4 hex) + target (4 hex, `ffff` = broadcast) + counter (12 hex) +
//! send time in ns (16 hex), then padding.

/// Bytes of the fixed part; bodies are at least this long.
pub(crate) const HEADER: usize = 2 + 4 + 4 + 12 + 16;
/// Target value meaning "broadcast to all".
pub(crate) const ALL: u16 = 0xffff;

/// What a body says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Body {
    /// Index of the sending client.
    pub sender: u16,
    /// Index of the intended recipient, or [`ALL`].
    pub target: u16,
    /// Position in the sender's stream (0, 1, 2, …).
    pub counter: u64,
    /// When it was written, ns since the generator's clock base.
    pub sent_ns: u64,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn put_hex(out: &mut Vec<u8>, v: u64, digits: usize) {
    for i in (0..digits).rev() {
        out.push(HEX[((v >> (i * 4)) & 0xf) as usize]);
    }
}

fn get_hex(s: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

impl Body {
    /// Appends the body, padded to `len` bytes (at least [`HEADER`]), to `out`.
    pub(crate) fn encode_into(&self, len: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(b"LG");
        put_hex(out, self.sender as u64, 4);
        put_hex(out, self.target as u64, 4);
        put_hex(out, self.counter & 0xffff_ffff_ffff, 12);
        put_hex(out, self.sent_ns, 16);
        out.resize(out.len() + len.saturating_sub(HEADER), b'x');
    }

    /// Reads a body written by [`encode_into`](Self::encode_into); `None` if it is not one.
    pub(crate) fn decode(s: &[u8]) -> Option<Body> {
        if s.len() < HEADER || &s[..2] != b"LG" {
            return None;
        }
        Some(Body {
            sender: get_hex(&s[2..6])? as u16,
            target: get_hex(&s[6..10])? as u16,
            counter: get_hex(&s[10..22])?,
            sent_ns: get_hex(&s[22..38])?,
        })
    }
}

/// Builds a complete `message` frame: `{"type":"message","to":TO,"content":BODY,"rid":N}`.
/// The request id is the body's counter, so an `error` reply names the message it refused.
pub(crate) fn message_frame(to: &str, body: &Body, body_len: usize) -> String {
    let mut out = Vec::with_capacity(body_len + to.len() + 64);
    out.extend_from_slice(br#"{"type":"message","to":""#);
    out.extend_from_slice(to.as_bytes());
    out.extend_from_slice(br#"","content":""#);
    body.encode_into(body_len, &mut out);
    out.extend_from_slice(br#"","rid":"#);
    out.extend_from_slice(body.counter.to_string().as_bytes());
    out.push(b'}');
    // Only ASCII was written: session ids are ASCII by the protocol's grammar, the rest is ours.
    String::from_utf8(out).expect("frames are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_exact_length() {
        let b = Body {
            sender: 9,
            target: ALL,
            counter: 123_456_789,
            sent_ns: 0xdead_beef_0123,
        };
        for len in [HEADER, 100, 1000] {
            let mut out = Vec::new();
            b.encode_into(len, &mut out);
            assert_eq!(out.len(), len);
            assert_eq!(Body::decode(&out), Some(b));
        }
        let mut short = Vec::new();
        b.encode_into(10, &mut short);
        assert_eq!(short.len(), HEADER, "never shorter than the header");
    }

    #[test]
    fn rejects_what_is_not_a_body() {
        assert_eq!(Body::decode(b"hello"), None);
        let mut out = Vec::new();
        Body {
            sender: 1,
            target: 2,
            counter: 3,
            sent_ns: 4,
        }
        .encode_into(100, &mut out);
        let mut bad = out.clone();
        bad[0] = b'X';
        assert_eq!(Body::decode(&bad), None);
        let mut bad = out.clone();
        bad[12] = b'G';
        assert_eq!(Body::decode(&bad), None);
        assert_eq!(Body::decode(&out[..HEADER - 1]), None);
    }

    #[test]
    fn frame_is_a_valid_protocol_message() {
        let body = Body {
            sender: 0,
            target: 1,
            counter: 42,
            sent_ns: 7,
        };
        let f = message_frame("lg-1", &body, 100);
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["to"], "lg-1");
        assert_eq!(v["rid"], 42);
        let content = v["content"].as_str().unwrap();
        assert_eq!(content.len(), 100);
        assert_eq!(Body::decode(content.as_bytes()), Some(body));
        // And the hub's parser accepts it.
        let parsed: relay_proto::wire::ClientFrame = serde_json::from_str(&f).unwrap();
        assert!(matches!(parsed, relay_proto::wire::ClientFrame::Message(_)));
    }
}
