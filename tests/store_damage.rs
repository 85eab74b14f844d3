//! A damaged `relay.db` is noticed when the hub starts, not after it has acknowledged sends
//! into it: the hub logs loudly what is wrong and what to do, refuses every send with a
//! clear error, still lets sessions in to read what is intact, and says so on `/healthz`.

use crate::common;

use std::path::Path;

use common::{http::get, hub::Hub, ws::Ws};
use serde_json::json;

/// Overwrites the page header of the database page that holds `marker` (a table leaf).
fn corrupt_page_holding(db: &Path, marker: &str) {
    let mut bytes = std::fs::read(db).unwrap();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .expect("marker in the database file");
    let page = at / 4096;
    assert!(page > 0, "the marker is on the schema page");
    bytes[page * 4096..page * 4096 + 12].fill(0xff);
    std::fs::write(db, bytes).unwrap();
}

#[tokio::test]
async fn a_corrupted_page_is_found_at_start_and_no_send_is_acked_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path()).await;
    let (mut a, _) = Ws::register(&hub.url, "A").await;
    let body = "z".repeat(200);
    for i in 0..300 {
        a.send(json!({"type": "message", "to": "B", "content": format!("MARK-{i:04}-{body}")}))
            .await;
        a.until("sent").await;
    }
    drop(a);
    // A clean stop folds the WAL into relay.db and removes it: the file holds everything.
    assert!(hub.terminate().await.success());
    corrupt_page_holding(&hub.data_dir.join("relay.db"), "MARK-0100-");

    let hub = Hub::start(dir.path()).await;
    // Before anything else: the health check a monitor runs already says it.
    let health = get(hub.port, "/healthz", &[]).await;
    assert_eq!(health.status, 503, "{}", health.body);
    let health = health.json();
    assert_eq!(
        (health["status"].as_str(), health["store"].as_str()),
        (Some("unavailable"), Some("damaged")),
        "{health}"
    );
    let log = hub.log.lock().unwrap().join("\n");
    assert!(
        log.contains("STORE DAMAGED"),
        "no loud warning at start: {log}"
    );
    assert!(
        log.contains("docs/STORAGE.md"),
        "the warning says where to read on: {log}"
    );

    // A session still gets in (its record cannot be written; it registers without it)...
    let (mut a, reg) = Ws::register(&hub.url, "A").await;
    assert_eq!(reg["type"], "registered", "{reg}");
    // ...but nothing is acknowledged into the damaged file.
    a.send(json!({"type": "message", "to": "B", "content": "after the damage", "rid": 1}))
        .await;
    let e = a.until("error").await;
    assert_eq!(
        (e["code"].as_str(), e["rid"].as_u64()),
        (Some("unavailable"), Some(1)),
        "{e}"
    );
    let text = e["message"].as_str().unwrap();
    assert!(
        text.contains("NOT stored") && text.contains("damaged"),
        "{e}"
    );
    a.roundtrip().await;
    // The console shows it too (the write probe would fail as well: a damaged store writes
    // nothing, not even the probe's row).
    let state = get(hub.port, "/api/state", &[]).await.json();
    assert_eq!(state["hub"]["store"], "damaged", "{state}");
}
