//! The approval inbox over HTTP: the one place a prompt is answered
//! (docs/CONSOLE.md, "Approvals"; docs/SECURITY.md, "Approvals").
//!
//! - `GET /api/approvals`: pending prompts (oldest first) and the most recent verdicts,
//!   with the CSRF token a page of this viewer must send. The operator only.
//! - `POST /api/approvals/A-n` with `{"behavior":"allow"|"deny","message":…}`: a human's
//!   verdict. The operator only, and CSRF-checked like every state change
//!   ([`auth::check_change`]): same origin, plus the login's CSRF token for a browser (none
//!   for a `Bearer` request, which no browser sends on its own). The first answer wins; a
//!   prompt decided already answers 409 with its verdict.
//!
//! Who answered is recorded as `<via> (<how>)`, with the peer address and the time, in the
//! prompt's audit trail. `how` is what the hub checked — how the client proved it is the
//! operator (`token`, `login`, `loopback`) — and the address is the connection's. `via` is
//! only a name: `console` for a browser login (its cookie says so); otherwise what the
//! client *claims* in `X-Relay-Client` (`cli`, …; letters, digits and `-`, at most 32),
//! recorded with a `?` (`cli? (token)`) because any token holder can send any name, or
//! `http` when it names none. A login's claim is ignored.

use http_body_util::{BodyExt, Limited};
use hyper::{Request, Response, StatusCode, body::Incoming};
use relay_proto::{
    time::now_ms,
    wire_approvals::{Answer, ApprovalState, MAX_MESSAGE, parse_approval_id},
};
use serde_json::json;

use super::{Body, Ctx, auth, routes};
use crate::{
    approvals::{LIST_PENDING, LIST_RECENT, decide},
    operator::Operator,
    store::approvals::{Decided, Decision},
};

/// The header a client names itself in.
const CLIENT_HEADER: &str = "x-relay-client";

/// `GET /api/approvals`.
pub(crate) async fn list(cx: &Ctx, who: &auth::Who) -> Response<Body> {
    let rows = cx
        .hub
        .store
        .call(|b| match b.approvals() {
            Some(a) => a.list(LIST_PENDING, LIST_RECENT),
            None => Ok(Vec::new()),
        })
        .await;
    match rows {
        Ok(rows) => routes::json(
            StatusCode::OK,
            &json!({
                "approvals": rows.iter().map(|r| &r.view).collect::<Vec<_>>(),
                "csrf": who.csrf(cx),
                "now": now_ms(),
            }),
        ),
        Err(e) => {
            tracing::warn!("approvals: store read failed: {e}");
            routes::text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the hub's store did not answer\n",
            )
        }
    }
}

/// `GET /api/approvals/A-n`: one prompt with its audit trail (who filed it; who decided it,
/// from where, when, with what message). The operator only.
pub(crate) async fn one(cx: &Ctx, id: &str) -> Response<Body> {
    let Some(n) = parse_approval_id(id) else {
        return routes::text(StatusCode::NOT_FOUND, "no such approval (ids are A-n)\n");
    };
    let found = cx
        .hub
        .store
        .call(move |b| match b.approvals() {
            Some(a) => Ok(a.get(n)?.map(|r| (r, a.events(n)))),
            None => Ok(None),
        })
        .await;
    match found {
        Ok(Some((row, Ok(events)))) => routes::json(
            StatusCode::OK,
            &json!({
                "approval": &row.view,
                "trail": events.iter().map(|e| json!({
                    "at": e.at,
                    "state": e.state,
                    "by": e.by,
                    "from": e.from,
                    "message": e.message,
                })).collect::<Vec<_>>(),
            }),
        ),
        Ok(None) => routes::text(StatusCode::NOT_FOUND, "no such approval\n"),
        Ok(Some((_, Err(e)))) | Err(e) => {
            tracing::warn!("approvals: store read failed: {e}");
            routes::text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the hub's store did not answer\n",
            )
        }
    }
}

/// `POST /api/approvals/A-n`.
pub(crate) async fn answer(cx: &Ctx, req: Request<Incoming>, id: &str) -> Response<Body> {
    let who = match auth::access(cx, &req) {
        Ok(w) => w,
        Err(d) => return auth::denied_response(d),
    };
    if let Err(f) = auth::check_change(cx, &req, &who) {
        return f.response();
    }
    let Some(n) = parse_approval_id(id) else {
        return routes::text(StatusCode::NOT_FOUND, "no such approval (ids are A-n)\n");
    };
    let claimed = req
        .headers()
        .get(CLIENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 32
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let via = match (who.how == Operator::Login, claimed) {
        (true, _) => "console".to_string(),
        (false, Some(name)) => format!("{name}?"),
        (false, None) => "http".to_string(),
    };
    let body = match Limited::new(req.into_body(), cx.hub.config.http_max_body_bytes)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return routes::text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
    };
    let answer: Answer = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return routes::text(
                StatusCode::BAD_REQUEST,
                &format!("give {{\"behavior\":\"allow\"|\"deny\",\"message\":…}}: {e}\n"),
            );
        }
    };
    let state = match answer.behavior.as_str() {
        "allow" => ApprovalState::Allowed,
        "deny" => ApprovalState::Denied,
        other => {
            return routes::text(
                StatusCode::BAD_REQUEST,
                &format!("behavior must be allow or deny, not {other:?}\n"),
            );
        }
    };
    let message = answer
        .message
        .map(|m| crate::approvals::one_line(&m, MAX_MESSAGE))
        .filter(|m| !m.is_empty());
    let decision = Decision {
        state,
        by: format!("{via} ({})", who.how.how()),
        from: Some(cx.addr.ip().to_string()),
        message,
        at: now_ms(),
    };
    match decide(&cx.hub, n, decision).await {
        Ok(Decided::Done(row)) => routes::json(StatusCode::OK, &json!({"approval": &row.view})),
        Ok(Decided::Already(row)) => {
            routes::json(StatusCode::CONFLICT, &json!({"approval": &row.view}))
        }
        Ok(Decided::NotFound) => routes::text(StatusCode::NOT_FOUND, "no such approval\n"),
        Err(e) => {
            tracing::warn!("approvals: store write failed: {e}");
            routes::text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the hub's store did not answer\n",
            )
        }
    }
}
