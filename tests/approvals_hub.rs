//! The approval inbox on the hub (docs/PROTOCOL.md, "Approvals"; docs/SECURITY.md,
//! "Approvals"): a prompt filed over the WebSocket is answered only by a human over the
//! operator's HTTP endpoint; the filer is told; the first answer wins; the trail survives a
//! restart; no frame a bridge can send answers it; bounds hold.

use crate::common;

use common::{
    http::{get, request},
    inproc::InProcHub,
    ws::Ws,
};
use serde_json::{Value, json};

const TOKEN: &str = "approvals-token-8d21";

async fn token_hub(dir: &std::path::Path) -> InProcHub {
    InProcHub::start_with(dir, |c| {
        c.token = relay_proto::token::HubToken::new(TOKEN);
    })
    .await
}

/// Files a Bash prompt for `session` on `ws` and returns the reply's approval.
async fn file(ws: &mut Ws, session: &str, extra: Value) -> Value {
    let mut f = json!({
        "type": "approval_file", "clientId": session, "token": TOKEN, "tool": "Bash",
        "input": {"command": "npm test", "description": "run the tests"},
        "cwd": "/work/app", "host": "workstation", "rid": "f",
    });
    for (k, v) in extra.as_object().unwrap() {
        f[k] = v.clone();
    }
    ws.send(f).await;
    let reply = until_rid(ws, "f").await;
    assert_eq!(reply["type"], "approval", "{reply}");
    reply["approval"].clone()
}

