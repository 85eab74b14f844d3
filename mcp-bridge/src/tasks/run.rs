//! What the task tools do: the hub requests behind them and the answers — a short text for
//! the model and the task record as `structuredContent` (`{"task": …}` or
//! `{"tasks": […], "more": …}`).
//!
//! The hub decides every move; a refusal comes back as an error result with the hub's reason
//! and, when the caller may see it, the task as it stands (for a lost claim: who holds it).
//! Like `relay_send`, nothing is claimed that the hub did not confirm: a create whose answer
//! was lost is retried with the same key (the hub makes the task once); a move whose answer
//! was lost is reported as unknown, with the call that checks it.

use std::path::PathBuf;

use relay_proto::{
    time::now_ms,
    wire::{ClientFrame, ServerFrame, TaskAct, TaskCreate, TaskGet, TaskList, TaskReserve},
    wire_tasks::{TaskAction, TaskView},
};
use serde_json::{Value, json};

use super::{
    git_seam::{self, Captured},
    text,
    tools::{Handoff, TaskCall},
    upload,
};
use crate::{
    actions::{Relay, Reply, capitalize, frame_type, unexpected},
    hub_client::RequestError,
};

/// Largest bundle the bridge uploads (the hub may take less; it then says so and the task
/// carries the git context without it).
pub(crate) const MAX_BUNDLE_BYTES: u64 = 16 << 20;
/// Tasks per `relay_tasks` page.
pub(crate) const PAGE: u32 = 20;
/// Events shown with one task.
pub(crate) const HISTORY: u32 = 10;

fn structured_task(t: &TaskView) -> Value {
    json!({ "task": t })
}

fn failed(e: &RequestError) -> Reply {
    Reply::error(format!("{e}. Nothing was changed by this call."))
}

impl Relay {
    /// Runs one task tool call.
    pub(crate) async fn task(&self, call: TaskCall) -> Reply {
        match call {
            TaskCall::Handoff(h) => self.handoff(h).await,
            TaskCall::List { state } => self.task_list(state).await,
            TaskCall::Show { id } => self.task_show(id).await,
            TaskCall::Act {
                id,
                action,
                note,
                result,
            } => self.task_act(id, action, note, result).await,
        }
    }

