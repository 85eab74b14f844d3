//! The operator sees every refusal at the hub's default log level: one line with the peer
//! address and the reason — a bad token, a name owned elsewhere or in use, a cap reached —
//! and never the secret that was presented; and each is counted in `/metrics` by reason.

use crate::common;

use common::{
    http::get,
    hub::{Hub, HubOpts, WAIT},
    ws::{Ws, bearer_request},
};
use futures_util::StreamExt;
use serde_json::json;

const TOKEN: &str = "refusal-log-token-8d1e";

/// Waits (bounded) until a line of the hub's log holds every needle; returns it.
async fn log_line(hub: &Hub, needles: &[&str]) -> String {
    common::eventually(&format!("a log line with {needles:?}"), WAIT, async || {
        let log = hub.log.lock().unwrap();
        match log.iter().find(|l| needles.iter().all(|n| l.contains(n))) {
            Some(line) => Ok(line.clone()),
            None => Err(format!("{log:#?}")),
        }
    })
    .await
}

#[tokio::test]
async fn bad_tokens_owned_names_names_in_use_and_full_caps_are_logged_with_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let opts = HubOpts::with_token(dir.path(), TOKEN, &["--max-connections", "3"]);
    let hub = Hub::start_with(dir.path(), opts).await;

    // A wrong Bearer token on the upgrade.
    let wrong = bearer_request(&hub.url, "wrong-guess-3b7a");
    assert!(tokio_tungstenite::connect_async(wrong).await.is_err());
    let line = log_line(&hub, &["refused", "invalid hub token", "127.0.0.1"]).await;
    assert!(line.contains("WARN"), "{line}");

    // A wrong token on register.
    let mut guess = Ws::connect(&hub.url).await;
    guess
        .send(json!({"type": "register", "clientId": "G", "token": "wrong-guess-3b7a"}))
        .await;
    guess.expect("register_rejected").await;
    log_line(
        &hub,
        &[
            "refused",
            "invalid hub token presented in a frame",
            "127.0.0.1",
        ],
    )
    .await;

    // A name owned elsewhere, and a name in use.
    let mut owner = Ws::connect(&hub.url).await;
    owner
        .send(json!({"type": "register", "clientId": "CC-1", "token": TOKEN, "ownership": true}))
        .await;
    let secret = owner.expect("registered").await["ownerSecret"]
        .as_str()
        .unwrap()
        .to_string();
    // Without the owner secret: owned elsewhere. With it, while the owner is connected: in use.
    let mut thief = Ws::connect(&hub.url).await;
    thief
        .send(json!({"type": "register", "clientId": "CC-1", "token": TOKEN}))
        .await;
    assert_eq!(thief.expect("register_rejected").await["code"], "not_owner");
    log_line(&hub, &["refused", "register CC-1 (not_owner)", "127.0.0.1"]).await;
    thief
        .send(
            json!({"type": "register", "clientId": "CC-1", "token": TOKEN, "ownerSecret": secret}),
        )
        .await;
    // The owner's claim waits for the probed holder (docs/PROTOCOL.md, "register"): the live
    // holder keeps reading, so it answers the probe and keeps the name.
    let holder_reads = async { while owner.ws.next().await.is_some() {} };
    let refused = tokio::select! {
        r = thief.expect("register_rejected") => r,
        () = holder_reads => panic!("the holder's connection closed"),
    };
    assert_eq!(refused["code"], "name_in_use");
    log_line(
        &hub,
        &["refused", "register CC-1 (name_in_use)", "127.0.0.1"],
    )
    .await;

    // The connection cap: owner and thief (both showed the token) hold two of three places.
    let bearer = || bearer_request(&hub.url, TOKEN);
    let _third = tokio_tungstenite::connect_async(bearer()).await.unwrap();
    match tokio_tungstenite::connect_async(bearer()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        Err(_) => {}
        Ok(_) => panic!("a connection over the cap was accepted"),
    }
    log_line(&hub, &["refused", "connection limit (3)", "127.0.0.1"]).await;

    // Each refusal is counted by its reason. (The scrape needs a place: the ones just freed
    // come back when their sockets are gone on the hub's side.)
    drop((owner, thief, _third, guess));
    let deadline = tokio::time::Instant::now() + WAIT;
    let auth = format!("Bearer {TOKEN}");
    let metrics = loop {
        let r = get(hub.port, "/metrics", &[("Authorization", &auth)]).await;
        if r.status == 200 {
            break r.body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", r.body);
    };
    // The cap refused the fourth connection, and any scrape above that came too early.
    let capped = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"relay_connections_refused_total{reason="max_connections"} "#)
        })
        .and_then(|n| n.parse::<u64>().ok());
    assert!(capped.is_some_and(|n| n >= 1), "{metrics}");
    for line in [
        r#"relay_connections_refused_total{reason="unauthorized"} 1"#,
        r#"relay_frames_refused_total{reason="unauthorized"} 1"#,
        r#"relay_frames_refused_total{reason="not_owner"} 1"#,
        r#"relay_frames_refused_total{reason="name_in_use"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in:\n{metrics}"
        );
    }

    // No secret is ever in the log.
    let log = hub.log.lock().unwrap().join("\n");
    for secret in [TOKEN, "wrong-guess-3b7a", secret.as_str()] {
        assert!(!log.contains(secret), "a secret in the hub's log:\n{log}");
    }
}