/// Skips frames until the reply to `rid`.
async fn until_rid(ws: &mut Ws, rid: &str) -> Value {
    loop {
        let f = ws.next().await;
        if f["rid"] == rid {
            return f;
        }
    }
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

async fn answer(port: u16, id: &str, headers: &[(&str, &str)], body: &str) -> common::http::Resp {
    request(
        port,
        "POST",
        &format!("/api/approvals/{id}"),
        &[&[("content-type", "application/json")], headers].concat(),
        body,
    )
    .await
}

#[tokio::test]
async fn a_human_answers_over_http_the_filer_is_told_and_the_first_answer_wins() {
    let dir = tempfile::tempdir().unwrap();
    let hub = token_hub(dir.path()).await;
    let port = hub.addr.port();
    let mut filer = Ws::connect(&hub.url).await;
    let a = file(&mut filer, "CC-2", json!({})).await;
    assert_eq!(a["id"], "A-1");
    assert_eq!(a["state"], "pending");
    assert_eq!(a["summary"], "npm test");
    assert_eq!(a["session"], "CC-2");
    assert_eq!(a["host"], "workstation");

    // The wrong people first: no token, a wrong token.
    assert_eq!(get(port, "/api/approvals", &[]).await.status, 401);
    let none = answer(port, "A-1", &[], r#"{"behavior":"allow"}"#).await;
    assert_eq!(none.status, 401, "{}", none.body);
    let wrong = answer(
        port,
        "A-1",
        &[("authorization", "Bearer guess")],
        r#"{"behavior":"allow"}"#,
    )
    .await;
    assert_eq!(wrong.status, 401);
    let b = bearer();
    let list = get(port, "/api/approvals", &[("authorization", &b)]).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["approvals"][0]["state"], "pending");

    // Nothing reached the filer yet.
    filer.roundtrip().await;

    let ok = answer(
        port,
        "A-1",
        &[("authorization", &b), ("x-relay-client", "cli")],
        r#"{"behavior":"allow","message":"go ahead"}"#,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let v = filer.until("approval_verdict").await;
    assert_eq!(v["approval"]["id"], "A-1");
    assert_eq!(v["approval"]["state"], "allowed");
    assert_eq!(v["approval"]["by"], "cli? (token)");
    assert_eq!(v["approval"]["message"], "go ahead");
    assert_eq!(v["approval"]["from"], "127.0.0.1");

    // The second answer changes nothing.
    let late = answer(
        port,
        "A-1",
        &[("authorization", &b)],
        r#"{"behavior":"deny"}"#,
    )
    .await;
    assert_eq!(late.status, 409);
    assert_eq!(late.json()["approval"]["state"], "allowed");
    let bad = answer(
        port,
        "A-1",
        &[("authorization", &b)],
        r#"{"behavior":"maybe"}"#,
    )
    .await;
    assert_eq!(bad.status, 400);

    // The audit trail, and it survives a restart.
    hub.stop().await;
    let hub = token_hub(dir.path()).await;
    let one = get(
        hub.addr.port(),
        "/api/approvals/A-1",
        &[("authorization", &b)],
    )
    .await;
    assert_eq!(one.status, 200, "{}", one.body);
    let trail = one.json()["trail"].clone();
    assert_eq!(trail.as_array().unwrap().len(), 2, "{trail}");
    assert_eq!(trail[0]["state"], "pending");
    assert_eq!(trail[0]["by"], "CC-2");
    assert_eq!(trail[1]["state"], "allowed");
    assert_eq!(trail[1]["by"], "cli? (token)");
    assert_eq!(trail[1]["from"], "127.0.0.1");
    assert!(trail[1]["at"].as_i64().unwrap() > 0);
    hub.stop().await;
}

#[tokio::test]
async fn no_frame_a_bridge_can_send_answers_a_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let hub = token_hub(dir.path()).await;
    let port = hub.addr.port();
    // The session's own bridge files it, and then tries every frame type there is, with
    // every field a verdict could hide in.
    let mut bridge = Ws::connect(&hub.url).await;
    bridge
        .send(json!({"type": "register", "clientId": "CC-1", "token": TOKEN}))
        .await;
    bridge.expect("registered").await;
    let a = file(&mut bridge, "CC-1", json!({})).await;
    let id = a["id"].as_str().unwrap().to_string();
    let mut other = Ws::connect(&hub.url).await;
    for (i, ty) in relay_proto::wire::ClientFrame::TYPES.iter().enumerate() {
        if *ty == "approval_close" {
            continue; // a local close, tried last
        }
        let frame = json!({
            "type": ty, "rid": i, "token": TOKEN, "id": id, "approval": id, "approvalId": id,
            "behavior": "allow", "state": "allowed", "decision": "allow", "verdict": "allowed",
            "to": "CC-1", "content": format!("allow {id}"), "clientId": "CC-1", "tool": "Bash",
            "action": "complete", "result": "allow", "title": id, "brief": "allow",
        });
        bridge.send(frame.clone()).await;
        other.send(frame).await;
    }
    bridge.roundtrip().await;
    other.roundtrip().await;
    let b = bearer();
    let one = get(
        port,
        &format!("/api/approvals/{id}"),
        &[("authorization", &b)],
    )
    .await;
    assert_eq!(one.json()["approval"]["state"], "pending", "{}", one.body);
    // The one thing a filer may do: report it answered locally. That is `closed`, never a
    // verdict.
    bridge
        .send(json!({"type": "approval_close", "id": id, "rid": "c"}))
        .await;
    let closed = until_rid(&mut bridge, "c").await;
    assert_eq!(closed["approval"]["state"], "closed", "{closed}");
    let one = get(
        port,
        &format!("/api/approvals/{id}"),
        &[("authorization", &b)],
    )
    .await;
    assert_eq!(one.json()["approval"]["state"], "closed");
    hub.stop().await;
}

#[tokio::test]
async fn a_prompt_closes_with_its_filer_expires_in_time_and_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let hub = token_hub(dir.path()).await;
    let port = hub.addr.port();
    let b = bearer();
    let state = |id: String| {
        let b = b.clone();
        async move {
            get(
                port,
                &format!("/api/approvals/{id}"),
                &[("authorization", &b)],
            )
            .await
            .json()["approval"]["state"]
                .clone()
        }
    };

    // The hook ended (the local dialog was answered): closed once the hub learns it.
    let mut hook = Ws::connect(&hub.url).await;
    let a = file(&mut hook, "CC-3", json!({})).await;
    drop(hook);
    let id = a["id"].as_str().unwrap().to_string();
    common::eventually(
        "the prompt of a gone filer is closed",
        common::hub::WAIT,
        async || match state(id.clone()).await {
            s if s == "closed" => Ok(()),
            s => Err(s.to_string()),
        },
    )
    .await;

    // Nobody answers: expired, and the filer is told.
    let mut hook = Ws::connect(&hub.url).await;
    let a = file(&mut hook, "CC-3", json!({"timeoutS": 1})).await;
    let v = hook.until("approval_verdict").await;
    assert_eq!(v["approval"]["id"], a["id"]);
    assert_eq!(v["approval"]["state"], "expired");
    assert_eq!(v["approval"]["by"], "hub");

    // Bounds: a session's pending prompts, and sizes.
    let mut hook = Ws::connect(&hub.url).await;
    for _ in 0..16 {
        file(&mut hook, "CC-4", json!({})).await;
    }
    hook.send(json!({"type": "approval_file", "clientId": "CC-4", "tool": "Bash", "rid": "x"}))
        .await;
    let full = until_rid(&mut hook, "x").await;
    assert_eq!(full["code"], "too_large", "{full}");
    let big = file(
        &mut hook,
        "CC-5",
        json!({"input": {"command": "y".repeat(100_000)}}),
    )
    .await;
    assert_eq!(big["preview"].as_str().unwrap().chars().count(), 2000);
    assert_eq!(big["truncated"], true, "{big}");
    assert_eq!(big["inputChars"], 100_000 + r#"{"command":""}"#.len());
    // A channel preview as long as Claude Code makes them may have been cut before it came.
    let channel = file(
        &mut hook,
        "CC-6",
        json!({"input": null, "source": "channel", "requestId": "abcde",
               "inputPreview": format!("{{\"command\":\"{}", "q".repeat(300))}),
    )
    .await;
    assert_eq!(channel["truncated"], true, "{channel}");
    assert!(channel.get("inputChars").is_none(), "{channel}");
    assert_eq!(a["truncated"], false);
    assert!(big["summary"].as_str().unwrap().chars().count() <= 500);
    hook.send(json!({"type": "approval_file", "clientId": "CC-5", "tool": "", "rid": "e"}))
        .await;
    assert_eq!(until_rid(&mut hook, "e").await["code"], "bad_frame");
    hook.send(
        json!({"type": "approval_file", "clientId": "no spaces", "tool": "Bash", "rid": "i"}),
    )
    .await;
    assert_eq!(until_rid(&mut hook, "i").await["code"], "invalid_id");

    // An owned name: only its owner files for it.
    let mut owner = Ws::connect(&hub.url).await;
    owner
        .send(json!({"type": "register", "clientId": "Owned", "token": TOKEN, "ownership": true}))
        .await;
    let secret = owner.expect("registered").await["ownerSecret"].clone();
    assert!(secret.is_string(), "the hub minted an owner secret");
    hook.send(json!({"type": "approval_file", "clientId": "Owned", "tool": "Bash", "rid": "o"}))
        .await;
    assert_eq!(until_rid(&mut hook, "o").await["code"], "not_owner");
    hook.send(json!({"type": "approval_file", "clientId": "Owned", "ownerSecret": secret, "tool": "Bash", "rid": "p"}))
        .await;
    let r = until_rid(&mut hook, "p").await;
    assert_eq!(r["type"], "approval", "{r}");
    hub.stop().await;
}

#[tokio::test]
async fn a_hub_without_a_token_takes_answers_from_loopback_with_its_csrf_token_only() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let port = hub.addr.port();
    let host = format!("127.0.0.1:{port}");
    let origin = format!("http://{host}");
    let mut hook = Ws::connect(&hub.url).await;
    let a = file(&mut hook, "CC-1", json!({"token": null})).await;
    let id = a["id"].as_str().unwrap();
    let list = get(port, "/api/approvals", &[]).await;
    assert_eq!(list.status, 200);
    let csrf = list.json()["csrf"].as_str().unwrap().to_string();
    // A page of another origin, or one without the CSRF token, is refused.
    let foreign = answer(
        port,
        id,
        &[("origin", "http://evil.example")],
        r#"{"behavior":"allow"}"#,
    )
    .await;
    assert_eq!(foreign.status, 403);
    let no_csrf = answer(port, id, &[("origin", &origin)], r#"{"behavior":"allow"}"#).await;
    assert_eq!(no_csrf.status, 403, "{}", no_csrf.body);
    hook.roundtrip().await;
    let ok = answer(
        port,
        id,
        &[("origin", &origin), ("x-relay-csrf", &csrf)],
        r#"{"behavior":"deny","message":"not now"}"#,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let v = hook.until("approval_verdict").await;
    assert_eq!(v["approval"]["state"], "denied");
    assert_eq!(v["approval"]["by"], "http (loopback)");
    hub.stop().await;
}

#[tokio::test]
async fn bidi_controls_are_refused_in_tool_and_request_id_and_replaced_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let hub = token_hub(dir.path()).await;
    let mut hook = Ws::connect(&hub.url).await;
    for (i, bad) in ["\u{202e}", "\u{2066}", "\u{200f}", "\u{61c}", "\u{202a}"]
        .iter()
        .enumerate()
    {
        let rid = format!("t{i}");
        hook.send(
            json!({"type": "approval_file", "clientId": "CC-1", "token": TOKEN,
            "tool": format!("Ba{bad}sh"), "rid": rid}),
        )
        .await;
        assert_eq!(
            until_rid(&mut hook, &rid).await["code"],
            "bad_frame",
            "tool {bad:?}"
        );
        let rid = format!("r{i}");
        hook.send(
            json!({"type": "approval_file", "clientId": "CC-1", "token": TOKEN,
            "tool": "Bash", "requestId": format!("x{bad}y"), "rid": rid}),
        )
        .await;
        assert_eq!(
            until_rid(&mut hook, &rid).await["code"],
            "bad_frame",
            "requestId {bad:?}"
        );
    }
    let a = file(
        &mut hook,
        "CC-1",
        json!({"input": {"command": "rm -rf \u{202e}txt.exe\u{2066}a\u{2069}\u{200e}"},
               "cwd": "/w\u{202b}x\u{61c}"}),
    )
    .await;
    let text = a.to_string();
    for c in [
        '\u{202e}', '\u{2066}', '\u{2069}', '\u{200e}', '\u{202b}', '\u{61c}',
    ] {
        assert!(!text.contains(c), "{c:?} kept in {text}");
    }
    assert_eq!(a["summary"], "rm -rf  txt.exe a");
    hub.stop().await;
}

#[tokio::test]
async fn a_second_connection_can_neither_close_nor_starve_another_sessions_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let hub = token_hub(dir.path()).await;
    let port = hub.addr.port();
    let b = bearer();
    // CC-2's hook files a prompt (its connection is not registered: hooks never are).
    let mut hook = Ws::connect(&hub.url).await;
    let a = file(&mut hook, "CC-2", json!({})).await;
    let id = a["id"].as_str().unwrap().to_string();

    // The wrong people first: a token holder that did not file it, then one that took the
    // name CC-2 (nobody owns it, so holding it proves nothing).
    let mut other = Ws::connect(&hub.url).await;
    other
        .send(json!({"type": "register", "clientId": "Other-1", "token": TOKEN}))
        .await;
    other.expect("registered").await;
    other
        .send(json!({"type": "approval_close", "id": id, "rid": "c1"}))
        .await;
    assert_eq!(until_rid(&mut other, "c1").await["code"], "not_found");
    let mut squat = Ws::connect(&hub.url).await;
    squat
        .send(json!({"type": "register", "clientId": "CC-2", "token": TOKEN}))
        .await;
    squat.expect("registered").await;
    squat
        .send(json!({"type": "approval_close", "id": id, "rid": "c2"}))
        .await;
    assert_eq!(until_rid(&mut squat, "c2").await["code"], "not_found");
    let one = get(
        port,
        &format!("/api/approvals/{id}"),
        &[("authorization", &b)],
    )
    .await;
    assert_eq!(one.json()["approval"]["state"], "pending", "{}", one.body);

    // It fills CC-2's per-session quota as far as it can: only its own quota is full.
    for _ in 0..16 {
        file(&mut other, "CC-2", json!({})).await;
    }
    other
        .send(json!({"type": "approval_file", "clientId": "CC-2", "token": TOKEN, "tool": "Bash", "rid": "x"}))
        .await;
    assert_eq!(until_rid(&mut other, "x").await["code"], "too_large");
    let mine = file(&mut hook, "CC-2", json!({})).await;
    assert_eq!(mine["state"], "pending", "CC-2's own hook still files");

    // The filer closes its own.
    hook.send(json!({"type": "approval_close", "id": id, "rid": "c3"}))
        .await;
    assert_eq!(
        until_rid(&mut hook, "c3").await["approval"]["state"],
        "closed"
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_verdict_given_the_moment_a_prompt_is_listed_reaches_its_filer_after_the_filing_reply() {
    let dir = tempfile::tempdir().unwrap();
    let hub = token_hub(dir.path()).await;
    let port = hub.addr.port();
    let b = bearer();
    let mut filer = Ws::connect(&hub.url).await;
    for round in 0..10 {
        // A human as fast as can be: answers the first pending prompt it sees.
        let answerer = {
            let b = b.clone();
            tokio::spawn(async move {
                loop {
                    let list = get(port, "/api/approvals", &[("authorization", &b)]).await;
                    let pending = list.json()["approvals"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|a| a["state"] == "pending")
                        .map(|a| a["id"].as_str().unwrap().to_string());
                    if let Some(id) = pending {
                        let r = answer(
                            port,
                            &id,
                            &[("authorization", &b)],
                            r#"{"behavior":"allow"}"#,
                        )
                        .await;
                        assert_eq!(r.status, 200, "{}", r.body);
                        return id;
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        let rid = format!("f{round}");
        filer
            .send(
                json!({"type": "approval_file", "clientId": "CC-7", "token": TOKEN,
                "tool": "Bash", "input": {"command": "ls"}, "rid": rid}),
            )
            .await;
        let first = filer.next().await;
        assert_eq!(
            first["type"], "approval",
            "the filing reply comes first: {first}"
        );
        assert_eq!(first["rid"], rid.as_str());
        let id = tokio::time::timeout(common::hub::WAIT, answerer)
            .await
            .expect("answered in time")
            .unwrap();
        assert_eq!(first["approval"]["id"], id.as_str());
        let v = tokio::time::timeout(common::hub::WAIT, filer.until("approval_verdict"))
            .await
            .expect("the verdict reached the filer");
        assert_eq!(v["approval"]["id"], id.as_str());
        assert_eq!(v["approval"]["state"], "allowed");
    }
    hub.stop().await;
}

#[tokio::test]
async fn filing_is_rate_limited_per_connection() {
    let dir = tempfile::tempdir().unwrap();
    let hub = token_hub(dir.path()).await;
    let mut hook = Ws::connect(&hub.url).await;
    // File and close at once, so no pending quota is reached: only the rate stops it.
    let mut refused = None;
    for i in 0..64 {
        let rid = format!("f{i}");
        hook.send(
            json!({"type": "approval_file", "clientId": "CC-8", "token": TOKEN,
            "tool": "Bash", "rid": rid}),
        )
        .await;
        let r = until_rid(&mut hook, &rid).await;
        if r["type"] == "error" {
            refused = Some((i, r));
            break;
        }
        let id = r["approval"]["id"].clone();
        hook.send(json!({"type": "approval_close", "id": id, "rid": "c"}))
            .await;
        until_rid(&mut hook, "c").await;
    }
    let (i, r) = refused.expect("refused before 64 prompts");
    assert!(i >= 32, "a burst of 32 is allowed, refused at {i}");
    assert_eq!(r["code"], "rate_limited", "{r}");
    assert!(r["message"].as_str().unwrap().contains("NOT filed"), "{r}");
    // Another connection is not limited by this one.
    let mut other = Ws::connect(&hub.url).await;
    assert_eq!(
        file(&mut other, "CC-8", json!({})).await["state"],
        "pending"
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_client_named_in_a_header_is_recorded_as_claimed_apart_from_how_it_proved_itself() {
    let dir = tempfile::tempdir().unwrap();
    let hub = token_hub(dir.path()).await;
    let port = hub.addr.port();
    let b = bearer();
    let mut hook = Ws::connect(&hub.url).await;
    let a = file(&mut hook, "CC-1", json!({})).await;
    let id = a["id"].as_str().unwrap();
    // A token holder says it is the console: the trail must not read like a browser login.
    let r = answer(
        port,
        id,
        &[("authorization", &b), ("x-relay-client", "console")],
        r#"{"behavior":"deny"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = hook.until("approval_verdict").await;
    assert_eq!(v["approval"]["by"], "console? (token)");
    assert_eq!(v["approval"]["from"], "127.0.0.1");
    // Naming none: what was checked only.
    let a = file(&mut hook, "CC-1", json!({})).await;
    let r = answer(
        port,
        a["id"].as_str().unwrap(),
        &[("authorization", &b)],
        r#"{"behavior":"deny"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["approval"]["by"], "http (token)");
    hub.stop().await;
}

/// The value of cookie `name` that `r` sets.
fn set_cookie(r: &common::http::Resp, name: &str) -> Option<String> {
    r.all("set-cookie").into_iter().find_map(|c| {
        let (k, v) = c.split(';').next()?.trim().split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

#[tokio::test]
async fn a_console_login_answers_only_with_its_csrf_token_from_the_hubs_own_origin() {
    let dir = tempfile::tempdir().unwrap();
    let hub = token_hub(dir.path()).await;
    let port = hub.addr.port();
    let origin = format!("http://127.0.0.1:{port}");
    let b = bearer();
    let mut hook = Ws::connect(&hub.url).await;
    let a = file(&mut hook, "CC-1", json!({})).await;
    let id = a["id"].as_str().unwrap();

    // A browser login: the form's double-submit CSRF cookie, then the token.
    let page = get(port, "/", &[]).await;
    let form_csrf = set_cookie(&page, "relay_csrf").expect("the login form's csrf cookie");
    let form_cookie = format!("relay_csrf={form_csrf}");
    let login = request(
        port,
        "POST",
        "/login",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", &origin),
            ("cookie", &form_cookie),
        ],
        &format!("token={TOKEN}&csrf={form_csrf}"),
    )
    .await;
    assert_eq!(login.status, 303, "{}", login.body);
    let session = set_cookie(&login, "relay_session").expect("a session cookie");
    let cookie = format!("relay_session={session}");
    let list = get(port, "/api/approvals", &[("cookie", &cookie)]).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let csrf = list.json()["csrf"].as_str().unwrap().to_string();

    // The wrong people first; none of them changes the prompt.
    let allow = r#"{"behavior":"allow"}"#;
    for (who, headers, status) in [
        (
            "the cookie without the CSRF token",
            vec![("cookie", cookie.as_str()), ("origin", origin.as_str())],
            403,
        ),
        (
            "the cookie and the CSRF token from another origin",
            vec![
                ("cookie", cookie.as_str()),
                ("x-relay-csrf", csrf.as_str()),
                ("origin", "http://evil.example"),
            ],
            403,
        ),
        (
            "the cookie and the CSRF token with no origin at all",
            vec![("cookie", cookie.as_str()), ("x-relay-csrf", csrf.as_str())],
            403,
        ),
        (
            "no credentials (the CSRF token and the hub's origin only)",
            vec![("x-relay-csrf", csrf.as_str()), ("origin", origin.as_str())],
            401,
        ),
    ] {
        let r = answer(port, id, &headers, allow).await;
        assert_eq!(r.status, status, "{who}: {}", r.body);
        let now = get(
            port,
            &format!("/api/approvals/{id}"),
            &[("authorization", &b)],
        )
        .await;
        assert_eq!(now.json()["approval"]["state"], "pending", "{who}");
    }

    // The login, with its CSRF token, from the hub's own origin.
    let ok = answer(
        port,
        id,
        &[
            ("cookie", &cookie),
            ("x-relay-csrf", &csrf),
            ("origin", &origin),
        ],
        r#"{"behavior":"deny","message":"from the console"}"#,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let v = hook.until("approval_verdict").await;
    assert_eq!(v["approval"]["id"], id);
    assert_eq!(v["approval"]["state"], "denied");
    assert_eq!(v["approval"]["by"], "console (login)");
    hub.stop().await;
}
