//! The approval frames a client may send: `approval_file` (file a prompt and wait for its
//! verdict on this connection) and `approval_close` (it was answered locally). Neither can
//! answer a prompt; see the module header of [`super`].
//!
//! Who may file for a session: whoever may watch its mail — anyone for a name nobody owns,
//! only the holder of its owner secret for an owned one (checked on the store thread, as
//! `watch` does; a connection registered under the name has proven it already), and on a
//! hub with a token only a connection that presented it. Who may close: the connection that
//! filed it, or one registered under its session's name when that name is owned (holding an
//! owned name proves its secret; holding a name nobody owns proves nothing).
//!
//! Quotas are counted per filing connection: [`PER_SESSION`] pending prompts for one session
//! and [`PER_CONNECTION`] in all, so another token holder filing under CC-2's name fills only
//! its own quota, never CC-2's. What one connection can fill hub-wide is bounded by
//! [`HUB_PENDING`].

use relay_proto::{
    SessionId,
    chars::is_unsafe,
    time::now_ms,
    wire::{ServerFrame, codes},
    wire_approvals::{
        ApprovalClose, ApprovalFile, ApprovalReply, ApprovalState, DEFAULT_TIMEOUT_S,
        MAX_REQUEST_ID, MAX_TIMEOUT_S, MAX_TOOL, parse_approval_id,
    },
};
use tokio::time::{Duration, Instant};

use super::{FILE_BURST, FILE_RATE, HUB_PENDING, PER_CONNECTION, PER_SESSION, summary};
use crate::{
    HubState,
    auth::secret_matches,
    dispatch::ConnSession,
    limits::TokenBucket,
    store::approvals::{Decided, Decision, Filed, NewApproval},
};

