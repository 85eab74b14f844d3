//! Who may see the operator's pages, and how a browser logs in (docs/SECURITY.md, "The
//! operator" and "The console, metrics and tail").
//!
//! Whether a request is the operator's is decided by [`crate::operator::decide`], the one
//! rule the whole hub uses; this module only gathers what the request presented:
//!
//! - **Hub with a token**: an `Authorization: Bearer TOKEN` header (scripts, Prometheus), or
//!   the login form, which trades the token for a session cookie: `relay_session`, random,
//!   `HttpOnly; SameSite=Strict; Path=/` (plus `Secure` over TLS), valid for [`LOGIN_TTL`],
//!   kept in memory (at most [`MAX_LOGINS`]; a restart logs everyone out). The token never
//!   travels in a URL and is never logged; neither is the cookie.
//! - **Hub without a token** (it binds loopback unless `--insecure`): only loopback peers,
//!   and only with a loopback `Host` header (`localhost`, `127.x`, `[::1]`), so a web page on
//!   another origin cannot read the console through DNS rebinding.
//!
//! CSRF: every state-changing request (logging in and out, answering an approval)
//! must pass [`check_change`]: its `Origin` must be this hub's own origin (or, without
//! `Origin` or with `Origin: null`, `Sec-Fetch-Site: same-origin` — a header no page can
//! set; a request with neither is refused) **and** it must
//! carry a CSRF token — for the login form, a double-submitted one (a `relay_csrf` cookie and
//! the same value in the form); afterwards, the login's own token in an `X-Relay-CSRF`
//! header. On top of that the cookies are `SameSite=Strict`. A Bearer request needs no CSRF
//! token: no browser attaches that header on its own.

use relay_proto::token::HubToken;
use std::{collections::HashMap, sync::Mutex, time::Duration};

use http_body_util::{BodyExt, Limited};
use hyper::{
    Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderValue},
};
use tokio::time::Instant;

use super::{Body, Ctx, routes};
use crate::{
    HubState,
    auth::{bearer, ct_eq, hash_secret, mint_secret},
    operator::{self, Claim, Denied, Key, Operator},
    refusals::ConnRefusal,
};

/// How long a console login lasts.
pub(super) const LOGIN_TTL: Duration = Duration::from_secs(12 * 3600);
/// Console logins kept at once; the oldest goes first.
pub(super) const MAX_LOGINS: usize = 64;
/// The login cookie.
const SESSION_COOKIE: &str = "relay_session";
/// The login form's double-submit cookie.
const CSRF_COOKIE: &str = "relay_csrf";
/// The header carrying the CSRF token of a logged-in page.
pub(super) const CSRF_HEADER: &str = "x-relay-csrf";

const LOGIN_HTML: &str = include_str!("../../assets/login.html");

/// The console logins (hashes of their cookies), and the CSRF token of a token-less hub.
pub(crate) struct Logins {
    by_hash: Mutex<HashMap<String, Login>>,
    open_csrf: String,
}

struct Login {
    expires: Instant,
    csrf: String,
}

impl Default for Logins {
    fn default() -> Self {
        Self {
            by_hash: Mutex::new(HashMap::new()),
            open_csrf: mint_secret(),
        }
    }
}

impl Logins {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Login>> {
        self.by_hash.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The CSRF token of a live login.
    fn find(&self, cookie: &str) -> Option<String> {
        let mut map = self.lock();
        let key = hash_secret(cookie);
        match map.get(&key) {
            Some(l) if l.expires > Instant::now() => Some(l.csrf.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// A new login: its cookie value and CSRF token.
    fn create(&self) -> (String, String) {
        let cookie = mint_secret();
        let csrf = mint_secret();
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, l| l.expires > now);
        if map.len() >= MAX_LOGINS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, l)| l.expires)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            hash_secret(&cookie),
            Login {
                expires: now + LOGIN_TTL,
                csrf: csrf.clone(),
            },
        );
        (cookie, csrf)
    }

    fn remove(&self, cookie: &str) {
        self.lock().remove(&hash_secret(cookie));
    }
}

/// The operator, once allowed, and how a page of theirs proves a state change is theirs.
pub(crate) struct Who {
    /// How they got in.
    pub(crate) how: Operator,
    /// The CSRF token of a login (None otherwise).
    login_csrf: Option<String>,
}

impl Who {
    /// The CSRF token a page of this viewer must send with a state change (none for Bearer).
    pub(crate) fn csrf<'a>(&'a self, cx: &'a Ctx) -> Option<&'a str> {
        match self.how {
            Operator::Token => None,
            Operator::Login => self.login_csrf.as_deref(),
            Operator::Loopback => Some(&cx.hub.http.logins.open_csrf),
        }
    }
}