    /// Reserves the id of the task about to be created (its git snapshot is named after
    /// it).
    async fn reserve(&self) -> Result<String, String> {
        match self
            .hub()
            .request(ClientFrame::TaskReserve(TaskReserve::default()))
            .await
        {
            Ok(ServerFrame::TaskReserved(r)) => Ok(r.id),
            Ok(ServerFrame::Error(e)) => Err(e.message),
            Ok(other) => Err(format!("unexpected reply {}", frame_type(&other))),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Records the git state for task `id`: the context and, when there is work the remote
    /// lacks, its bundle. Problems become notes; the handoff goes on without git.
    async fn record_git(&self, notes: &mut Vec<String>) -> Option<(PathBuf, String, Captured)> {
        let cwd = match std::env::current_dir() {
            Ok(c) => c,
            Err(e) => {
                notes.push(format!("Git: not recorded (no working directory: {e})."));
                return None;
            }
        };
        let id = match self.reserve().await {
            Ok(id) => id,
            Err(e) => {
                notes.push(format!(
                    "Git: not recorded (the hub reserved no task id: {e})."
                ));
                return None;
            }
        };
        match git_seam::capture(&cwd, &id, MAX_BUNDLE_BYTES).await {
            Ok(Some(c)) => Some((cwd, id, c)),
            Ok(None) => {
                notes.push("Git: not a git work tree; nothing recorded.".into());
                None
            }
            Err(e) => {
                notes.push(format!("Git: not recorded ({e})."));
                None
            }
        }
    }

    async fn handoff(&self, h: Handoff) -> Reply {
        let mut notes: Vec<String> = Vec::new();
        let captured = match h.git {
            true => self.record_git(&mut notes).await,
            false => None,
        };
        let mut git = captured.as_ref().map(|(_, _, c)| c.context.clone());
        let mut blob = None;
        if let Some((
            _,
            _,
            Captured {
                bundle: Some(bytes),
                ..
            },
        )) = &captured
        {
            match upload::upload(self.hub(), bytes).await {
                Ok(id) => blob = Some(id),
                Err(e) => {
                    notes.push(format!(
                        "Bundle: not attached ({e}); the task carries the git context only."
                    ));
                    if let Some(Value::Object(g)) = git.as_mut() {
                        g.insert("bundleOmitted".into(), Value::String(e));
                    }
                }
            }
        } else if let Some((
            _,
            _,
            Captured {
                bundle_omitted: Some(why),
                ..
            },
        )) = &captured
        {
            notes.push(format!("Bundle: not attached ({why})."));
        }
        let key = format!("h{:x}-{:x}", std::process::id(), now_ms());
        let frame = ClientFrame::TaskCreate(TaskCreate {
            to: h.to.clone(),
            id: captured.as_ref().map(|(_, id, _)| id.clone()),
            title: h.title,
            brief: h.brief,
            acceptance: h.acceptance,
            refs: h.refs,
            git,
            blob,
            key: Some(key),
            rid: None,
        });
        let mut result = self.hub().request(frame.clone()).await;
        if matches!(&result, Err(e) if e.maybe_delivered())
            && self
                .hub()
                .wait_connected(std::time::Duration::from_secs(5))
                .await
        {
            // Same key: the hub makes the task at most once.
            result = self.hub().request(frame).await;
        }
        let reply = match result {
            Ok(ServerFrame::Task(r)) => r,
            other => {
                if let Some((cwd, id, _)) = &captured {
                    git_seam::forget(cwd, id).await;
                }
                return match other {
                    Ok(ServerFrame::Error(e)) => {
                        Reply::error(format!("No task was created — the hub said: {}", e.message))
                    }
                    Ok(other) => unexpected(&other),
                    Err(e) if e.maybe_delivered() => Reply::error(format!(
                        "Outcome unknown: {e}. relay_tasks shows whether the task exists before \
                         you hand it over again."
                    )),
                    Err(e) => Reply::error(format!("No task was created: {e}.")),
                };
            }
        };
        let t = &reply.task;
        let mut out = format!("Created {} for {} ({}).", t.id, t.to, t.state);
        if let Some(n) = &reply.notice {
            out.push_str(&format!(" {}", capitalize(n)));
        }
        if reply.duplicate {
            out.push_str(" (The hub already had this task from an earlier attempt.)");
        }
        if let Some(g) = t.git.as_ref().and_then(text::git_summary) {
            out.push_str(&format!("\nGit: {g}"));
        }
        if let Some(b) = &t.bundle {
            out.push_str(&format!(
                "\nBundle: {} attached — the receiver runs: claude-relay tasks checkout {}",
                text::size(b.bytes),
                t.id
            ));
        }
        for n in notes {
            out.push('\n');
            out.push_str(&n);
        }
        out.push_str(&format!(
            "\nYou will get mail at each change; relay_tasks {{\"id\":\"{}\"}} shows it.",
            t.id
        ));
        Reply::ok(out).with_structured(structured_task(t))
    }

    async fn task_list(&self, state: Option<relay_proto::wire_tasks::TaskState>) -> Reply {
        let frame = ClientFrame::TaskList(TaskList {
            state,
            count: Some(PAGE),
            ..Default::default()
        });
        match self.hub().request(frame).await {
            Ok(ServerFrame::Tasks(p)) => {
                let now = now_ms();
                let what = match state {
                    Some(s) => format!("{s} tasks"),
                    None => "open tasks".into(),
                };
                let mut out = if p.tasks.is_empty() {
                    format!("No {what} of yours (to you, from you or held by you).")
                } else {
                    format!(
                        "Your {what}, newest first:\n{}",
                        p.tasks
                            .iter()
                            .map(|t| text::line(t, now))
                            .collect::<Vec<_>>()
                            .join("\n")
                    )
                };
                if p.more {
                    out.push_str(&format!(
                        "\n(More: only the newest {PAGE} are shown; filter with state.)"
                    ));
                }
                if !p.tasks.is_empty() {
                    out.push_str("\nOne task in full: relay_tasks {\"id\":\"T-…\"}.");
                }
                Reply::ok(out).with_structured(json!({"tasks": p.tasks, "more": p.more}))
            }
            Ok(ServerFrame::Error(e)) => {
                Reply::error(format!("The hub refused to list tasks: {}", e.message))
            }
            Ok(other) => unexpected(&other),
            Err(e) => failed(&e),
        }
    }

    async fn task_show(&self, id: String) -> Reply {
        let frame = ClientFrame::TaskGet(TaskGet {
            id,
            history: Some(HISTORY),
            ..Default::default()
        });
        match self.hub().request(frame).await {
            Ok(ServerFrame::Task(r)) => {
                let me = self.hub().id();
                Reply::ok(text::detail(&r.task, &me, now_ms()))
                    .with_structured(structured_task(&r.task))
            }
            Ok(ServerFrame::Error(e)) => Reply::error(format!("{}.", capitalize(&e.message))),
            Ok(other) => unexpected(&other),
            Err(e) => failed(&e),
        }
    }

    async fn task_act(
        &self,
        id: String,
        action: TaskAction,
        note: Option<String>,
        result: Option<String>,
    ) -> Reply {
        let frame = ClientFrame::TaskAct(TaskAct {
            id: id.clone(),
            action,
            note,
            result,
            rid: None,
        });
        match self.hub().request(frame).await {
            Ok(ServerFrame::Task(r)) => {
                let t = &r.task;
                let me = self.hub().id();
                let mut out = format!("{} is now {}", t.id, t.state);
                match &t.holder {
                    Some(h) if *h == me && !t.state.is_terminal() => out.push_str(" (you hold it)"),
                    Some(h) if !t.state.is_terminal() => out.push_str(&format!(" (held by {h})")),
                    _ => {}
                }
                out.push_str(". The other party got mail about it.");
                if action == TaskAction::Claim {
                    out.push('\n');
                    out.push_str(&text::detail(t, &me, now_ms()));
                } else if let Some(next) = text::next_step(t, &me) {
                    out.push('\n');
                    out.push_str(&next);
                }
                Reply::ok(out).with_structured(structured_task(t))
            }
            Ok(ServerFrame::TaskRefused(r)) => {
                let mut reply = Reply::error(format!("Refused — nothing changed: {}", r.reason));
                if let Some(t) = &r.task {
                    reply = reply.with_structured(structured_task(t));
                }
                reply
            }
            Ok(ServerFrame::Error(e)) => Reply::error(format!(
                "The hub refused {} on {id}: {}",
                action.as_str(),
                e.message
            )),
            Ok(other) => unexpected(&other),
            Err(e) if e.maybe_delivered() => Reply::error(format!(
                "Outcome unknown: {e}. Check with relay_tasks {{\"id\":\"{id}\"}} before \
                 trying again."
            )),
            Err(e) => failed(&e),
        }
    }
}