/// `approval_file`.
pub(crate) async fn file(conn: &mut ConnSession, hub: &HubState, f: ApprovalFile) {
    let rid = f.rid.clone();
    let now = Instant::now();
    let bucket = conn
        .filing
        .get_or_insert_with(|| TokenBucket::new(FILE_RATE, FILE_BURST, now));
    if let Err(wait) = bucket.take(now) {
        return conn.error(
            codes::RATE_LIMITED,
            format!(
                "prompt NOT filed: over {FILE_RATE} prompts/s on this connection; retry in {} ms",
                wait.as_millis().max(1)
            ),
            rid,
        );
    }
    let id = match SessionId::parse(&f.client_id) {
        Ok(id) => id,
        Err(e) => return conn.error(codes::INVALID_ID, format!("invalid clientId: {e}"), rid),
    };
    let tool = f.tool.trim();
    if tool.is_empty() || tool.len() > MAX_TOOL || tool.chars().any(is_unsafe) {
        return conn.error(
            codes::BAD_FRAME,
            format!("tool must be 1 to {MAX_TOOL} bytes without control or bidi characters"),
            rid,
        );
    }
    if let Some(r) = &f.request_id
        && (r.is_empty() || r.len() > MAX_REQUEST_ID || r.chars().any(is_unsafe))
    {
        return conn.error(
            codes::BAD_FRAME,
            format!(
                "requestId must be 1 to {MAX_REQUEST_ID} bytes without control or bidi characters"
            ),
            rid,
        );
    }
    conn.filed.retain(|(n, _)| hub.approvals.is_waited(*n));
    if conn.filed.len() >= PER_CONNECTION {
        return conn.error(
            codes::TOO_LARGE,
            format!("this connection waits for {PER_CONNECTION} prompts already"),
            rid,
        );
    }
    if conn.filed.iter().filter(|(_, s)| *s == id).count() >= PER_SESSION {
        return conn.error(
            codes::TOO_LARGE,
            format!(
                "this connection has {PER_SESSION} prompts of {id} pending already; answer or let them expire"
            ),
            rid,
        );
    }
    let timeout = f
        .timeout_s
        .unwrap_or(DEFAULT_TIMEOUT_S)
        .clamp(1, MAX_TIMEOUT_S);
    let now = now_ms();
    let preview = summary::preview(f.input.as_ref(), f.input_preview.as_deref());
    let new = NewApproval {
        session: id.to_string(),
        host: summary::place(f.host.as_deref()),
        cwd: summary::place(f.cwd.as_deref()),
        tool: tool.to_string(),
        summary: summary::summary(tool, f.input.as_ref(), f.input_preview.as_deref()),
        preview: preview.text,
        truncated: preview.truncated,
        input_chars: preview.input_chars,
        source: f.source,
        request_id: f.request_id.clone(),
        created: now,
        expires: now + (timeout * 1000) as i64,
    };
    let secret = f.owner_secret;
    // A connection registered under the name proved it already (its bridge).
    let holds_name = conn.id.as_ref().is_some_and(|i| i.as_str() == id.as_str());
    // The prompt becomes answerable (visible to GET, decidable by POST) when the store call
    // returns; every decision runs on the same store thread after it. So the filing reply is
    // queued and the waiter registered inside the call: a verdict given at once still finds
    // its waiter, and reaches the filer after the reply that told it the id.
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let (outbox, approvals, feed) = (conn.outbox.clone(), hub.approvals.clone(), hub.feed.clone());
    let reply_rid = rid.clone();
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
                let filed = match b.approvals() {
                    Some(a) => a.file(&new, HUB_PENDING)?,
                    None => Filed::HubFull(0),
                };
                if let Filed::New(row) = &filed {
                    let _ = outbox.push_json(&ServerFrame::Approval(ApprovalReply {
                        approval: row.view.clone(),
                        rid: reply_rid,
                    }));
                    approvals.wait(row.n, outbox, deadline);
                    feed.approval(row.view.clone());
                }
                Ok(Some(filed))
            })
            .await
    };
    let row = match filed {
        Ok(Some(Filed::New(row))) => row,
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
            return conn.store_error(e, rid);
        }
    };
    // Replied to, waited for and published on the store thread (above).
    conn.filed.push((row.n, id.clone()));
    tracing::info!(id = %row.view.id, session = %id, tool = %row.view.tool, addr = %conn.addr, "approval filed");
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
    let mine = conn.filed.iter().any(|(x, _)| *x == n);
    let registered = conn.id.as_ref().map(|i| i.to_string());
    let found = hub
        .store
        .call(move |b| {
            let Some(row) = (match b.approvals() {
                Some(a) => a.get(n)?,
                None => None,
            }) else {
                return Ok(None);
            };
            let owned = b.owner_hash(&row.view.session)?.is_some();
            Ok(Some((row, owned)))
        })
        .await;
    let row = match found {
        // The filer; or the holder of the session's name, when holding it proves a secret.
        Ok(Some((row, owned)))
            if mine || (owned && registered.as_deref() == Some(row.view.session.as_str())) =>
        {
            row
        }
        Ok(_) => {
            return conn.error(
                codes::NOT_FOUND,
                format!("no prompt {} filed by this connection or its session", c.id),
                rid,
            );
        }
        Err(e) => {
            return conn.store_error(e, rid);
        }
    };
    let decision = Decision {
        state: ApprovalState::Closed,
        by: row.view.session.clone(),
        from: Some(conn.addr.ip().to_string()),
        message: Some("answered locally".into()),
        at: now_ms(),
    };
    match super::decide(hub, n, decision).await {
        Ok(Decided::Done(row) | Decided::Already(row)) => {
            conn.filed.retain(|(x, _)| *x != n);
            conn.reply(ServerFrame::Approval(ApprovalReply {
                approval: row.view.clone(),
                rid,
            }))
        }
        Ok(Decided::NotFound) => conn.error(codes::NOT_FOUND, "no such prompt", rid),
        Err(e) => conn.store_error(e, rid),
    }
}