/// The answer to a request that is not the operator's: 401 (with `WWW-Authenticate`) when
/// the token would help, 403 when nothing would.
pub(crate) fn denied_response(d: Denied) -> Response<Body> {
    let status = match d {
        Denied::NeedToken | Denied::WrongToken => StatusCode::UNAUTHORIZED,
        Denied::NotLoopback | Denied::BadHost | Denied::ForeignOrigin => StatusCode::FORBIDDEN,
    };
    let mut r = routes::text(status, &format!("{}\n", d.why()));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"claude-relay\""),
        );
    }
    r
}

/// Decides whether `req` is the operator's (through [`operator::decide`]). A wrong token is
/// a refusal the operator sees in the log and in `/metrics`; a request without one is not
/// (that is every first visit to the console). A request that is the operator's
/// authenticates its connection on a hub with a token (see [`super::serve`]).
pub(crate) fn access<B>(cx: &Ctx, req: &Request<B>) -> Result<Who, Denied> {
    let header = |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    let cookies = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let (key, login_csrf) = credential(&cx.hub, header(header::AUTHORIZATION), cookies);
    let claim = Claim {
        peer: cx.addr.ip(),
        host: host(req),
        origin: header(header::ORIGIN),
        tls: cx.tls,
        key,
    };
    match operator::decide(cx.hub.config.token.as_ref().map(HubToken::expose), &claim) {
        Ok(how) => {
            cx.authenticated();
            Ok(Who { how, login_csrf })
        }
        Err(d) => {
            if d == Denied::WrongToken {
                cx.hub.refusals.connection(
                    cx.addr,
                    ConnRefusal::Unauthorized,
                    "invalid hub token in the Authorization header of an HTTP request",
                );
            }
            Err(d)
        }
    }
}

/// The credential in a request's `Authorization` header (a Bearer token, checked later by
/// [`operator::decide`]) or, without one, its login cookie (with that login's CSRF token).
/// Takes the header values, so that the hub can also read the raw head of a connection's
/// first request (see [`super::route`]).
pub(crate) fn credential<'a>(
    hub: &HubState,
    authorization: Option<&'a str>,
    cookies: impl Iterator<Item = &'a str>,
) -> (Key<'a>, Option<String>) {
    if let Some(h) = authorization {
        return (Key::Token(bearer(h).unwrap_or_default()), None);
    }
    match cookie_in(cookies, SESSION_COOKIE).and_then(|c| hub.http.logins.find(c)) {
        Some(csrf) => (Key::Login, Some(csrf)),
        None => (Key::None, None),
    }
}

/// A state-changing request refused (403), with the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Forbidden(&'static str);

impl Forbidden {
    pub(crate) fn response(self) -> Response<Body> {
        routes::text(StatusCode::FORBIDDEN, &format!("{}\n", self.0))
    }
}

/// Checks a state-changing request from `who` (see the module header): same origin, and the
/// CSRF token where one is due.
pub(crate) fn check_change<B>(cx: &Ctx, req: &Request<B>, who: &Who) -> Result<(), Forbidden> {
    if who.how == Operator::Token {
        // A Bearer header: no browser sends one on its own, and a page of another origin
        // cannot add it without a CORS preflight this hub never grants. Scripts and
        // `claude-relay approvals` send no Origin at all.
        return Ok(());
    }
    same_origin(cx, req)?;
    match who.csrf(cx) {
        None => Ok(()),
        Some(expected) => match req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
            Some(t) if ct_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
            _ => Err(Forbidden("missing or wrong CSRF token")),
        },
    }
}

/// The login form (401), with a fresh double-submit CSRF token, or the refusal for viewers
/// that no login can help.
pub(crate) fn login_page(cx: &Ctx, denied: Denied, error: Option<&str>) -> Response<Body> {
    if matches!(
        denied,
        Denied::NotLoopback | Denied::BadHost | Denied::ForeignOrigin
    ) {
        return denied_response(denied);
    }
    let csrf = mint_secret();
    let page = LOGIN_HTML
        .replace("{{csrf}}", &csrf)
        .replace("{{error}}", &escape_html(error.unwrap_or("")));
    let mut r = routes::html(StatusCode::UNAUTHORIZED, page);
    set_cookie(&mut r, cx, CSRF_COOKIE, &csrf, Some(600));
    r
}

