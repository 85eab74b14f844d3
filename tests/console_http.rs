//! HTTP on the hub's WebSocket port, end to end against a real hub process: `/healthz` (open,
//! 503 when the store cannot write), `/metrics` (Prometheus text whose counters move by
//! exactly the traffic sent, tasks by state kept exact across moves and restarts), who may see
//! the console and how a browser logs in (401 first, CSRF-checked login and logout), the
//! headers every answer carries, the bounds, and HTTP connections under the hub's connection
//! caps (clients without the token never hold the places of token holders).

use crate::common;

use std::{collections::HashMap, path::Path};

use common::{
    http::{KeepAlive, Resp, get, request},
    hub::{Hub, WAIT},
    ws::Ws,
};
use serde_json::json;

#[cfg(target_os = "linux")]
use common::hub::limit_file_size;

const TOKEN: &str = "console-token-5c1f9a";

async fn token_hub(dir: &Path, extra: &[&str]) -> Hub {
    Hub::start_with_token(dir, TOKEN, extra).await.0
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// Every sample of a scrape, by `name{labels}` (labels sorted), as numbers.
fn scrape(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("/metrics parses");
    let mut out = HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let key = format!("{}{{{}}}", s.metric, labels.join(","));
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        out.insert(key, v);
    }
    out
}

async fn metrics(port: u16) -> HashMap<String, f64> {
    let r = get(port, "/metrics", &[("Authorization", &bearer())]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        r.headers
    );
    scrape(&r.body)
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    let a = after
        .get(key)
        .unwrap_or_else(|| panic!("{key} missing from /metrics: {after:#?}"));
    a - before.get(key).copied().unwrap_or(0.0)
}

/// A raw client that presented the token on `register`.
async fn register(url: &str, id: &str) -> Ws {
    let mut ws = Ws::connect(url).await;
    ws.send(json!({"type": "register", "clientId": id, "token": TOKEN}))
        .await;
    ws.expect("registered").await;
    ws
}

#[tokio::test]
async fn metrics_parse_and_count_exactly_the_traffic_sent() {
    let dir = tempfile::tempdir().unwrap();
    let hub = token_hub(dir.path(), &[]).await;
    let mut a = register(&hub.url, "Alpha").await;
    let mut b = register(&hub.url, "Beta").await;
    a.until("peer_joined").await;
    a.roundtrip().await;
    b.roundtrip().await;
    let before = metrics(hub.port).await;
    assert_eq!(before["relay_sessions_online{}"], 2.0);
    assert_eq!(before["relay_connections{kind=websocket}"], 2.0);

    // 3 direct to a live session, 2 to an offline one, 1 broadcast, 1 refused.
    for i in 0..3 {
        a.send(json!({"type": "message", "to": "Beta", "content": format!("live {i}")}))
            .await;
        assert_eq!(a.expect("sent").await["delivered"], true);
    }
    for i in 0..2 {
        a.send(json!({"type": "message", "to": "Gamma", "content": format!("stored {i}")}))
            .await;
        assert_eq!(a.expect("sent").await["delivered"], false);
    }
    a.send(json!({"type": "message", "content": "to everyone"}))
        .await;
    assert_eq!(a.expect("sent").await["recipients"], 1);
    a.send(json!({"type": "message", "to": "not a valid id!", "content": "x"}))
        .await;
    assert_eq!(a.expect("error").await["code"], "invalid_id");
    for _ in 0..4 {
        b.expect("message").await;
    }
    let after = metrics(hub.port).await;

    let d = |k: &str| delta(&before, &after, k);
    assert_eq!(d("relay_frames_in_total{type=message}"), 7.0);
    assert_eq!(d("relay_frames_out_total{type=sent}"), 6.0);
    assert_eq!(d("relay_frames_out_total{type=message}"), 4.0);
    assert_eq!(d("relay_frames_out_total{type=error}"), 1.0);
    assert_eq!(d("relay_frames_refused_total{reason=invalid_id}"), 1.0);
    assert_eq!(d("relay_messages_routed_total{kind=direct}"), 5.0);
    assert_eq!(d("relay_messages_routed_total{kind=broadcast}"), 1.0);
    assert_eq!(d("relay_deliveries_total{outcome=live}"), 4.0);
    assert_eq!(d("relay_deliveries_total{outcome=stored}"), 2.0);
    // Every stored message went through exactly one commit.
    assert_eq!(d("relay_store_batch_size_sum{}"), 6.0);
    assert_eq!(
        d("relay_store_batch_size_count{}"),
        d("relay_store_commit_seconds_count{}")
    );
    assert!(d("relay_store_batch_size_count{}") >= 1.0);
    assert_eq!(d("relay_frames_in_total{type=register}"), 0.0);
    assert_eq!(after["relay_tasks{state=working}"], 0.0);
    assert_eq!(after["relay_build_info{version=0.1.0}"], 1.0);
    // Scrapes are HTTP, not WebSocket frames.
    assert_eq!(d("relay_frames_out_total{type=other}"), 0.0);

    drop(b);
    a.until("peer_left").await;
    let gone = metrics(hub.port).await;
    assert_eq!(gone["relay_sessions_online{}"], 1.0);
    assert_eq!(gone["relay_connections{kind=websocket}"], 1.0);
}

