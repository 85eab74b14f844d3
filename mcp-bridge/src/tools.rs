//! The tools the model sees: their definitions (hand-written JSON schemas, short on purpose —
//! every definition is context the model pays for on every turn) and the parsing of their
//! arguments into [`ToolCall`].
//!
//! Arguments are checked here, by hand, so every mistake gets a message that says exactly
//! what was wrong and how to fix it: a missing or mistyped argument, an unknown argument, an
//! invalid session id, an empty or oversized message. `null` counts as "not given".

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use crate::config::ToolProfile;

/// Tool names.
pub(crate) mod name {
    /// Send a message.
    pub(crate) const SEND: &str = "relay_send";
    /// Read unread mail or history.
    pub(crate) const RECEIVE: &str = "relay_receive";
    /// Who is online.
    pub(crate) const PEERS: &str = "relay_peers";
    /// Connection and delivery state.
    pub(crate) const STATUS: &str = "relay_status";
    /// Every known session.
    pub(crate) const SESSIONS: &str = "relay_sessions";
    /// Block until the next unread message arrives (profile `full` only).
    pub(crate) const WAIT: &str = "relay_wait";
}

/// Largest message body the bridge will try to send: the hub's default content limit
/// (`--max-content-bytes`, 512 KiB; see docs/PROTOCOL.md). A hub configured lower refuses
/// with its own limit in the error, and the result says so.
pub(crate) const MAX_MESSAGE_BYTES: usize = 512 * 1024;
/// Default `relay_receive` page size.
pub(crate) const DEFAULT_COUNT: u32 = 10;
/// Largest `relay_receive` page size.
pub(crate) const MAX_COUNT: u32 = 50;
/// Default `relay_wait` timeout. Codex gives an MCP tool call 60 s unless configured
/// otherwise (`tool_timeout_sec`), so the default returns ("timed out, call again") before
/// the client gives up on the call.
pub(crate) const DEFAULT_WAIT_SECS: u64 = 50;
/// Longest `relay_wait` timeout (larger values are capped, and the result says so).
pub(crate) const MAX_WAIT_SECS: u64 = 3600;

/// A parsed, validated tool call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ToolCall {
    /// `relay_send`.
    Send {
        /// The text.
        message: String,
        /// Recipient; `None` means everyone.
        to: Option<String>,
        /// The id of the message this one answers.
        reply_to: Option<String>,
    },
    /// `relay_receive`.
    Receive(ReceiveArgs),
    /// `relay_peers`.
    Peers,
    /// `relay_status`.
    Status,
    /// `relay_sessions`.
    Sessions,
    /// `relay_wait`.
    Wait(WaitArgs),
    /// `relay_handoff`, `relay_tasks`, `relay_task` (see [`crate::tasks`]).
    Task(crate::tasks::tools::TaskCall),
}

/// Arguments of `relay_wait`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WaitArgs {
    /// Only a message from this session ends the wait.
    pub from: Option<String>,
    /// How long to wait, in seconds (0..=[`MAX_WAIT_SECS`]; 0 only checks).
    pub timeout_secs: u64,
    /// The caller asked for more than [`MAX_WAIT_SECS`] and got the cap.
    pub timeout_capped: bool,
}

/// Arguments of `relay_receive`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReceiveArgs {
    /// Page size (1..=[`MAX_COUNT`]).
    pub count: u32,
    /// The caller asked for more than [`MAX_COUNT`] and got the cap.
    pub count_capped: bool,
    /// Only messages from this session.
    pub from: Option<String>,
    /// History cursor: a message id or an ISO-8601 time.
    pub after: Option<String>,
    /// Read history instead of unread mail.
    pub replay: bool,
    /// Read this thread (a message id) instead of unread mail.
    pub thread: Option<String>,
    /// Search history for these words instead of reading unread mail.
    pub search: Option<String>,
}

impl ReceiveArgs {
    /// True for history mode (`replay: true`, an `after` cursor or a `thread`): read state
    /// is untouched.
    pub(crate) fn is_history(&self) -> bool {
        self.replay || self.after.is_some() || self.thread.is_some()
    }
}

/// Longest `relay_receive` `search` (the hub's limit).
pub(crate) const MAX_SEARCH_BYTES: usize = relay_proto::wire_search::MAX_QUERY_BYTES;
/// Longest message id the tools accept (`reply_to`, `thread`): ids are `<epoch>-<seq>`.
pub(crate) const MAX_ID_BYTES: usize = 64;

