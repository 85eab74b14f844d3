//! The three task tools the model sees — `relay_handoff`, `relay_tasks`, `relay_task` —
//! their definitions (input and output schemas, terse: every character is context the model
//! pays for on every turn) and the parsing of their arguments.

use std::sync::Arc;

use relay_proto::wire_tasks::{ANY, TaskAction, TaskState, parse_task_id, task_id};
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use crate::tools::{Args, schema};

/// Tool names.
pub(crate) mod name {
    /// Create a task for another session.
    pub(crate) const HANDOFF: &str = "relay_handoff";
    /// My open tasks, or one task.
    pub(crate) const TASKS: &str = "relay_tasks";
    /// Move a task.
    pub(crate) const TASK: &str = "relay_task";
}

/// Every task tool name.
pub(crate) const NAMES: [&str; 3] = [name::HANDOFF, name::TASKS, name::TASK];

/// A parsed task tool call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TaskCall {
    /// `relay_handoff`.
    Handoff(Handoff),
    /// `relay_tasks` without an id: a page of my open tasks (optionally in one state).
    List {
        /// Only this state (any state, terminal ones included).
        state: Option<TaskState>,
    },
    /// `relay_tasks {id}`: one task with its history.
    Show {
        /// Task id.
        id: String,
    },
    /// `relay_task`.
    Act {
        /// Task id.
        id: String,
        /// The move.
        action: TaskAction,
        /// Note, question, answer or reason.
        note: Option<String>,
        /// The result (complete).
        result: Option<String>,
    },
}

/// Arguments of `relay_handoff`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Handoff {
    /// Addressee or `any`.
    pub to: String,
    /// One line.
    pub title: String,
    /// Markdown.
    pub brief: String,
    /// Checks that define done.
    pub acceptance: Vec<String>,
    /// Record the git state of the working directory (default true).
    pub git: bool,
    /// Earlier tasks this one follows up (a finished task never changes: follow-up work is
    /// a new task that names it).
    pub refs: Vec<String>,
}

/// The task record schema (`{"task": …}` items). Only the fields a caller branches on are
/// typed: the tool list must stay small (see the size test), and the rest of the record is
/// documented in `docs/HANDOFF.md`.
fn task_schema() -> Value {
    let s = json!({"type": "string"});
    let maybe = |t: &str| json!({"type": [t, "null"]});
    json!({
        "type": "object",
        "properties": {"id": s, "state": s, "holder": maybe("string")},
        "required": ["id", "state"]
    })
}

/// Output schema of a tool whose structured result is `{"task": …}`.
fn one_task() -> Arc<JsonObject> {
    schema(json!({"type": "object", "properties": {"task": task_schema()}, "required": ["task"]}))
}

/// The task tool definitions.
pub(crate) fn definitions() -> Vec<Tool> {
    let s = |d: &str| json!({"type": "string", "description": d});
    let actions: Vec<&str> = TaskAction::ALL.iter().map(|a| a.as_str()).collect();
    vec![
        Tool::new(
            name::HANDOFF,
            "Hand a task to another session (or any): title, brief, checks; records this \
             repo's git state and uncommitted work for `claude-relay tasks checkout`.",
            schema(json!({
                "type": "object",
                "properties": {
                    "to": s("Session id, or any."),
                    "title": {"type": "string"},
                    "brief": s("What, where, what is left (markdown)."),
                    "acceptance": {"type": "array", "items": {"type": "string"}},
                    "git": {"type": "boolean", "description": "false: skip git."},
                    "refs": {"type": "array", "items": {"type": "string"}, "description": "Task ids this follows up."}
                },
                "required": ["to", "title", "brief"],
                "additionalProperties": false
            })),
        )
        .with_raw_output_schema(one_task()),
        Tool::new(
            name::TASKS,
            "Your open tasks (to, from or held by you), or one task with its history.",
            schema(json!({
                "type": "object",
                "properties": {"id": {"type": "string"}, "state": {"type": "string"}},
                "additionalProperties": false
            })),
        )
        .with_raw_output_schema(schema(json!({
            "type": "object",
            "$defs": {"t": task_schema()},
            "properties": {
                "task": {"$ref": "#/$defs/t"},
                "tasks": {"type": "array", "items": {"$ref": "#/$defs/t"}},
                "more": {"type": "boolean"}
            }
        })))
        .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new(
            name::TASK,
            "Move a task: claim; as holder progress, ask, complete (result), fail, release; as \
             creator answer, cancel; decline.",
            schema(json!({
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "action": {"enum": actions},
                    "note": {"type": "string"},
                    "result": {"type": "string"}
                },
                "required": ["id", "action"],
                "additionalProperties": false
            })),
        )
        .with_raw_output_schema(one_task()),
    ]
}

fn id_arg(a: &Args<'_>) -> Result<Option<String>, String> {
    match a.string("id")?.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(raw) => parse_task_id(raw).map(|n| Some(task_id(n))).ok_or_else(|| {
            format!(
                "{}: \"id\" {raw:?} is not a task id; they look like T-42 (see relay_tasks)",
                a.tool
            )
        }),
    }
}

/// `refs`: task ids, written as the model likes (`t-3`, ` T-3 `), sent as `T-3`.
fn refs_arg(a: &Args<'_>) -> Result<Vec<String>, String> {
    let bad = || format!("{}: \"refs\" must be a list of task ids like T-42", a.tool);
    match a.get("refs") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .and_then(|s| parse_task_id(s.trim()))
                    .map(task_id)
                    .ok_or_else(bad)
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

fn required<'a>(a: &Args<'a>, key: &str, what: &str) -> Result<&'a str, String> {
    a.string(key)?
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{}: missing required argument \"{key}\" ({what})", a.tool))
}

