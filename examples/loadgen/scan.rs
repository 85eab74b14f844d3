//! Reading the hub's frames cheaply: the two that arrive at load rate (`message`, `sent`) are
//! recognised by byte scanning; everything else (rare) goes through the real wire types.
//!
//! Why hand-rolled: the generator runs on one thread next to the hub on a 2-core machine, so
//! every microsecond it spends per frame is a microsecond taken from the hub. The fast path
//! relies only on what the protocol fixes (field names, and that `type` comes first in the
//! hub's serialization); when a frame does not look as expected it falls back to
//! `serde_json`, so an unexpected but valid frame is never misread.

use relay_proto::wire::ServerFrame;

/// What a hub frame means to the generator.
#[derive(Debug)]
pub(crate) enum Incoming<'a> {
    /// A `message`: who it claims to be from, whom it is addressed to, and its content.
    Message {
        /// `from` as the hub set it.
        from: &'a str,
        /// `to` (a session id or `all`).
        to: &'a str,
        /// `content`, still JSON-escaped (our bodies never need escaping).
        content: &'a [u8],
    },
    /// A `sent` ack; `delivered` as the hub reported it.
    Sent {
        /// Whether a live connection took it.
        delivered: bool,
    },
    /// Anything else, fully parsed.
    Other(Box<ServerFrame>),
    /// Not a frame we could read at all.
    Garbage,
}

/// The string value of `"key":"…"` (no escapes inside) at or after `from`.
fn string_field<'a>(text: &'a str, key: &str, from: usize) -> Option<(&'a str, usize)> {
    let at = from + text[from..].find(key)?;
    let start = at + key.len();
    let len = text[start..].find('"')?;
    let value = &text[start..start + len];
    if value.contains('\\') {
        return None;
    }
    Some((value, start + len))
}

/// Classifies one text frame from the hub.
pub(crate) fn classify(text: &str) -> Incoming<'_> {
    if text.starts_with(r#"{"type":"message","#)
        && let Some((from, after_from)) = string_field(text, r#""from":""#, 0)
        && let Some((to, after_to)) = string_field(text, r#""to":""#, after_from)
        && let Some((content, _)) = string_field(text, r#""content":""#, after_to)
    {
        return Incoming::Message {
            from,
            to,
            content: content.as_bytes(),
        };
    }
    if text.starts_with(r#"{"type":"sent","#)
        && let Some(at) = text.find(r#""delivered":"#)
    {
        let v = &text.as_bytes()[at + 12..];
        if v.starts_with(b"true") || v.starts_with(b"false") {
            return Incoming::Sent {
                delivered: v[0] == b't',
            };
        }
    }
    match serde_json::from_str::<ServerFrame>(text) {
        Ok(ServerFrame::Message(e)) => {
            // A valid message the fast path could not slice (escapes in it): not one of ours,
            // but it must be seen rather than dropped.
            Incoming::Other(Box::new(ServerFrame::Message(e)))
        }
        Ok(ServerFrame::Sent(s)) => Incoming::Sent {
            delivered: s.delivered,
        },
        Ok(f) => Incoming::Other(Box::new(f)),
        Err(_) => Incoming::Garbage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_proto::wire::{Envelope, Sent};

    fn hub_message(from: &str, to: &str, content: &str) -> String {
        // Serialized exactly as the hub does it.
        serde_json::to_string(&ServerFrame::Message(Envelope {
            id: "abc-17".into(),
            from: from.into(),
            to: to.into(),
            content: content.into(),
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            seq: 17,
            task: None,
            reply_to: None,
            thread: None,
        }))
        .unwrap()
    }

    #[test]
    fn message_fast_path_slices_fields() {
        let f = hub_message("lg-0", "lg-1", "LG0000ffff");
        match classify(&f) {
            Incoming::Message { from, to, content } => {
                assert_eq!((from, to, content), ("lg-0", "lg-1", &b"LG0000ffff"[..]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn escaped_content_falls_back_to_the_parser() {
        let f = hub_message("a", "b", "say \"hi\"");
        assert!(
            matches!(classify(&f), Incoming::Other(f) if matches!(*f, ServerFrame::Message(_)))
        );
    }

    #[test]
    fn sent_acks() {
        let f = serde_json::to_string(&ServerFrame::Sent(Sent {
            id: "e-1".into(),
            to: "all".into(),
            delivered: false,
            seq: 1,
            timestamp: Some("t".into()),
            recipients: Some(0),
            duplicate: false,
            rid: None,
        }))
        .unwrap();
        assert!(matches!(classify(&f), Incoming::Sent { delivered: false }));
        let f = f.replace("false", "true");
        assert!(matches!(classify(&f), Incoming::Sent { delivered: true }));
    }

    #[test]
    fn other_frames_and_garbage() {
        let f = r#"{"type":"error","message":"rate limited","code":"rate_limited","retryAfterMs":3,"rid":9}"#;
        assert!(matches!(classify(f), Incoming::Other(e) if matches!(*e, ServerFrame::Error(_))));
        assert!(matches!(
            classify(r#"{"type":"peer_joined","clientId":"x"}"#),
            Incoming::Other(_)
        ));
        assert!(matches!(classify("{not json"), Incoming::Garbage));
    }
}