pub(crate) fn schema(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

/// Whether `profile` offers the tool `name` (`relay_wait` blocks, so Claude Code does not
/// get it; every other tool is in both profiles).
pub(crate) fn offered(profile: ToolProfile, name: &str) -> bool {
    name != name::WAIT || profile == ToolProfile::Full
}

/// The tool definitions `tools/list` returns for `profile`: the five relay tools, plus the
/// blocking `relay_wait` for [`ToolProfile::Full`].
pub(crate) fn definitions(profile: ToolProfile) -> Vec<Tool> {
    let read_only = || ToolAnnotations::new().read_only(true);
    let mut tools = vec![
        Tool::new(
            name::SEND,
            "Send a message to another agent session via the relay hub. Says whether it was \
             delivered live or stored. Send paths and commits, not file contents.",
            schema(json!({
                "type": "object",
                "properties": {
                    "message": {"type": "string", "description": "The text (max 512 KiB)."},
                    "to": {"type": "string", "description": "Session id, e.g. CC-2, or all (default)."},
                    "reply_to": {"type": "string", "description": "Id of the message this answers (keeps its thread)."}
                },
                "required": ["message"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            name::RECEIVE,
            "Read your unread relay messages, oldest first, and mark them read. With replay, \
             after, thread or search: reads history, read state untouched.",
            schema(json!({
                "type": "object",
                "properties": {
                    "count": {"type": "integer", "minimum": 1, "maximum": MAX_COUNT, "description": "Messages per page (default 10)."},
                    "from": {"type": "string", "description": "Only messages from this session id."},
                    "after": {"type": "string", "description": "History after this message id or ISO time."},
                    "replay": {"type": "boolean", "description": "Read recent history."},
                    "thread": {"type": "string", "description": "Read this thread (its id)."},
                    "search": {"type": "string", "description": "Words to find in history (best first)."}
                },
                "additionalProperties": false
            })),
        ),
        Tool::new(
            name::PEERS,
            "List sessions online now (id, host, cwd, since).",
            schema(json!({"type": "object", "properties": {}, "additionalProperties": false})),
        )
        .with_annotations(read_only()),
        Tool::new(
            name::STATUS,
            "Hub URL, your session id, connection, unread count, and whether your recent \
             sends were stored, delivered or read.",
            schema(json!({"type": "object", "properties": {}, "additionalProperties": false})),
        )
        .with_annotations(read_only()),
        Tool::new(
            name::SESSIONS,
            "List every known session, online and offline, on all machines, with last seen.",
            schema(json!({"type": "object", "properties": {}, "additionalProperties": false})),
        )
        .with_annotations(read_only()),
    ];
    if offered(profile, name::WAIT) {
        tools.push(Tool::new(
            name::WAIT,
            "Wait for your next unread relay message, then return it marked read (like \
             relay_receive count 1). Returns at once if mail waits; says so on timeout (call \
             again to keep waiting).",
            schema(json!({
                "type": "object",
                "properties": {
                    "from": {"type": "string", "description": "Only wait for a message from this session id."},
                    "timeout_seconds": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECS, "description": "How long to wait (default 50)."}
                },
                "additionalProperties": false
            })),
        ));
    }
    tools.extend(crate::tasks::tools::definitions());
    tools
}

/// Parses the arguments of tool `tool`. The error is the complete message for the model.
pub(crate) fn parse(tool: &str, args: Option<&JsonObject>) -> Result<ToolCall, String> {
    let a = Args { tool, args };
    match tool {
        name::SEND => {
            a.only(&["message", "to", "reply_to"])?;
            let message = a.string("message")?.ok_or_else(|| {
                format!("{tool}: missing required argument \"message\" (the text to send)")
            })?;
            if message.trim().is_empty() {
                return Err(format!("{tool}: \"message\" is empty; nothing to send"));
            }
            if message.len() > MAX_MESSAGE_BYTES {
                return Err(format!(
                    "{tool}: \"message\" is {} bytes; the hub takes at most 512 KiB. Put the \
                     content in a file (or commit it) and send the path instead. Nothing was sent.",
                    message.len()
                ));
            }
            let to = match a.string("to")?.map(str::trim) {
                // An empty `to` is a mistake (a variable that was never filled in), not a
                // wish to reach everyone: a broadcast is asked for by leaving it out.
                Some("") => {
                    return Err(format!(
                        "{tool}: \"to\" is empty. Give a session id (see relay_peers), or leave \
                         \"to\" out (or use \"all\") to send to everyone. Nothing was sent."
                    ));
                }
                other => other,
            };
            let to = match to {
                None => None,
                Some(t) if t.eq_ignore_ascii_case(relay_proto::BROADCAST) => None,
                Some(t) => Some(a.session_id("to", t)?),
            };
            let reply_to = a.message_id("reply_to")?;
            Ok(ToolCall::Send {
                message: message.to_string(),
                to,
                reply_to,
            })
        }
        name::RECEIVE => {
            a.only(&["count", "from", "after", "replay", "thread", "search"])?;
            let (count, count_capped) = match a.integer("count")? {
                None => (DEFAULT_COUNT, false),
                Some(n) if n < 1 => {
                    return Err(format!("{tool}: \"count\" must be at least 1 (got {n})"));
                }
                Some(n) if n > i64::from(MAX_COUNT) => (MAX_COUNT, true),
                Some(n) => (n as u32, false),
            };
            let from = match a.string("from")?.map(str::trim).filter(|s| !s.is_empty()) {
                Some(f) => Some(a.session_id("from", f)?),
                None => None,
            };
            let after = a
                .string("after")?
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            let replay = a.boolean("replay")?.unwrap_or(false);
            let thread = a.message_id("thread")?;
            let search = match a.string("search")?.map(str::trim).filter(|s| !s.is_empty()) {
                Some(q) if q.len() > MAX_SEARCH_BYTES => {
                    return Err(format!(
                        "{tool}: \"search\" is {} bytes; at most {MAX_SEARCH_BYTES} are searched",
                        q.len()
                    ));
                }
                Some(q) => Some(q.to_string()),
                None => None,
            };
            Ok(ToolCall::Receive(ReceiveArgs {
                count,
                count_capped,
                from,
                after,
                replay,
                thread,
                search,
            }))
        }
        name::PEERS => a.only(&[]).map(|()| ToolCall::Peers),
        name::STATUS => a.only(&[]).map(|()| ToolCall::Status),
        name::SESSIONS => a.only(&[]).map(|()| ToolCall::Sessions),
        name::WAIT => {
            a.only(&["from", "timeout_seconds"])?;
            let from = match a.string("from")?.map(str::trim).filter(|s| !s.is_empty()) {
                Some(f) => Some(a.session_id("from", f)?),
                None => None,
            };
            let (timeout_secs, timeout_capped) = match a.integer("timeout_seconds")? {
                None => (DEFAULT_WAIT_SECS, false),
                Some(n) if n < 0 => {
                    return Err(format!(
                        "{tool}: \"timeout_seconds\" must be 0 or more (got {n})"
                    ));
                }
                Some(n) if n as u64 > MAX_WAIT_SECS => (MAX_WAIT_SECS, true),
                Some(n) => (n as u64, false),
            };
            Ok(ToolCall::Wait(WaitArgs {
                from,
                timeout_secs,
                timeout_capped,
            }))
        }
        t if crate::tasks::tools::NAMES.contains(&t) => {
            crate::tasks::tools::parse(t, args).map(ToolCall::Task)
        }
        other => Err(format!(
            "unknown tool {other:?}; this server has: {}",
            definitions(ToolProfile::Full)
                .iter()
                .map(|t| t.name.as_ref())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Typed access to one call's arguments, with errors naming the tool and the argument.
pub(crate) struct Args<'a> {
    pub(crate) tool: &'a str,
    pub(crate) args: Option<&'a JsonObject>,
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Args<'a> {
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.args?.get(key).filter(|v| !v.is_null())
    }

    /// An optional message id (`<epoch>-<seq>`, as relay_receive shows them).
    pub(crate) fn message_id(&self, key: &str) -> Result<Option<String>, String> {
        let Some(id) = self.string(key)?.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let well_formed = id.len() <= MAX_ID_BYTES
            && id.rsplit_once('-').is_some_and(|(epoch, seq)| {
                !epoch.is_empty()
                    && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
                    && !seq.is_empty()
                    && seq.bytes().all(|b| b.is_ascii_digit())
            });
        if !well_formed {
            return Err(format!(
                "{}: \"{key}\" must be a message id like 3ae061b7-42 (relay_receive shows each \
                 message's id), got {:?}",
                self.tool,
                relay_local::display::line(&id.chars().take(80).collect::<String>())
            ));
        }
        Ok(Some(id.to_string()))
    }

    /// Rejects arguments the tool does not take (a misspelt name would otherwise be ignored).
    pub(crate) fn only(&self, known: &[&str]) -> Result<(), String> {
        let Some(args) = self.args else { return Ok(()) };
        if let Some(bad) = args.keys().find(|k| !known.contains(&k.as_str())) {
            let takes = if known.is_empty() {
                "no arguments".to_string()
            } else {
                format!("only {}", known.join(", "))
            };
            return Err(format!(
                "{}: unknown argument {bad:?}; it takes {takes}",
                self.tool
            ));
        }
        Ok(())
    }

    pub(crate) fn string(&self, key: &str) -> Result<Option<&'a str>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(format!(
                "{}: argument \"{key}\" must be a string, got {}",
                self.tool,
                kind(v)
            )),
        }
    }

    pub(crate) fn integer(&self, key: &str) -> Result<Option<i64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                        .map(|f| f as i64)
                })
                .map(Some)
                .ok_or_else(|| {
                    format!(
                        "{}: argument \"{key}\" must be a whole number, got {n}",
                        self.tool
                    )
                }),
            Some(v) => Err(format!(
                "{}: argument \"{key}\" must be an integer, got {}",
                self.tool,
                kind(v)
            )),
        }
    }

    pub(crate) fn boolean(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(format!(
                "{}: argument \"{key}\" must be true or false, got {}",
                self.tool,
                kind(v)
            )),
        }
    }

    pub(crate) fn session_id(&self, key: &str, id: &str) -> Result<String, String> {
        relay_proto::id::validate(id).map_err(|e| {
            format!(
                "{}: \"{key}\" is not a valid session id ({id:?}: {e}). Ids look like CC-2: a \
                 letter, then letters, digits, '_' or '-'. See relay_peers for who is online.",
                self.tool
            )
        })?;
        Ok(id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> JsonObject {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn five_tools_with_object_schemas() {
        let defs = definitions(ToolProfile::Claude);
        let names: Vec<&str> = defs.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "relay_send",
                "relay_receive",
                "relay_peers",
                "relay_status",
                "relay_sessions",
                "relay_handoff",
                "relay_tasks",
                "relay_task"
            ]
        );
        for t in &defs {
            assert_eq!(
                t.input_schema.get("type"),
                Some(&json!("object")),
                "{}",
                t.name
            );
            assert!(
                t.description.as_ref().unwrap().len() < 260,
                "{} is too wordy",
                t.name
            );
        }
        let full = definitions(ToolProfile::Full);
        assert_eq!(full.len(), 9);
        assert_eq!(full[5].name, "relay_wait");
        assert!(full[5].description.as_ref().unwrap().len() < 260);
        assert!(offered(ToolProfile::Full, "relay_wait"));
        assert!(!offered(ToolProfile::Claude, "relay_wait"));
        assert!(offered(ToolProfile::Claude, "relay_send"));
    }

    #[test]
    fn wait_args() {
        let w = |v: Value| parse("relay_wait", Some(&args(v)));
        assert_eq!(
            parse("relay_wait", None),
            Ok(ToolCall::Wait(WaitArgs {
                from: None,
                timeout_secs: DEFAULT_WAIT_SECS,
                timeout_capped: false
            }))
        );
        assert_eq!(
            w(json!({"from": "CC-2", "timeout_seconds": 0})),
            Ok(ToolCall::Wait(WaitArgs {
                from: Some("CC-2".into()),
                timeout_secs: 0,
                timeout_capped: false
            }))
        );
        assert!(matches!(
            w(json!({"timeout_seconds": 99_999})),
            Ok(ToolCall::Wait(WaitArgs {
                timeout_secs: MAX_WAIT_SECS,
                timeout_capped: true,
                ..
            }))
        ));
        assert!(
            w(json!({"timeout_seconds": -1}))
                .unwrap_err()
                .contains("0 or more")
        );
        assert!(
            w(json!({"from": "9x"}))
                .unwrap_err()
                .contains("not a valid session id")
        );
        assert!(
            w(json!({"count": 1}))
                .unwrap_err()
                .contains("unknown argument")
        );
    }

    #[test]
    fn send_args() {
        assert_eq!(
            parse(
                "relay_send",
                Some(&args(json!({"message": "hi", "to": "CC-2"})))
            ),
            Ok(ToolCall::Send {
                message: "hi".into(),
                to: Some("CC-2".into()),
                reply_to: None
            })
        );
        for to in [json!("all"), json!("ALL"), json!(null)] {
            assert_eq!(
                parse(
                    "relay_send",
                    Some(&args(json!({"message": "hi", "to": to})))
                ),
                Ok(ToolCall::Send {
                    message: "hi".into(),
                    to: None,
                    reply_to: None
                })
            );
        }
        let e = parse("relay_send", None).unwrap_err();
        assert!(e.contains("missing required argument \"message\""), "{e}");
        let e = parse("relay_send", Some(&args(json!({"message": 5})))).unwrap_err();
        assert!(
            e.contains("\"message\" must be a string, got a number"),
            "{e}"
        );
        let e = parse(
            "relay_send",
            Some(&args(json!({"message": "x", "to": "bad id"}))),
        )
        .unwrap_err();
        assert!(e.contains("not a valid session id"), "{e}");
        let e = parse("relay_send", Some(&args(json!({"content": "x"})))).unwrap_err();
        assert!(e.contains("unknown argument \"content\""), "{e}");
        let e = parse("relay_send", Some(&args(json!({"message": "  "})))).unwrap_err();
        assert!(e.contains("empty"), "{e}");
        for blank in ["", "  ", "\t"] {
            let e = parse(
                "relay_send",
                Some(&args(json!({"message": "hi", "to": blank}))),
            )
            .unwrap_err();
            assert!(
                e.contains("\"to\" is empty") && e.contains("Nothing was sent"),
                "{e}"
            );
        }
        let big = "x".repeat(MAX_MESSAGE_BYTES + 1);
        let e = parse("relay_send", Some(&args(json!({"message": big})))).unwrap_err();
        assert!(e.contains("file"), "{e}");
    }

    #[test]
    fn replies_threads_and_searches_take_ids_and_bounded_words() {
        assert_eq!(
            parse(
                "relay_send",
                Some(&args(
                    json!({"message": "yes", "to": "CC-2", "reply_to": " ab12-40 "})
                ))
            ),
            Ok(ToolCall::Send {
                message: "yes".into(),
                to: Some("CC-2".into()),
                reply_to: Some("ab12-40".into())
            })
        );
        for bad in ["40", "ab12-", "-40", "ab 12-40", "ab12-4x"] {
            let e = parse(
                "relay_send",
                Some(&args(json!({"message": "x", "reply_to": bad}))),
            )
            .unwrap_err();
            assert!(
                e.contains("\"reply_to\" must be a message id"),
                "{bad}: {e}"
            );
        }
        let r = |v: Value| parse("relay_receive", Some(&args(v)));
        let Ok(ToolCall::Receive(a)) = r(json!({"thread": "ab12-3"})) else {
            panic!("thread")
        };
        assert!(a.is_history() && a.thread.as_deref() == Some("ab12-3"));
        let Ok(ToolCall::Receive(a)) = r(json!({"search": " auth migration "})) else {
            panic!("search")
        };
        assert_eq!(a.search.as_deref(), Some("auth migration"));
        let e = r(json!({"search": "w".repeat(MAX_SEARCH_BYTES + 1)})).unwrap_err();
        assert!(e.contains("at most 256"), "{e}");
    }

    #[test]
    fn receive_args() {
        let r = |v: Value| parse("relay_receive", Some(&args(v)));
        assert_eq!(
            parse("relay_receive", None),
            Ok(ToolCall::Receive(ReceiveArgs {
                count: 10,
                count_capped: false,
                from: None,
                after: None,
                replay: false,
                thread: None,
                search: None
            }))
        );
        assert!(matches!(
            r(json!({"count": 500})),
            Ok(ToolCall::Receive(ReceiveArgs {
                count: 50,
                count_capped: true,
                ..
            }))
        ));
        assert!(matches!(
            r(json!({"count": 3.0})),
            Ok(ToolCall::Receive(ReceiveArgs { count: 3, .. }))
        ));
        assert!(r(json!({"count": 0})).unwrap_err().contains("at least 1"));
        assert!(
            r(json!({"count": "5"}))
                .unwrap_err()
                .contains("must be an integer")
        );
        assert!(
            r(json!({"count": 2.5}))
                .unwrap_err()
                .contains("whole number")
        );
        assert!(
            r(json!({"replay": "yes"}))
                .unwrap_err()
                .contains("true or false")
        );
        let Ok(ToolCall::Receive(a)) = r(json!({"after": "e-5", "from": "CC-3"})) else {
            panic!()
        };
        assert!(a.is_history());
        assert_eq!(a.from.as_deref(), Some("CC-3"));
    }

    #[test]
    fn no_arg_tools_and_unknown_tools() {
        assert_eq!(parse("relay_peers", None), Ok(ToolCall::Peers));
        assert_eq!(
            parse("relay_status", Some(&JsonObject::new())),
            Ok(ToolCall::Status)
        );
        assert!(
            parse("relay_sessions", Some(&args(json!({"x": 1}))))
                .unwrap_err()
                .contains("no arguments")
        );
        let unknown = parse("relay_nope", None).unwrap_err();
        assert!(unknown.contains("unknown tool"), "{unknown}");
        for t in definitions(ToolProfile::Full) {
            assert!(
                unknown.contains(t.name.as_ref()),
                "{} missing: {unknown}",
                t.name
            );
        }
        assert!(unknown.contains("relay_wait") && unknown.contains("relay_handoff"));
    }
}