/// Parses the arguments of task tool `tool` (one of [`NAMES`]).
pub(crate) fn parse(tool: &str, args: Option<&JsonObject>) -> Result<TaskCall, String> {
    let a = Args { tool, args };
    match tool {
        name::HANDOFF => {
            a.only(&["to", "title", "brief", "acceptance", "git", "refs"])?;
            let to = required(&a, "to", "a session id, or any")?;
            let to = if to.eq_ignore_ascii_case(ANY) {
                ANY.to_string()
            } else {
                a.session_id("to", to)?
            };
            let acceptance = match a.get("acceptance") {
                None => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                        _ => Err(format!(
                            "{tool}: \"acceptance\" must be a list of non-empty strings"
                        )),
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(format!(
                        "{tool}: \"acceptance\" must be a list of strings (checks that define done)"
                    ));
                }
            };
            Ok(TaskCall::Handoff(Handoff {
                to,
                title: required(&a, "title", "one line")?.to_string(),
                brief: required(&a, "brief", "what to do, where, what is left")?.to_string(),
                acceptance,
                git: a.boolean("git")?.unwrap_or(true),
                refs: refs_arg(&a)?,
            }))
        }
        name::TASKS => {
            a.only(&["id", "state"])?;
            let state = match a.string("state")?.map(str::trim).filter(|s| !s.is_empty()) {
                None => None,
                Some(s) => Some(TaskState::parse(s).ok_or_else(|| {
                    let all: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
                    format!("{tool}: \"state\" {s:?} is not one of {}", all.join(", "))
                })?),
            };
            match id_arg(&a)? {
                Some(id) if state.is_none() => Ok(TaskCall::Show { id }),
                Some(_) => Err(format!("{tool}: give id or state, not both")),
                None => Ok(TaskCall::List { state }),
            }
        }
        name::TASK => {
            a.only(&["id", "action", "note", "result"])?;
            let id = id_arg(&a)?
                .ok_or_else(|| format!("{tool}: missing required argument \"id\" (like T-42)"))?;
            let raw = required(&a, "action", "what to do")?;
            let action = TaskAction::parse(raw).ok_or_else(|| {
                let all: Vec<&str> = TaskAction::ALL.iter().map(|a| a.as_str()).collect();
                format!(
                    "{tool}: \"action\" {raw:?} is not one of {}",
                    all.join(", ")
                )
            })?;
            let text = |k| {
                a.string(k).map(|v| {
                    v.map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                })
            };
            Ok(TaskCall::Act {
                id,
                action,
                note: text("note")?,
                result: text("result")?,
            })
        }
        other => Err(format!("unknown task tool {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> JsonObject {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn handoff_args() {
        let p = |v: Value| parse(name::HANDOFF, Some(&args(v)));
        let Ok(TaskCall::Handoff(h)) = p(json!({"to": "ANY", "title": "t", "brief": "b",
                                                "acceptance": ["tests pass"], "git": false}))
        else {
            panic!()
        };
        assert_eq!(
            (h.to.as_str(), h.git, h.acceptance.len()),
            ("any", false, 1)
        );
        assert!(
            p(json!({"to": "CC-2", "title": "t"}))
                .unwrap_err()
                .contains("\"brief\"")
        );
        assert!(
            p(json!({"to": "9", "title": "t", "brief": "b"}))
                .unwrap_err()
                .contains("not a valid session id")
        );
        assert!(p(json!({"to": "CC-2", "title": "t", "brief": "b", "acceptance": "x"})).is_err());
        assert!(
            p(json!({"to": "CC-2", "title": "t", "brief": "b", "x": 1}))
                .unwrap_err()
                .contains("unknown argument")
        );
    }

    #[test]
    fn tasks_and_task_args() {
        assert_eq!(parse(name::TASKS, None), Ok(TaskCall::List { state: None }));
        assert_eq!(
            parse(name::TASKS, Some(&args(json!({"id": "t-3"})))),
            Ok(TaskCall::Show { id: "T-3".into() })
        );
        assert!(parse(name::TASKS, Some(&args(json!({"state": "done"})))).is_err());
        assert_eq!(
            parse(
                name::TASK,
                Some(&args(json!({"id": "7", "action": "claim"})))
            ),
            Ok(TaskCall::Act {
                id: "T-7".into(),
                action: TaskAction::Claim,
                note: None,
                result: None
            })
        );
        let e = parse(
            name::TASK,
            Some(&args(json!({"id": "T-7", "action": "steal"}))),
        )
        .unwrap_err();
        assert!(e.contains("claim, progress"), "{e}");
        assert!(
            parse(name::TASK, Some(&args(json!({"action": "claim"}))))
                .unwrap_err()
                .contains("\"id\"")
        );
    }
}

#[cfg(test)]
mod size {
    use crate::{config::ToolProfile, tools::definitions};

    /// Every tool definition is context the model pays for on every turn: the whole list,
    /// as compact JSON, stays under 5,000 characters in both profiles.
    #[test]
    fn the_whole_tool_list_stays_under_5000_characters() {
        for profile in [ToolProfile::Claude, ToolProfile::Full] {
            let json = serde_json::to_string(&definitions(profile)).unwrap();
            eprintln!("{profile:?}: {} characters", json.len());
            assert!(json.len() < 5_000, "{profile:?}: {} characters", json.len());
        }
    }
}
