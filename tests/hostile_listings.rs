//! Oversized listings cost no one their connection: a session table grown past what a client
//! accepts in one frame (16 MiB), history and inbox pages of bodies that grow sixfold when
//! JSON-escaped, and a table held to `--max-sessions`. Real hub, real bridges, the real CLI.

use crate::common;

use common::{
    bridge::Bridge,
    hub::{Hub, HubOpts, WAIT, bin},
    ws::Ws,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A client's frame limit (`mcp_bridge::dial::CLIENT_MAX_FRAME`).
const CLIENT_MAX_FRAME: usize = 16 << 20;

/// Registers `n` sessions `S-0000…` with `meta` and lets each go, `parallel` at a time. They
/// ask for no presence pushes: the table is the subject here, not who hears of each join.
async fn register_many(url: &str, n: usize, meta: &Value, parallel: usize) {
    futures_util::stream::iter(0..n)
        .map(|i| {
            let url = url.to_string();
            let meta = meta.clone();
            async move {
                let id = format!("S-{i:04}");
                let mut ws = Ws::connect(&url).await;
                ws.send(
                    json!({"type": "register", "clientId": id, "meta": meta, "presence": "none"}),
                )
                .await;
                assert_eq!(ws.until("registered").await["clientId"], id);
            }
        })
        .buffer_unordered(parallel)
        .collect::<Vec<()>>()
        .await;
}

/// `b` is connected and never lost its hub connection.
async fn still_connected(b: &Bridge) {
    let status = b.ok("relay_status", Value::Null).await;
    assert!(status.contains("— connected for"), "{status}");
    let log = b.log.lock().unwrap();
    assert!(
        !log.iter().any(|l| l.contains("connection error")),
        "{log:#?}"
    );
}

/// The next text frame on `ws`, raw (to measure it), skipping control frames.
async fn raw_frame(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(WAIT, ws.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no frame: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_table_past_the_frame_limit_is_paged_and_keeps_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let opts = HubOpts {
        args: vec!["--register-rate".into(), "100000".into()],
        ..Default::default()
    };
    let hub = Hub::start_with(dir.path(), opts).await;
    // 4,400 sessions with 4 KiB of metadata each: about 18 MB as one listing.
    let n = 4_400;
    register_many(&hub.url, n, &json!({"pad": "x".repeat(3_990)}), 256).await;

    // The bridge lists them without losing its hub connection.
    let cc1 = Bridge::start(dir.path(), &hub.url, "CC-1").await;
    cc1.wait_connected().await;
    let out = cc1.ok("relay_sessions", Value::Null).await;
    assert!(!out.contains("Hub unavailable"), "{out:.300}");
    assert!(
        out.starts_with(&format!("{} sessions known (1 online):", n + 1)),
        "{out:.300}"
    );
    assert!(
        out.contains("… and 4301 more, seen longer ago"),
        "{}",
        &out[out.len() - 200..]
    );
    assert!(out.lines().count() <= 102, "a short result");
    let peers = cc1.ok("relay_peers", Value::Null).await;
    assert!(peers.contains("No other session is online"), "{peers}");
    still_connected(&cc1).await;

    // An old client (no paging fields) gets a bounded first page and a cursor.
    let mut old = Ws::connect(&hub.url).await;
    old.send(json!({"type": "get_sessions"})).await;
    let text = raw_frame(&mut old).await;
    assert!(text.len() < 5 << 20, "{} bytes", text.len());
    let page: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(page["type"], "sessions");
    assert!(page["sessions"].as_object().unwrap().len() <= 1000);
    assert_eq!(page["total"], n + 1);
    assert!(page["next"].is_string(), "{:.200}", text);

    // claude-relay sessions follows the pages to the end.
    let out = std::process::Command::new(bin())
        .args(["sessions"])
        .env("CLAUDE_RELAY_HOME", dir.path().join("cli-home"))
        .env("RELAY_URL", &hub.url)
        .env_remove("RELAY_TOKEN")
        .env_remove("RELAY_TOKEN_FILE")
        .env_remove("RELAY_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let rows = table.lines().filter(|l| l.starts_with("S-")).count();
    assert_eq!(rows, n, "{:.500}", table);
    assert!(!table.contains("unreachable"), "{:.500}", table);
}

#[tokio::test]
async fn pages_of_escaped_bodies_stay_under_the_frame_limit() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    // 25 bodies of control characters, each ~1 MB once JSON-escaped (just under the hub's
    // frame limit as sent): 4 MB of content, 25 MB as one page.
    let body = "\u{1}".repeat(160 << 10);
    let (mut m, _) = Ws::register(&hub.url, "MALLORY").await;
    for i in 0..25 {
        m.send(json!({"type": "message", "to": "CC-2", "content": body, "rid": i}))
            .await;
        let sent = m.until("sent").await;
        assert_eq!(sent["rid"], i, "{sent}");
    }
    let cc2 = Bridge::start(dir.path(), &hub.url, "CC-2").await;
    cc2.wait_connected().await;
    for args in [json!({"count": 50}), json!({"replay": true, "count": 50})] {
        let out = cc2.ok("relay_receive", args.clone()).await;
        assert!(out.contains("[MALLORY → you"), "{args}: {out:.300}");
        assert!(!out.contains("dropped"), "{args}: {out:.300}");
        still_connected(&cc2).await;
    }

    // And on the wire: every page is a frame a client accepts. (READER is away while the
    // mail comes, so nothing is pushed to it live.)
    for i in 0..25 {
        m.send(json!({"type": "message", "to": "READER", "content": body, "rid": i}))
            .await;
        m.until("sent").await;
    }
    let (mut reader, _) = Ws::register(&hub.url, "READER").await;
    reader
        .send(json!({"type": "get_history", "count": 500, "after": "", "rid": "h"}))
        .await;
    reader
        .send(json!({"type": "receive", "count": 500, "rid": "r"}))
        .await;
    let mut seen = 0;
    while seen < 2 {
        let text = raw_frame(&mut reader).await;
        let f: Value = serde_json::from_str(&text).unwrap();
        if f["type"] == "history" || f["type"] == "inbox" {
            assert!(
                text.len() < CLIENT_MAX_FRAME,
                "{}: {} bytes",
                f["type"],
                text.len()
            );
            assert!(!f["messages"].as_array().unwrap().is_empty());
            seen += 1;
        }
    }
}

#[tokio::test]
async fn the_session_table_is_held_to_max_sessions_and_never_drops_an_online_one() {
    let dir = tempfile::tempdir().unwrap();
    let opts = HubOpts {
        args: vec!["--max-sessions".into(), "5".into()],
        ..Default::default()
    };
    let hub = Hub::start_with(dir.path(), opts).await;
    // KEEP is the oldest and stays online; OWNED is owned.
    let (mut keep, _) = Ws::register(&hub.url, "KEEP").await;
    let mut owned = Ws::connect(&hub.url).await;
    owned
        .send(json!({"type": "register", "clientId": "OWNED", "ownership": true}))
        .await;
    assert_eq!(owned.until("registered").await["owned"], true);
    drop(owned);
    register_many(&hub.url, 8, &json!({}), 1).await;

    // Every disconnect trims the table: KEEP stays, the least recently seen go.
    let ids = common::eventually("the table trimmed to 5 with S-0007", WAIT, async || {
        keep.send(json!({"type": "get_sessions", "rid": "ls"}))
            .await;
        let page = keep.until("sessions").await;
        let ids: Vec<String> = page["sessions"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        if page["total"] == 5 && ids.contains(&"S-0007".to_string()) {
            Ok(ids)
        } else {
            Err(page.to_string())
        }
    })
    .await;
    assert_eq!(ids, ["KEEP", "S-0004", "S-0005", "S-0006", "S-0007"]);
    // A session forgotten to keep the bound keeps its ownership: no one else takes the name.
    let mut thief = Ws::connect(&hub.url).await;
    thief
        .send(json!({"type": "register", "clientId": "OWNED"}))
        .await;
    assert_eq!(thief.until("register_rejected").await["code"], "not_owner");
}