/// Sends a task frame and returns the reply of type `reply` (skipping mail pushed meanwhile).
async fn task(ws: &mut Ws, frame: serde_json::Value, reply: &str) -> serde_json::Value {
    ws.send(frame).await;
    ws.until(reply).await
}

#[tokio::test]
async fn tasks_by_state_follow_every_move_survive_a_restart_and_fill_the_board() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = token_hub(dir.path(), &[]).await;
    let mut a = register(&hub.url, "Alpha").await;
    let mut b = register(&hub.url, "Beta").await;
    let before = metrics(hub.port).await;
    for s in ["submitted", "working", "completed", "rejected"] {
        assert_eq!(before[&format!("relay_tasks{{state={s}}}")], 0.0, "{s}");
    }

    let create = |title: &str, to: &str| json!({"type": "task_create", "to": to, "title": title, "brief": "see the PR"});
    for (title, to) in [("one", "Beta"), ("two", "Beta"), ("three", "any")] {
        let t = task(&mut a, create(title, to), "task").await;
        assert_eq!(t["task"]["state"], "submitted", "{t}");
    }
    let act = |id: &str, action: &str| json!({"type": "task_act", "id": id, "action": action, "result": (action == "complete").then_some("done in 4e1f2a0")});
    for (id, action, state) in [
        ("T-1", "claim", "working"),
        ("T-1", "complete", "completed"),
        ("T-2", "decline", "rejected"),
    ] {
        let t = task(&mut b, act(id, action), "task").await;
        assert_eq!(t["task"]["state"], state, "{id} {action}: {t}");
    }
    // A refused move changes no count (Alpha may not claim what it offered).
    let r = task(&mut a, act("T-3", "claim"), "task_refused").await;
    assert_eq!(r["id"], "T-3", "{r}");
    let after = metrics(hub.port).await;
    let d = |k: &str| delta(&before, &after, k);
    let tasks = |m: &HashMap<String, f64>| -> Vec<f64> {
        [
            "submitted",
            "working",
            "input-required",
            "completed",
            "failed",
            "rejected",
            "canceled",
        ]
        .iter()
        .map(|s| m[&format!("relay_tasks{{state={s}}}")])
        .collect()
    };
    assert_eq!(tasks(&after), [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
    assert_eq!(d("relay_frames_in_total{type=task_create}"), 3.0);
    assert_eq!(d("relay_frames_in_total{type=task_act}"), 4.0);
    assert_eq!(d("relay_frames_out_total{type=task}"), 6.0);
    assert_eq!(d("relay_frames_out_total{type=task_refused}"), 1.0);
    // Every move is mail: 3 creates, a claim, a complete, a decline.
    assert_eq!(d("relay_messages_routed_total{kind=direct}"), 5.0);
    assert_eq!(d("relay_messages_routed_total{kind=broadcast}"), 1.0);

    // The board in /api/state: every task, open ones first, with what a row shows.
    let state = get(hub.port, "/api/state", &[("Authorization", &bearer())])
        .await
        .json();
    let board: Vec<(String, String, Option<String>)> = state["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert!(t.get("brief").is_none(), "the board carries no brief: {t}");
            (
                t["id"].as_str().unwrap().to_string(),
                t["state"].as_str().unwrap().to_string(),
                t["holder"].as_str().map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        board,
        [
            ("T-3".into(), "submitted".into(), None),
            ("T-2".into(), "rejected".into(), None),
            ("T-1".into(), "completed".into(), Some("Beta".into())),
        ]
    );

    // A restarted hub counts them again from its store.
    drop((a, b));
    assert!(hub.terminate().await.success());
    let hub = token_hub(dir.path(), &[]).await;
    assert_eq!(
        tasks(&metrics(hub.port).await),
        [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    );
}

#[tokio::test]
async fn http_connections_without_the_token_take_none_of_the_token_holders_places() {
    let dir = tempfile::tempdir().unwrap();
    let hub = token_hub(
        dir.path(),
        &[
            "--max-connections",
            "3",
            "--max-unauthenticated",
            "2",
            "--auth-timeout-secs",
            "60",
        ],
    )
    .await;
    // Two kept-alive connections without the token get /healthz and the login page...
    let mut anonymous = Vec::new();
    for path in ["/healthz", "/"] {
        let mut c = KeepAlive::open(hub.port).await;
        let r = c.get(path, &[]).await;
        assert!(matches!(r.status, 200 | 401), "{path}: {}", r.status);
        anonymous.push(c);
    }
    // ...a third is refused: they have used the places of those without the token.
    let mut third = KeepAlive::open(hub.port).await;
    let r = third.get("/healthz", &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("without the hub token"), "{}", r.body);
    third.closed().await;
    // Token holders get all three places, and keep them. (The refused one held a place until
    // its socket was gone on the hub's side too, a moment after ours saw it close: the first
    // holder may have to ask again.)
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut holders = Vec::new();
    loop {
        let mut c = KeepAlive::open(hub.port).await;
        let r = c.get("/metrics", &[("Authorization", &bearer())]).await;
        if r.status == 200 {
            holders.push(c);
            break;
        }
        assert!(r.body.contains("connection limit"), "{}", r.body);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refused place never came back"
        );
        c.closed().await;
    }
    for _ in 0..2 {
        let mut c = KeepAlive::open(hub.port).await;
        assert_eq!(
            c.get("/metrics", &[("Authorization", &bearer())])
                .await
                .status,
            200
        );
        holders.push(c);
    }
    let m = holders[0]
        .get("/metrics", &[("Authorization", &bearer())])
        .await;
    let m = scrape(&m.body);
    assert_eq!(
        m["relay_connections_refused_total{reason=unauthenticated}"],
        1.0
    );
    assert_eq!(m["relay_connections{kind=http}"], 5.0);
    // A wrong token on a request is a refusal the operator sees, counted and logged.
    let r = holders[1]
        .get("/metrics", &[("Authorization", "Bearer not-the-token")])
        .await;
    assert_eq!(r.status, 401);
    let m = holders[2]
        .get("/metrics", &[("Authorization", &bearer())])
        .await;
    assert_eq!(
        scrape(&m.body)["relay_connections_refused_total{reason=unauthorized}"],
        1.0
    );
    let log = hub.log.lock().unwrap().join("\n");
    assert!(
        log.contains("refused") && log.contains("without the hub token"),
        "{log}"
    );
    assert!(
        log.contains("invalid hub token in the Authorization header of an HTTP request"),
        "{log}"
    );
    assert!(
        !log.contains("not-the-token") && !log.contains(TOKEN),
        "{log}"
    );
    drop(anonymous);
}

#[tokio::test]
async fn an_http_connection_that_shows_no_token_in_time_is_closed_and_one_that_does_stays() {
    let dir = tempfile::tempdir().unwrap();
    let hub = token_hub(dir.path(), &["--auth-timeout-secs", "1"]).await;
    let mut anonymous = KeepAlive::open(hub.port).await;
    let mut holder = KeepAlive::open(hub.port).await;
    assert_eq!(anonymous.get("/healthz", &[]).await.status, 200);
    assert_eq!(
        holder
            .get("/metrics", &[("Authorization", &bearer())])
            .await
            .status,
        200
    );
    anonymous.closed().await;
    // Both were opened before the deadline passed; the one that showed the token is served.
    let m = holder
        .get("/metrics", &[("Authorization", &bearer())])
        .await;
    assert_eq!(m.status, 200);
    assert_eq!(
        scrape(&m.body)["relay_connections_refused_total{reason=auth_timeout}"],
        1.0
    );
    let log = hub.log.lock().unwrap().join("\n");
    assert!(log.contains("no valid hub token within"), "{log}");
}

fn assert_secure_headers(r: &Resp) {
    let csp = r.header("content-security-policy").unwrap_or_default();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "CSP lacks {part}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
}

/// `name=value` of the first Set-Cookie for `name`, and the whole header.
fn set_cookie<'a>(r: &'a Resp, name: &str) -> Option<(String, &'a str)> {
    r.all("set-cookie").into_iter().find_map(|c| {
        let pair = c.split(';').next()?.trim();
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| (v.to_string(), c))
    })
}

