//! `claude-relay approval-hook`: the `PermissionRequest` hook (docs/SECURITY.md,
//! "Approvals"). Claude Code (and Codex) run it when a permission dialog opens, with the
//! hook's JSON on stdin (`session_id`, `cwd`, `tool_name`, `tool_input`, …). It files the
//! prompt on the hub under the session's relay name and waits for a human's verdict:
//!
//! - **a verdict** (a human answered in the console or with `claude-relay approvals`):
//!   prints exactly
//!   `{"hookSpecificOutput":{"hookEventName":"PermissionRequest","decision":{"behavior":"allow"|"deny","message":"…"}}}`
//!   and exits 0 — Claude Code takes the decision and closes its dialog;
//! - **anything else** — the timeout (`--timeout`, default 600 s, counted from the hook's
//!   start and bounding every step: stdin, connect, the filing's reply, the close), a hub
//!   that is down or refuses, no relay session for this hook call, bad input, the prompt
//!   expired or closed: prints nothing and exits 0, so the local dialog simply stays. It never allows by
//!   default and never blocks the agent on its own failure (reasons go to stderr, which
//!   Claude Code shows only in its debug output).
//!
//! The dialog answered locally first: Claude Code ends the hook, its connection closes, and
//! the hub shows the prompt as `closed`.
//!
//! Which session: as `claude-relay wait` finds it (`--session`, `CLAUDE_RELAY_SESSION_ID`,
//! the registry entry of the hook's `session_id`, the name recorded for its `cwd`). An owned
//! name is filed with the owner secret this machine keeps for it.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use mcp_bridge::dial::{self, ConnectError};
use relay_local::{Registry, RegistryFile};
use relay_proto::{
    wire::{ClientFrame, ServerFrame},
    wire_approvals::{ApprovalFile, ApprovalSource, ApprovalView, MAX_TIMEOUT_S},
};
use serde_json::{Value, json};

use super::{sessions_cmd::HubConn, wait_cmd};

/// Longest wait for the TCP connect and WebSocket handshake, and for the filing's reply.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most verdicts kept while the filing reply is awaited (this connection files one prompt).
const EARLY_VERDICTS: usize = 4;

/// Arguments of `claude-relay approval-hook`.
#[derive(Debug, clap::Args)]
pub(crate) struct ApprovalHookArgs {
    /// Wait at most this many seconds for a human's verdict, then print nothing (the local
    /// dialog stays). At most 3600.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub timeout: u64,
    /// The session asking. Default: `CLAUDE_RELAY_SESSION_ID`, else the session of the hook
    /// JSON on stdin (by `session_id`, else by `cwd`).
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    #[command(flatten)]
    pub hub: HubConn,
}

