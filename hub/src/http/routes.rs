//! Which path does what, who may ask, and the headers every answer carries.
//!
//! | path | method | who |
//! |---|---|---|
//! | `/healthz` | GET | anyone (reveals status, version, uptime, store state only) |
//! | `/metrics` | GET | operator |
//! | `/` | GET | operator; anyone else gets the login form (401) on a hub with a token |
//! | `/console.css`, `/console.js` | GET | anyone (static, no data) |
//! | `/login`, `/logout` | POST | anyone / a logged-in browser; CSRF-checked |
//! | `/api/state`, `/api/message?seq=N`, `/api/feed`, `/api/approvals` | GET | operator |
//! | `/api/approvals/A-n` | GET | operator (one prompt with its audit trail) |
//! | `/api/approvals/A-n` | POST | operator; CSRF-checked (a human's verdict) |
//!
//! "Operator" is decided by [`super::auth::access`]. Nothing here changes the hub's state
//! except logging in and out, and answering a permission prompt.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderValue},
};

use super::{Body, Ctx, approvals, auth, console, health, sse};

/// The Content-Security-Policy of every answer: nothing inline, nothing from elsewhere, no
/// framing. The console's script and styles are separate files from this origin.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// Answers one request.
pub(crate) async fn handle(req: Request<Incoming>, cx: &Ctx) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let get = method == Method::GET || method == Method::HEAD;
    let mut resp = match (get, method == Method::POST, path.as_str()) {
        (true, _, "/healthz") => health::get(cx).await,
        (true, _, "/console.css") => asset("text/css; charset=utf-8", console::CSS),
        (true, _, "/console.js") => asset("text/javascript; charset=utf-8", console::JS),
        (true, _, "/favicon.ico") => empty(StatusCode::NO_CONTENT),
        (true, _, "/") => match auth::access(cx, &req) {
            Ok(_) => html(StatusCode::OK, console::PAGE.to_string()),
            Err(denied) => auth::login_page(cx, denied, None),
        },
        (_, true, p) if p.starts_with("/api/approvals/") => {
            let id = p.trim_start_matches("/api/approvals/").to_string();
            approvals::answer(cx, req, &id).await
        }
        (true, _, p) if p.starts_with("/api/approvals/") => match auth::access(cx, &req) {
            Err(denied) => auth::denied_response(denied),
            Ok(_) => approvals::one(cx, p.trim_start_matches("/api/approvals/")).await,
        },
        (true, _, "/metrics" | "/api/state" | "/api/message" | "/api/feed" | "/api/approvals") => {
            match auth::access(cx, &req) {
                Err(denied) => auth::denied_response(denied),
                Ok(who) => match path.as_str() {
                    "/metrics" => metrics(cx),
                    "/api/state" => console::state(cx, &who).await,
                    "/api/message" => console::message(cx, req.uri().query()).await,
                    "/api/approvals" => approvals::list(cx, &who).await,
                    _ => sse::feed(cx),
                },
            }
        }
        (_, true, "/login") => auth::login(cx, req).await,
        (_, true, "/logout") => auth::logout(cx, req),
        (
            _,
            _,
            "/healthz" | "/metrics" | "/" | "/api/state" | "/api/message" | "/api/feed"
            | "/api/approvals" | "/login" | "/logout" | "/console.css" | "/console.js",
        ) => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    secure(&mut resp);
    if method == Method::HEAD {
        *resp.body_mut() = Full::new(Bytes::new()).boxed_unsync();
    }
    resp
}

fn metrics(cx: &Ctx) -> Response<Body> {
    let text = cx
        .hub
        .metrics
        .render(cx.hub.router.online().len(), cx.hub.feed.subscribers());
    let mut r = Response::new(full(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

/// The headers every answer carries.
fn secure(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it browsers send `Origin: null` on the page's own POSTs, and
    // the CSRF check needs the real origin. Other origins still get no referrer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

/// A whole body.
pub(crate) fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed_unsync()
}

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// An HTML answer.
pub(crate) fn html(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// An answer without a body.
pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// 503 with a reason.
pub(crate) fn unavailable(why: &str) -> Response<Body> {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, &format!("{why}\n"));
    secure(&mut r);
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
