//! The approval frames a client may send: `approval_file` (file a prompt and wait for its
//! verdict on this connection) and `approval_close` (it was answered locally). Neither can
//! answer a prompt; see the module header of [`super`].
//!
//! Who may file for a session: whoever may watch its mail — anyone for a name nobody owns,
//! only the holder of its owner secret for an owned one (checked on the store thread, as
//! `watch` does; a connection registered under the name has proven it already), and on a
//! hub with a token only a connection that presented it. Who may
//! close: the connection that filed it, or one registered as its session.

use relay_proto::{
    SessionId,
    time::now_ms,
    wire::{ServerFrame, codes},
    wire_approvals::{
        ApprovalClose, ApprovalFile, ApprovalReply, ApprovalState, DEFAULT_TIMEOUT_S,
        MAX_REQUEST_ID, MAX_TIMEOUT_S, MAX_TOOL, parse_approval_id,
    },
};
use tokio::time::{Duration, Instant};

use super::{HUB_PENDING, PER_CONNECTION, PER_SESSION, summary};
use crate::{
    HubState,
    auth::secret_matches,
    dispatch::ConnSession,
    store::approvals::{Decided, Decision, Filed, NewApproval},
};

/// `approval_file`.
pub(crate) async fn file(conn: &mut ConnSession, hub: &HubState, f: ApprovalFile) {
    let rid = f.rid.clone();
    let id = match SessionId::parse(&f.client_id) {
        Ok(id) => id,
        Err(e) => return conn.error(codes::INVALID_ID, format!("invalid clientId: {e}"), rid),
    };
    let tool = f.tool.trim();
    if tool.is_empty() || tool.len() > MAX_TOOL || tool.chars().any(char::is_control) {
        return conn.error(
            codes::BAD_FRAME,
            format!("tool must be 1 to {MAX_TOOL} bytes without control characters"),
            rid,
        );
    }
    if let Some(r) = &f.request_id
        && (r.is_empty() || r.len() > MAX_REQUEST_ID || r.chars().any(char::is_control))
    {
        return conn.error(
            codes::BAD_FRAME,
            format!("requestId must be 1 to {MAX_REQUEST_ID} bytes without control characters"),
            rid,
        );
    }
    conn.filed.retain(|n| hub.approvals.is_waited(*n));
    if conn.filed.len() >= PER_CONNECTION {
        return conn.error(
            codes::TOO_LARGE,
            format!("this connection waits for {PER_CONNECTION} prompts already"),
            rid,
        );
    }
    let timeout = f
        .timeout_s
        .unwrap_or(DEFAULT_TIMEOUT_S)
        .clamp(1, MAX_TIMEOUT_S);
    let now = now_ms();
    let new = NewApproval {
        session: id.to_string(),
        host: summary::place(f.host.as_deref()),
        cwd: summary::place(f.cwd.as_deref()),
        tool: tool.to_string(),
        summary: summary::summary(tool, f.input.as_ref(), f.description.as_deref()),
        preview: summary::preview(f.input.as_ref(), f.input_preview.as_deref()),
        source: f.source,
        request_id: f.request_id.clone(),
        created: now,
        expires: now + (timeout * 1000) as i64,
    };
    let secret = f.owner_secret;
    // A connection registered under the name proved it already (its bridge).
    let holds_name = conn.id.as_ref().is_some_and(|i| i.as_str() == id.as_str());
    let filed = {
        let id = id.clone();
        hub.store
            .call(move |b| {
                if !holds_name
                    && let Some(h) = b.owner_hash(id.as_str())?
                    && !secret.as_deref().is_some_and(|s| secret_matches(&h, s))
                {
                    return Ok(None);
                }
                match b.approvals() {
                    Some(a) => a.file(&new, PER_SESSION, HUB_PENDING).map(Some),
                    None => Ok(Some(Filed::HubFull(0))),
                }
            })
            .await
    };
    let row = match filed {
        Ok(Some(Filed::New(row))) => row,
        Ok(Some(Filed::SessionFull(n))) => {
            return conn.error(
                codes::TOO_LARGE,
                format!("{id} has {n} prompts pending already; answer or let them expire"),
                rid,
            );
        }
        Ok(Some(Filed::HubFull(n))) => {
            return conn.error(
                codes::UNAVAILABLE,
                format!("the hub holds {n} pending prompts already"),
                rid,
            );
        }
        Ok(None) => {
            return conn.error(
                codes::NOT_OWNER,
                format!("{id} is owned: filing its prompts needs its owner secret"),
                rid,
            );
        }
        Err(e) => {
            return conn.error(
                codes::UNAVAILABLE,
                format!("hub store unavailable: {e}"),
                rid,
            );
        }
    };
    hub.approvals.wait(
        row.n,
        conn.outbox.clone(),
        Instant::now() + Duration::from_secs(timeout),
    );
    conn.filed.push(row.n);
    tracing::info!(id = %row.id(), session = %id, tool = %row.tool, addr = %conn.addr, "approval filed");
    conn.reply(ServerFrame::Approval(ApprovalReply {
        approval: row.view(),
        rid,
    }));
    hub.feed.approval(row.view());
}

/// `approval_close`.
pub(crate) async fn close(conn: &mut ConnSession, hub: &HubState, c: ApprovalClose) {
    let rid = c.rid.clone();
    let Some(n) = parse_approval_id(&c.id) else {
        return conn.error(
            codes::BAD_FRAME,
            format!("{:?} is not an approval id (A-n)", c.id),
            rid,
        );
    };
    let mine = conn.filed.contains(&n);
    let registered = conn.id.as_ref().map(|i| i.to_string());
    let found = hub
        .store
        .call(move |b| match b.approvals() {
            Some(a) => a.get(n),
            None => Ok(None),
        })
        .await;
    let row = match found {
        Ok(Some(row)) if mine || registered.as_deref() == Some(row.session.as_str()) => row,
        Ok(_) => {
            return conn.error(
                codes::NOT_FOUND,
                format!("no prompt {} filed by this connection or its session", c.id),
                rid,
            );
        }
        Err(e) => {
            return conn.error(
                codes::UNAVAILABLE,
                format!("hub store unavailable: {e}"),
                rid,
            );
        }
    };
    let decision = Decision {
        state: ApprovalState::Closed,
        by: row.session.clone(),
        from: Some(conn.addr.ip().to_string()),
        message: Some("answered locally".into()),
        at: now_ms(),
    };
    match super::decide(hub, n, decision).await {
        Ok(Decided::Done(row) | Decided::Already(row)) => {
            conn.filed.retain(|x| *x != n);
            conn.reply(ServerFrame::Approval(ApprovalReply {
                approval: row.view(),
                rid,
            }))
        }
        Ok(Decided::NotFound) => conn.error(codes::NOT_FOUND, "no such prompt", rid),
        Err(e) => conn.error(
            codes::UNAVAILABLE,
            format!("hub store unavailable: {e}"),
            rid,
        ),
    }
}
