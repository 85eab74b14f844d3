//! Permission relay over Claude Code channels (docs/BRIDGE.md, "Permission prompts";
//! docs/SECURITY.md, "Approvals").
//!
//! With channel push on, the bridge also declares the experimental capability
//! [`CAPABILITY`]. Claude Code then sends [`REQUEST_METHOD`] (`request_id`, `tool_name`,
//! `description`, `input_preview`) when a permission dialog opens; the bridge files it on the
//! hub's approval inbox (`approval_file`, source `channel`) under its own session. When a
//! human answers there, the hub pushes `approval_verdict` and the bridge sends
//! [`VERDICT_METHOD`] `{request_id, behavior}`. Whichever answer comes first — the local
//! dialog or the remote one — wins in Claude Code; a prompt answered locally is closed on the
//! hub at the session's next tool call (the dialog is over by then), or when the bridge's
//! connection ends.
//!
//! The bridge only relays a human's verdict: nothing an agent sends through it (a tool call,
//! a relay message) can make one — the hub has no frame that answers a prompt.
//!
//! Bounds: at most [`MAX_OPEN`] prompts remembered as open (older ones are dropped from
//! the memory, and expire on the hub), every string capped by the hub
//! (`relay_proto::wire_approvals`), request ids checked here ([`MAX_REQUEST_ID`]).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError},
};

use relay_proto::{
    wire::{ClientFrame, ServerFrame},
    wire_approvals::{ApprovalClose, ApprovalFile, ApprovalSource, ApprovalView, MAX_REQUEST_ID},
};
use rmcp::{
    RoleServer,
    model::{CustomNotification, ServerNotification},
    service::Peer,
};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::hub_client::HubClient;

/// The experimental capability that asks Claude Code for permission prompts.
pub(crate) const CAPABILITY: &str = "claude/channel/permission";
/// What Claude Code sends when a permission dialog opens.
pub(crate) const REQUEST_METHOD: &str = "notifications/claude/channel/permission_request";
/// What the bridge sends with a human's verdict.
pub(crate) const VERDICT_METHOD: &str = "notifications/claude/channel/permission";
/// Prompts remembered as open (to close them at the next tool call).
pub(crate) const MAX_OPEN: usize = 32;

/// The channel prompts this bridge filed and has not seen decided.
#[derive(Clone, Default)]
pub(crate) struct Open {
    state: Arc<Mutex<OpenState>>,
}

#[derive(Default)]
struct OpenState {
    ids: VecDeque<String>,
    /// Tool calls seen so far: a prompt whose filing was answered after a tool call is
    /// already answered locally (see [`Open::filed`]).
    calls: u64,
}

impl Open {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpenState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tool calls seen so far (read before filing a prompt).
    fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// The hub filed prompt `id`, asked for when `calls` tool calls had been seen. Returns
    /// false if a tool call came in while the filing was on its way: the dialog was answered
    /// locally before the prompt was known here, and it must be closed now (else it would
    /// stay open on the hub until it expires).
    fn filed(&self, id: String, calls: u64) -> bool {
        let mut s = self.lock();
        if s.calls != calls {
            return false;
        }
        if s.ids.len() >= MAX_OPEN {
            s.ids.pop_front();
        }
        s.ids.push_back(id);
        true
    }

    fn remove(&self, id: &str) {
        self.lock().ids.retain(|x| x != id);
    }

    /// A tool call arrived: every open prompt was answered locally. Reports them closed.
    pub(crate) fn tool_called(&self, hub: &HubClient) {
        for id in self.answered() {
            close(hub, id);
        }
    }

    /// Counts a tool call and takes the prompts it answered.
    fn answered(&self) -> Vec<String> {
        let mut s = self.lock();
        s.calls += 1;
        s.ids.drain(..).collect()
    }
}

/// Reports prompt `id` closed on the hub (answered locally), in the background.
fn close(hub: &HubClient, id: String) {
    let hub = hub.clone();
    tokio::spawn(async move {
        let frame = ClientFrame::ApprovalClose(ApprovalClose { id, rid: None });
        if let Err(e) = hub.request(frame).await {
            tracing::debug!("approval not reported closed: {e}");
        }
    });
}

/// Files one `permission_request` on the hub.
pub(crate) async fn forward(hub: &HubClient, open: &Open, params: Option<Value>) {
    let p = params.unwrap_or(Value::Null);
    let s = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(request_id), Some(tool)) = (s("request_id"), s("tool_name")) else {
        tracing::warn!("permission_request without request_id or tool_name: ignored");
        return;
    };
    if request_id.is_empty() || request_id.len() > MAX_REQUEST_ID {
        tracing::warn!("permission_request with an unusable request_id: ignored");
        return;
    }
    let frame = ClientFrame::ApprovalFile(ApprovalFile {
        client_id: hub.id(),
        owner_secret: None,
        token: None,
        tool,
        input: None,
        input_preview: s("input_preview"),
        description: s("description"),
        cwd: std::env::current_dir()
            .ok()
            .map(|d| d.display().to_string()),
        host: Some(relay_local::identity::short_hostname()).filter(|h| !h.is_empty()),
        source: ApprovalSource::Channel,
        request_id: Some(request_id),
        timeout_s: None,
        rid: None,
    });
    let calls = open.calls();
    match hub.request(frame).await {
        Ok(ServerFrame::Approval(a)) => {
            tracing::info!("permission prompt filed as {}", a.approval.id);
            if !open.filed(a.approval.id.clone(), calls) {
                close(hub, a.approval.id);
            }
        }
        Ok(ServerFrame::Error(e)) => tracing::warn!("permission prompt refused: {}", e.message),
        Ok(other) => tracing::warn!("unexpected reply to approval_file: {other:?}"),
        Err(e) => tracing::warn!("permission prompt not filed: {e}"),
    }
}

/// The notification carrying a human's verdict, for a channel prompt.
pub(crate) fn verdict(view: &ApprovalView) -> Option<ServerNotification> {
    let behavior = view.behavior()?;
    let request_id = view.request_id.as_ref()?;
    (view.source == ApprovalSource::Channel).then(|| {
        ServerNotification::CustomNotification(CustomNotification::new(
            VERDICT_METHOD,
            Some(json!({"request_id": request_id, "behavior": behavior})),
        ))
    })
}

/// Sends each verdict the hub pushes for this session's channel prompts to the client,
/// until the client goes away or the hub client is dropped.
pub(crate) async fn pump(
    mut verdicts: broadcast::Receiver<ApprovalView>,
    open: Open,
    peer: Peer<RoleServer>,
) {
    loop {
        let view = match verdicts.recv().await {
            Ok(v) => v,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("{n} approval verdicts were missed; those dialogs stay open");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        open.remove(&view.id);
        let Some(n) = verdict(&view) else { continue };
        if let Err(e) = peer.send_notification(n).await {
            tracing::info!("permission relay stopped: {e}");
            break;
        }
        tracing::info!("verdict for {} sent to the client", view.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_whose_filing_crossed_a_tool_call_is_closed_not_kept() {
        let open = Open::default();
        let calls = open.calls();
        assert!(
            open.filed("A-1".into(), calls),
            "no tool call meanwhile: kept open"
        );
        // The dialog of A-2 opens, its filing is on its way, and a tool call comes first
        // (the human answered in the terminal): the tool call finds only A-1 ...
        let calls = open.calls();
        assert_eq!(open.answered(), ["A-1"]);
        // ... and A-2, filed after it, is to be closed at once, not kept.
        assert!(!open.filed("A-2".into(), calls));
        assert!(open.answered().is_empty());
    }
}