/// `POST /login`: the form's token for a session cookie.
pub(crate) async fn login(cx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    if let Err(f) = same_origin(cx, &req) {
        return f.response();
    }
    if cx.hub.config.token.is_none() {
        return routes::text(
            StatusCode::NOT_FOUND,
            "this hub has no token: there is nothing to log in to\n",
        );
    }
    // Guessing costs: a few tries at once, then one a second per address.
    if cx.hub.limits.login(cx.addr.ip()).is_err() {
        return routes::text(
            StatusCode::TOO_MANY_REQUESTS,
            "too many attempts; wait a moment\n",
        );
    }
    let csrf_cookie = cookie(&req, CSRF_COOKIE).map(str::to_string);
    let body = match Limited::new(req.into_body(), cx.hub.config.http_max_body_bytes)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return routes::text(StatusCode::PAYLOAD_TOO_LARGE, "form too large\n"),
    };
    let form = parse_form(&body);
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match (csrf_cookie.as_deref(), field("csrf")) {
        (Some(c), Some(f)) if !c.is_empty() && ct_eq(c.as_bytes(), f.as_bytes()) => {}
        _ => return Forbidden("missing or wrong CSRF token: reload the login page").response(),
    }
    // A login is made only for whom the operator rule takes (the hub token).
    let operator = field("token").is_some_and(|t| {
        let claim = Claim {
            peer: cx.addr.ip(),
            host: None,
            origin: None,
            tls: cx.tls,
            key: Key::Token(t.trim()),
        };
        operator::decide(cx.hub.config.token.as_ref().map(HubToken::expose), &claim)
            == Ok(Operator::Token)
    });
    if !operator {
        cx.hub.refusals.connection(
            cx.addr,
            ConnRefusal::Unauthorized,
            "console login with a wrong token",
        );
        return login_page(
            cx,
            Denied::WrongToken,
            Some("That is not this hub's token."),
        );
    }
    let (session, _csrf) = cx.hub.http.logins.create();
    tracing::info!(addr = %cx.addr, "console login");
    let mut r = routes::empty(StatusCode::SEE_OTHER);
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/"));
    set_cookie(
        &mut r,
        cx,
        SESSION_COOKIE,
        &session,
        Some(LOGIN_TTL.as_secs()),
    );
    set_cookie(&mut r, cx, CSRF_COOKIE, "", Some(0));
    r
}

/// `POST /logout` (with the login's CSRF header): ends the login.
pub(crate) fn logout(cx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    let who = match access(cx, &req) {
        Ok(w) if w.how == Operator::Login => w,
        Ok(_) => return routes::text(StatusCode::BAD_REQUEST, "not logged in with a cookie\n"),
        Err(d) => return denied_response(d),
    };
    if let Err(f) = check_change(cx, &req, &who) {
        return f.response();
    }
    if let Some(c) = cookie(&req, SESSION_COOKIE) {
        cx.hub.http.logins.remove(c);
    }
    let mut r = routes::empty(StatusCode::NO_CONTENT);
    set_cookie(&mut r, cx, SESSION_COOKIE, "", Some(0));
    r
}

/// Refuses a request that a page of another origin could have made.
fn same_origin<B>(cx: &Ctx, req: &Request<B>) -> Result<(), Forbidden> {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let fetch_site = || {
        req.headers()
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"same-origin")
    };
    let ok = match origin {
        // An opaque origin (privacy settings, `no-referrer` pages): only the browser's own
        // word that the request comes from this origin will do.
        Some("null") => fetch_site(),
        Some(o) => host(req).is_some_and(|h| operator::same_origin(o, h, cx.tls)),
        None => fetch_site(),
    };
    if ok {
        Ok(())
    } else {
        Err(Forbidden(
            "cross-site request refused (its Origin is not this hub's)",
        ))
    }
}

fn host<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

fn cookie<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a str> {
    cookie_in(
        req.headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
        name,
    )
}

/// The cookie `name` among `Cookie` header values.
fn cookie_in<'a>(headers: impl Iterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    headers
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(resp: &mut Response<Body>, cx: &Ctx, name: &str, value: &str, max_age: Option<u64>) {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if cx.tls {
        c.push_str("; Secure");
    }
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// `application/x-www-form-urlencoded` pairs.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let plus = s.replace('+', " ");
        percent_encoding::percent_decode_str(&plus)
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        assert_eq!(
            parse_form(b"token=a%2Bb+c&csrf=x"),
            vec![
                ("token".to_string(), "a+b c".to_string()),
                ("csrf".to_string(), "x".to_string())
            ]
        );
    }

    #[test]
    fn logins_expire_and_are_bounded() {
        let logins = Logins::default();
        let (cookie, csrf) = logins.create();
        assert_eq!(logins.find(&cookie), Some(csrf));
        assert_eq!(logins.find("forged"), None);
        for _ in 0..MAX_LOGINS + 5 {
            logins.create();
        }
        assert!(logins.lock().len() <= MAX_LOGINS);
        logins.remove(&cookie);
        assert_eq!(logins.find(&cookie), None);
    }
}
