//! Turning a text frame into a [`ClientFrame`], or into an error a client can act on.
//!
//! serde's own messages are precise but terse; this adds which frame was wrong and, for an
//! unknown `type`, which types exist. The request id is recovered even from a frame that
//! failed to parse, so the `error` reply can be matched to the request.

use sessions::wire::{ClientFrame, RequestId, codes};

/// The frame types this hub understands (for "unknown type" errors).
pub const KNOWN_TYPES: &[&str] = &[
    "register",
    "message",
    "get_history",
    "get_peers",
    "get_sessions",
    "ping",
    "receive",
    "mark_read",
    "get_status",
    "release",
    "watch",
    "subscribe",
    "forget",
    "task_create",
    "task_act",
    "task_list",
    "task_get",
    "blob_put",
    "task_bundle",
    "task_reserve",
];

/// Characters of serde's explanation quoted in an error reply.
const MAX_DETAIL: usize = 300;

/// A frame that could not be parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// What was wrong.
    pub message: String,
    /// Machine-readable kind.
    pub code: &'static str,
    /// The frame's request id, if one could be read.
    pub rid: Option<RequestId>,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<ClientFrame, ParseError> {
    // The hot path: every client we know writes `type` first, and for a `message` that
    // means one straight pass into its fields instead of serde's internally-tagged route,
    // which first buffers every field into a tree. (`type` is an unknown field to
    // `SendMessage`, so it is skipped.) Anything else, or any error, takes the general path.
    if let Some(rest) = text.strip_prefix(r#"{"type":"message","#)
        && !rest.is_empty()
        && let Ok(m) = serde_json::from_str::<sessions::wire::SendMessage>(text)
    {
        return Ok(ClientFrame::Message(m));
    }
    let err = match serde_json::from_str::<ClientFrame>(text) {
        Ok(f) => return Ok(f),
        Err(e) => e,
    };
    use serde_json::error::Category;
    if matches!(
        err.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) {
        return Err(ParseError {
            message: format!("malformed JSON: {err}"),
            code: codes::BAD_JSON,
            rid: None,
        });
    }
    // Valid JSON that is not a valid frame: find out why, in terms of the protocol.
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Err(ParseError {
                message: format!("malformed JSON: {e}"),
                code: codes::BAD_JSON,
                rid: None,
            });
        }
    };
    let Some(obj) = value.as_object() else {
        return Err(ParseError {
            message: "a frame must be a JSON object with a \"type\" field".into(),
            code: codes::BAD_FRAME,
            rid: None,
        });
    };
    let rid = obj
        .get("rid")
        .and_then(|r| serde_json::from_value::<RequestId>(r.clone()).ok());
    let Some(ty) = obj.get("type") else {
        return Err(ParseError {
            message: "missing \"type\" field".into(),
            code: codes::BAD_FRAME,
            rid,
        });
    };
    let Some(ty) = ty.as_str() else {
        return Err(ParseError {
            message: format!("\"type\" must be a string, got {ty}"),
            code: codes::BAD_FRAME,
            rid,
        });
    };
    if !KNOWN_TYPES.contains(&ty) {
        let shown: String = ty.chars().take(64).collect();
        return Err(ParseError {
            message: format!(
                "unknown frame type {shown:?}; known types: {}",
                KNOWN_TYPES.join(", ")
            ),
            code: codes::UNKNOWN_TYPE,
            rid,
        });
    }
    let detail = err.to_string();
    let detail = detail.split(" at line ").next().unwrap_or(&detail);
    // serde quotes the offending value, which may be most of a 1 MiB frame: an error reply
    // stays short whatever the frame was.
    let detail: String = detail.chars().take(MAX_DETAIL).collect();
    Err(ParseError {
        message: format!("invalid {ty} frame: {detail}"),
        code: codes::BAD_FRAME,
        rid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_was_wrong() {
        let e = parse("{not json").unwrap_err();
        assert_eq!(e.code, codes::BAD_JSON);
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);

        let e = parse(r#"{"type":"message","content":5,"rid":3}"#).unwrap_err();
        assert_eq!(e.code, codes::BAD_FRAME);
        assert_eq!(e.rid, Some(RequestId::Int(3)));
        assert!(e.message.contains("invalid message frame"), "{}", e.message);
        assert!(e.message.contains("expected a string"), "{}", e.message);

        let e = parse(r#"{"type":"fly","rid":"x"}"#).unwrap_err();
        assert_eq!(e.code, codes::UNKNOWN_TYPE);
        assert_eq!(e.rid, Some(RequestId::Str("x".into())));

        assert_eq!(parse("[1,2]").unwrap_err().code, codes::BAD_FRAME);
        assert_eq!(parse(r#"{"to":"x"}"#).unwrap_err().code, codes::BAD_FRAME);
        assert_eq!(parse(r#"{"type":7}"#).unwrap_err().code, codes::BAD_FRAME);
        let e = parse(r#"{"type":"message"}"#).unwrap_err();
        assert!(
            e.message.contains("missing field `content`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_message_fast_path_reads_what_the_general_path_does() {
        for text in [
            r#"{"type":"message","to":"CC-2","content":"hi","rid":3}"#,
            r#"{"type":"message","content":"esc \" \n ü","key":"k","from":"spoof","x":[1,{"a":2}]}"#,
        ] {
            let fast = parse(text).unwrap();
            let general: ClientFrame = serde_json::from_str(text).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{general:?}"));
        }
        // A second `type` must not sneak another frame kind past the fast path.
        let e = parse(r#"{"type":"message","type":"ping","content":"x"}"#);
        assert!(!matches!(e, Ok(ClientFrame::Ping(_))), "{e:?}");
        let e = parse(r#"{"type":"message","content":5}"#).unwrap_err();
        assert_eq!(e.code, codes::BAD_FRAME);
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse(&deep).unwrap_err().code, codes::BAD_JSON);
        let deep = format!(
            r#"{{"type":"ping","x":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(parse(&deep).is_err());
    }
}