/// Runs `claude-relay approval-hook`. Always exits 0; prints only a verdict.
pub(super) fn run(args: ApprovalHookArgs) -> anyhow::Result<ExitCode> {
    // One deadline for the whole process, from its start: every step (reading stdin,
    // connecting, the filing's reply, the verdict, closing) ends by it, so the hook never
    // outlives `--timeout` (and the `timeout` `hooks install` gives Claude Code is past it).
    let started = std::time::Instant::now();
    let timeout = args.timeout.clamp(1, MAX_TIMEOUT_S);
    let deadline = started + Duration::from_secs(timeout);
    match verdict(args, timeout, deadline) {
        Ok(Some(output)) => println!("{output}"),
        Ok(None) => {}
        Err(e) => eprintln!(
            "claude-relay approval-hook: {} (the local dialog stays)",
            relay_local::display::line(&format!("{e:#}"))
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The hook's output line, or None when it must print nothing.
fn verdict(
    args: ApprovalHookArgs,
    timeout: u64,
    deadline: std::time::Instant,
) -> anyhow::Result<Option<String>> {
    let hook = wait_cmd::read_hook_json_within(
        deadline.saturating_duration_since(std::time::Instant::now()),
    )
    .context("no hook JSON on stdin")?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let registry = Registry::open_default().load().unwrap_or_else(|e| {
        tracing::warn!("session registry unreadable: {e}");
        RegistryFile::default()
    });
    let session = wait_cmd::resolve_session(args.session.as_deref(), env, Some(&hook), &registry)
        .map_err(|why| anyhow::anyhow!(why))?;
    let field = |k: &str| hook.get(k).and_then(Value::as_str).map(str::to_string);
    let tool = field("tool_name").context("the hook JSON has no tool_name")?;
    let frame = ClientFrame::ApprovalFile(ApprovalFile {
        client_id: session.id.to_string(),
        owner_secret: wait_cmd::owner_secret(session.id.as_str()),
        token: None,
        tool,
        input: hook.get("tool_input").cloned(),
        input_preview: None,
        description: hook
            .get("tool_input")
            .and_then(|i| i.get("description"))
            .and_then(Value::as_str)
            .map(str::to_string),
        cwd: field("cwd"),
        host: Some(relay_local::identity::short_hostname()).filter(|h| !h.is_empty()),
        source: ApprovalSource::Hook,
        request_id: None,
        timeout_s: Some(timeout),
        rid: Some(relay_proto::wire::RequestId::Str("file".into())),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let auth = args.hub.auth();
    let url = args.hub.relay_url.clone();
    let deadline = tokio::time::Instant::from_std(deadline);
    let late = || anyhow::anyhow!("no verdict within {timeout} s");
    runtime.block_on(async move {
        let mut ws = tokio::time::timeout_at(deadline, dial::connect_with(&url, &auth, CONNECT_TIMEOUT))
            .await
            .map_err(|_| anyhow::anyhow!("the hub did not answer in time"))??;
        tokio::time::timeout_at(deadline, dial::send_frame(&mut ws, &frame))
            .await
            .map_err(|_| late())??;
        // A verdict that arrives before the filing reply (a human faster than our read) is
        // kept, and taken once the reply says which prompt is ours.
        let mut early: Vec<ApprovalView> = Vec::new();
        let reply = dial::read_until(&mut ws, CONNECT_TIMEOUT, |f| match f {
            ServerFrame::Approval(a) => Some(Ok(a.approval)),
            ServerFrame::ApprovalVerdict(v) => {
                if early.len() < EARLY_VERDICTS {
                    early.push(v.approval);
                }
                None
            }
            ServerFrame::Error(e) if e.rid.is_some() => Some(Err(e.message)),
            _ => None,
        });
        let filed = tokio::time::timeout_at(deadline, reply)
            .await
            .map_err(|_| late())??
            .map_err(|why| anyhow::anyhow!("the hub refused the prompt: {why}"))?;
        tracing::info!("filed {} for {} ({})", filed.id, session.id, session.source);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let decided = match early.into_iter().find(|v| v.id == filed.id) {
            Some(v) => Ok(v),
            None => {
                dial::read_until(&mut ws, left, |f| match f {
                    ServerFrame::ApprovalVerdict(v) if v.approval.id == filed.id => {
                        Some(v.approval)
                    }
                    _ => None,
                })
                .await
            }
        };
        let _ = tokio::time::timeout_at(deadline, ws.close(None)).await;
        match decided {
            Ok(view) => Ok(output(&view)),
            Err(ConnectError::Timeout(..)) => {
                eprintln!(
                    "claude-relay approval-hook: no verdict for {} within {timeout} s (the local dialog stays)",
                    filed.id
                );
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// The hook output for a human's verdict; None for `expired` / `closed`.
fn output(view: &ApprovalView) -> Option<String> {
    let behavior = view.behavior()?;
    let by = view.by.as_deref().unwrap_or("a human");
    let message = view.message.clone().unwrap_or_else(|| {
        format!(
            "{} by {by} through the claude-relay approval inbox ({})",
            if behavior == "allow" {
                "Allowed"
            } else {
                "Denied"
            },
            view.id
        )
    });
    Some(
        json!({"hookSpecificOutput": {
            "hookEventName": "PermissionRequest",
            "decision": {"behavior": behavior, "message": message},
        }})
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_proto::wire_approvals::ApprovalState;

    fn view(state: ApprovalState, message: Option<&str>) -> ApprovalView {
        ApprovalView {
            id: "A-1".into(),
            session: "CC-1".into(),
            host: None,
            cwd: None,
            tool: "Bash".into(),
            summary: "ls".into(),
            preview: "{}".into(),
            truncated: false,
            input_chars: Some(2),
            source: ApprovalSource::Hook,
            request_id: None,
            state,
            created: 0,
            expires: 0,
            decided: Some(1),
            by: Some("cli? (token)".into()),
            from: None,
            message: message.map(str::to_string),
        }
    }

    #[test]
    fn only_a_verdict_prints() {
        assert_eq!(
            output(&view(ApprovalState::Denied, Some("not on main"))).as_deref(),
            Some(
                r#"{"hookSpecificOutput":{"hookEventName":"PermissionRequest","decision":{"behavior":"deny","message":"not on main"}}}"#
            )
        );
        assert!(
            output(&view(ApprovalState::Allowed, None))
                .unwrap()
                .contains(r#""behavior":"allow""#)
        );
        for quiet in [
            ApprovalState::Expired,
            ApprovalState::Closed,
            ApprovalState::Pending,
        ] {
            assert_eq!(output(&view(quiet, None)), None);
        }
    }
}