#[tokio::test]
async fn with_a_token_the_console_metrics_and_feed_need_it_and_login_is_csrf_checked() {
    let dir = tempfile::tempdir().unwrap();
    let hub = token_hub(dir.path(), &[]).await;
    let port = hub.port;
    let origin = format!("http://127.0.0.1:{port}");

    // The wrong person first: nothing, a wrong token, a cookie nobody issued.
    for path in [
        "/metrics",
        "/",
        "/api/state",
        "/api/feed",
        "/api/message?seq=1",
    ] {
        for auth in [
            vec![],
            vec![("Authorization", "Bearer not-the-token")],
            vec![("Cookie", "relay_session=forged")],
        ] {
            let r = get(port, path, &auth).await;
            assert_eq!(r.status, 401, "{path} {auth:?}: {}", r.body);
            assert_secure_headers(&r);
            assert!(!r.body.contains(TOKEN));
        }
    }
    // The right Bearer token.
    for path in ["/metrics", "/", "/api/state"] {
        let r = get(port, path, &[("Authorization", &bearer())]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_secure_headers(&r);
    }
    // /healthz stays open and says only what it must.
    let h = get(port, "/healthz", &[]).await;
    assert_eq!(h.status, 200, "{}", h.body);
    let mut keys: Vec<String> = h.json().as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["status", "store", "uptime_s", "version"]);

    // The login form: a 401 page with a double-submit CSRF token.
    let page = get(port, "/", &[]).await;
    assert!(page.body.contains(r#"name="token""#), "{}", page.body);
    let (csrf, cookie_line) = set_cookie(&page, "relay_csrf").expect("csrf cookie");
    assert!(cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"));
    assert!(page.body.contains(&csrf));
    let csrf_cookie = format!("relay_csrf={csrf}");
    let evil = "http://evil.example";
    // POST /login from `origin` with `cookie`, the form carrying `token` and `csrf`.
    let login = |origin: &str, cookie: &str, token: &str, csrf: &str| {
        let (origin, cookie) = (origin.to_string(), cookie.to_string());
        let body = format!("token={token}&csrf={csrf}");
        async move {
            let headers = [
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Origin", origin.as_str()),
                ("Cookie", cookie.as_str()),
            ];
            request(port, "POST", "/login", &headers, &body).await
        }
    };

    // A cross-site POST without the CSRF token is refused; so is one from another origin
    // with everything right, and same-origin ones without the token or with a forged one.
    for (from, cookie, field) in [
        // An opaque origin without the browser's word that it is this one.
        ("null", csrf_cookie.as_str(), csrf.as_str()),
        (evil, "", ""),
        (evil, csrf_cookie.as_str(), csrf.as_str()),
        (origin.as_str(), "", ""),
        (origin.as_str(), csrf_cookie.as_str(), "forged"),
    ] {
        let r = login(from, cookie, TOKEN, field).await;
        assert_eq!(r.status, 403, "{from} {cookie} {field}: {}", r.body);
        assert!(set_cookie(&r, "relay_session").is_none());
    }
    // A wrong token gets the form again.
    let r = login(&origin, &csrf_cookie, "wrong", &csrf).await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("not this hub&#39;s token"), "{}", r.body);
    // The right one: a session cookie, HttpOnly and SameSite=Strict.
    let r = login(&origin, &csrf_cookie, TOKEN, &csrf).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/"));
    let (session, line) = set_cookie(&r, "relay_session").expect("session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(line.contains(attr), "{line}");
    }
    assert!(!line.contains(TOKEN) && !session.contains(TOKEN));
    let cookie = format!("relay_session={session}");
    let with_cookie = [("Cookie", cookie.as_str())];

    // The cookie works for the page, the state and the metrics.
    let page = get(port, "/", &with_cookie).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/console.js"), "{}", page.body);
    let state = get(port, "/api/state", &with_cookie).await;
    assert_eq!(state.status, 200);
    let state = state.json();
    assert_eq!(state["hub"]["viewer"], "login");
    let login_csrf = state["csrf"].as_str().unwrap().to_string();
    assert_eq!(get(port, "/metrics", &with_cookie).await.status, 200);

    // Logging out needs the login's CSRF header and the hub's own origin.
    let logout = |origin: &str, csrf: &str| {
        let (origin, csrf, cookie) = (origin.to_string(), csrf.to_string(), cookie.clone());
        async move {
            let mut headers = vec![("Origin", origin.as_str()), ("Cookie", cookie.as_str())];
            if !csrf.is_empty() {
                headers.push(("X-Relay-CSRF", csrf.as_str()));
            }
            request(port, "POST", "/logout", &headers, "").await.status
        }
    };
    assert_eq!(logout(&origin, "").await, 403);
    assert_eq!(logout(evil, &login_csrf).await, 403);
    assert_eq!(get(port, "/api/state", &with_cookie).await.status, 200);
    assert_eq!(logout(&origin, &login_csrf).await, 204);
    assert_eq!(get(port, "/api/state", &with_cookie).await.status, 401);

    // Guessing the token: a few wrong tries get the form again, then the address is told
    // to wait (a bucket of its own: 10, then one a second; with the registrations' 10,000
    // at once this would not come within 40 tries). A session still registers meanwhile.
    let mut tries = 0;
    let limited = loop {
        tries += 1;
        let r = login(&origin, &csrf_cookie, "wrong", &csrf).await;
        match r.status {
            401 if tries < 40 => continue,
            _ => break r,
        }
    };
    assert_eq!(limited.status, 429, "after {tries} tries: {}", limited.body);
    assert!(
        limited.body.contains("too many attempts"),
        "{}",
        limited.body
    );
    register(&hub.url, "AfterGuesses").await;

    // Nothing here changes the hub: other methods are refused.
    let r = request(
        port,
        "DELETE",
        "/api/state",
        &[("Authorization", &bearer())],
        "",
    )
    .await;
    assert_eq!(r.status, 405);

    // The token and the cookie never reach the log.
    let log = hub.log.lock().unwrap().join("\n");
    assert!(!log.contains(TOKEN) && !log.contains(&session), "{log}");
}

#[tokio::test]
async fn a_hub_without_a_token_shows_its_console_on_loopback_names_only() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let ok = get(hub.port, "/api/state", &[]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["hub"]["viewer"], "loopback");
    // DNS rebinding: a page of another origin resolving its name to 127.0.0.1.
    for host in ["evil.example", "evil.example:80", "localhost.evil.example"] {
        let r = get(hub.port, "/api/state", &[("Host", host)]).await;
        assert_eq!(r.status, 403, "{host}: {}", r.body);
    }
    let r = get(
        hub.port,
        "/",
        &[("Host", &format!("localhost:{}", hub.port))],
    )
    .await;
    assert_eq!(r.status, 200);
    // Nothing to log in to.
    let r = request(
        hub.port,
        "POST",
        "/login",
        &[("Origin", &format!("http://127.0.0.1:{}", hub.port))],
        "token=x",
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn http_requests_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let hub = token_hub(dir.path(), &["--max-http-connections", "1"]).await;
    let port = hub.port;
    // A head over the limit (16 KiB) is refused.
    let big = "x".repeat(20 << 10);
    let r = get(port, "/healthz", &[("X-Filler", &big)]).await;
    assert_eq!(r.status, 431, "{}", r.body);
    // A login body over the limit (4 KiB).
    let origin = format!("http://127.0.0.1:{port}");
    let r = request(
        port,
        "POST",
        "/login",
        &[("Origin", &origin), ("Cookie", "relay_csrf=a")],
        &format!("csrf=a&token={}", "t".repeat(8 << 10)),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.body);
    // One HTTP connection at a time: while an event stream holds it, the next gets 503.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            format!(
                "GET /api/feed HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {}\r\n\r\n",
                bearer()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut first = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, stream.read(&mut first))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&first[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    let r = get(port, "/healthz", &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("maximum of 1 HTTP"), "{}", r.body);
    // WebSockets are not HTTP connections: they still get in.
    let _ws = register(&hub.url, "StillHere").await;
    drop(stream);
    let deadline = tokio::time::Instant::now() + WAIT;
    while get(port, "/healthz", &[]).await.status != 200 {
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Polls `/healthz` until it answers `status`; returns the body.
async fn health_until(port: u16, status: u16) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = get(port, "/healthz", &[]).await;
        if r.status == status {
            return r.json();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/healthz never answered {status}: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// How the disk is made full: the hub process's file-size limit (RLIMIT_FSIZE) is lowered to
/// 0 with prlimit(2), then messages are sent until not one more page can be written — as on a
/// full disk, nothing more can be written while everything stays readable. The hub turns
/// SIGXFSZ into a write error (src/cli/hub_cmd.rs).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn healthz_is_503_while_the_store_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let hub = token_hub(dir.path(), &[]).await;
    let ok = health_until(hub.port, 200).await;
    assert_eq!(ok["status"], "ok");
    assert_eq!(ok["store"], "ok");
    assert_eq!(ok["version"], env!("CARGO_PKG_VERSION"));
    assert!(ok["uptime_s"].is_u64());

    let mut sender = register(&hub.url, "Sender").await;
    limit_file_size(hub.pid(), 0);
    for body in ["x".repeat(64 << 10), "y".to_string()] {
        let mut refused = false;
        for _ in 0..100_000 {
            sender
                .send(json!({"type": "message", "to": "Reader", "content": body}))
                .await;
            let f = sender.next().await;
            if f["type"] == "error" {
                refused = true;
                break;
            }
        }
        assert!(refused, "the store never filled up");
    }
    let down = health_until(hub.port, 503).await;
    assert_eq!(down["status"], "unavailable");
    assert_eq!(down["store"], "unwritable");
    // Nothing but the four fields: no path, no error text.
    assert_eq!(down.as_object().unwrap().len(), 4, "{down}");

    limit_file_size(hub.pid(), libc::RLIM_INFINITY);
    let back = health_until(hub.port, 200).await;
    assert_eq!(back["store"], "ok");
}
