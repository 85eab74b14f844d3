//! One notion of "operator" for the whole hub (docs/SECURITY.md, "The operator"): the same
//! rule opens the console and its API, the live feed on a WebSocket (`subscribe`) and the
//! every-session task view (`task_list` / `task_get` with `all`). On a hub with a token it is
//! whoever presented the token; on a hub without one, a loopback client under a loopback
//! `Host`, without a foreign `Origin`. Every surface is tried with the wrong people first,
//! and the session frames still keep a session's tasks to its parties.

use crate::common;

use common::{
    http::get,
    hub::Hub,
    ws::{Ws, bearer_request, request_with},
};
use serde_json::{Value, json};

const TOKEN: &str = "operator-rule-token-71be";

/// Alpha offers Beta a task (T-1): Gamma is no party to it.
async fn one_task(url: &str, token: Option<&str>) -> (Ws, Ws) {
    let reg = |id: &str| {
        let mut f = json!({"type": "register", "clientId": id});
        if let Some(t) = token {
            f["token"] = json!(t);
        }
        f
    };
    let mut alpha = Ws::connect(url).await;
    alpha.send(reg("Alpha")).await;
    alpha.expect("registered").await;
    let mut beta = Ws::connect(url).await;
    beta.send(reg("Beta")).await;
    beta.expect("registered").await;
    alpha
        .send(json!({"type": "task_create", "to": "Beta", "title": "Rotate the keys", "brief": "ops/keys.md"}))
        .await;
    assert_eq!(alpha.until("task").await["task"]["id"], "T-1");
    (alpha, beta)
}

/// Subscribes and returns the reply (`subscribed` or `error`).
async fn subscribe(ws: &mut Ws) -> Value {
    ws.send(json!({"type": "subscribe", "rid": 1})).await;
    loop {
        let f = ws.next().await;
        if f["rid"] == 1 {
            return f;
        }
    }
}

/// `task_list` with `all`, and `task_get T-1` with `all`: the two replies.
async fn every_task(ws: &mut Ws) -> (Value, Value) {
    ws.send(json!({"type": "task_list", "all": true, "rid": 2}))
        .await;
    let list = ws.next().await;
    ws.send(json!({"type": "task_get", "id": "T-1", "all": true, "rid": 3}))
        .await;
    let one = ws.next().await;
    (list, one)
}

#[tokio::test]
async fn on_a_token_hub_only_the_token_makes_the_operator_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, _) = Hub::start_with_token(dir.path(), TOKEN, &[]).await;
    let (_alpha, _beta) = one_task(&hub.url, Some(TOKEN)).await;

    // No token: the console and the metrics say 401; on a WebSocket every frame is refused.
    for path in ["/api/state", "/metrics"] {
        assert_eq!(get(hub.port, path, &[]).await.status, 401, "{path}");
    }
    let mut nobody = Ws::connect(&hub.url).await;
    let e = subscribe(&mut nobody).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("unauthorized")),
        "{e}"
    );
    let (list, one) = every_task(&mut nobody).await;
    for r in [&list, &one] {
        assert_eq!(r["code"], "unauthorized", "{r}");
    }

    // A wrong token: 401 on HTTP, the upgrade refused, a frame's `token` closes the connection.
    let r = get(
        hub.port,
        "/api/state",
        &[("Authorization", "Bearer not-it")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(
        tokio_tungstenite::connect_async(bearer_request(&hub.url, "not-it"))
            .await
            .is_err()
    );
    let mut guess = Ws::connect(&hub.url).await;
    guess
        .send(json!({"type": "subscribe", "token": "not-it", "rid": 1}))
        .await;
    assert_eq!(guess.next().await["code"], "unauthorized");
    assert!(guess.closed().await.is_some());

    // A registered session (Gamma, with the token) is no party to T-1: the session frames
    // keep it private...
    let mut gamma = Ws::connect_request(bearer_request(&hub.url, TOKEN)).await;
    gamma
        .send(json!({"type": "register", "clientId": "Gamma"}))
        .await;
    gamma.expect("registered").await;
    gamma
        .send(json!({"type": "task_get", "id": "T-1", "rid": 4}))
        .await;
    assert_eq!(gamma.next().await["code"], "not_found");
    gamma.send(json!({"type": "task_list", "rid": 5})).await;
    assert_eq!(gamma.next().await["tasks"], json!([]));
    // ...but it holds the token, so it is the operator, and asking as the operator shows all.
    let (list, one) = every_task(&mut gamma).await;
    assert_eq!(list["tasks"][0]["id"], "T-1", "{list}");
    assert_eq!(one["task"]["brief"], "ops/keys.md", "{one}");
    assert_eq!(subscribe(&mut gamma).await["type"], "subscribed");

    // The token shown in a frame instead of the upgrade is the same key.
    let mut late = Ws::connect(&hub.url).await;
    late.send(json!({"type": "subscribe", "token": TOKEN, "rid": 1}))
        .await;
    assert_eq!(late.next().await["type"], "subscribed");
    let (list, _) = every_task(&mut late).await;
    assert_eq!(list["tasks"][0]["id"], "T-1", "{list}");
    // And on HTTP.
    let r = get(
        hub.port,
        "/api/state",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["tasks"][0]["id"], "T-1");
}

#[tokio::test]
async fn on_a_hub_without_a_token_only_loopback_under_its_own_name_and_origin_is_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let (_alpha, _beta) = one_task(&hub.url, None).await;
    let own = format!("127.0.0.1:{}", hub.port);

    // A page that reached the hub through DNS rebinding names another host; a page of
    // another origin opening a WebSocket to 127.0.0.1 says where it comes from. Neither is
    // the operator, on HTTP or on the WebSocket.
    let strangers = [
        vec![("host", "evil.example")],
        vec![("host", own.as_str()), ("origin", "http://evil.example")],
        vec![("host", own.as_str()), ("origin", "null")],
    ];
    for headers in &strangers {
        let http: Vec<(&str, &str)> = headers.to_vec();
        let r = get(hub.port, "/api/state", &http).await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
        let mut ws = Ws::connect_request(request_with(&hub.url, headers)).await;
        let e = subscribe(&mut ws).await;
        assert_eq!(e["code"], "unauthorized", "{headers:?}: {e}");
        let (list, one) = every_task(&mut ws).await;
        for r in [&list, &one] {
            assert_eq!(r["code"], "forbidden", "{headers:?}: {r}");
        }
        // Still a member: the protocol itself is open on this hub.
        ws.roundtrip().await;
    }

    // Loopback under its own name, from its own origin (the console's page) or none.
    let friends = [
        vec![],
        vec![("origin", format!("http://{own}"))],
        vec![("host", format!("localhost:{}", hub.port))],
    ];
    for headers in &friends {
        let headers: Vec<(&'static str, &str)> =
            headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut ws = Ws::connect_request(request_with(&hub.url, &headers)).await;
        assert_eq!(
            subscribe(&mut ws).await["type"],
            "subscribed",
            "{headers:?}"
        );
        let (list, one) = every_task(&mut ws).await;
        assert_eq!(list["tasks"][0]["id"], "T-1", "{headers:?}: {list}");
        assert_eq!(
            one["task"]["title"], "Rotate the keys",
            "{headers:?}: {one}"
        );
    }
    assert_eq!(get(hub.port, "/api/state", &[]).await.status, 200);
}
