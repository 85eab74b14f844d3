//! A store left by a hub of schema version 2 (two per-message indexes, no postings) is
//! upgraded when the new hub starts, and every message in it is found again through the
//! postings that replace the indexes (docs/STORAGE.md, "Upgrades"); an operator tool run
//! next to an older hub leaves such a store as it is.

use crate::common;

use std::{path::Path, process::Stdio};

use common::{
    hub::{Hub, WAIT, bin},
    ws::Ws,
};
use rusqlite::Connection;
use serde_json::json;

/// Direct messages A sends B before the stop.
const SENT: usize = 300;

/// Turns a stopped hub's store back into what a hub of schema version 2 leaves behind.
fn to_version_2(db: &Path) {
    Connection::open(db)
        .unwrap()
        .execute_batch(
            "DROP TABLE postings;
             DELETE FROM meta WHERE key = 'postings_upto';
             CREATE INDEX messages_by_recipient ON messages(recipient, seq);
             CREATE INDEX messages_by_sender ON messages(sender, seq);
             UPDATE meta SET value = '2' WHERE key = 'schema_version';",
        )
        .unwrap();
}

/// The store's schema version and how many of the two old indexes it has.
fn shape(db: &Path) -> (String, i64) {
    Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT (SELECT value FROM meta WHERE key = 'schema_version'),
                    (SELECT count(*) FROM sqlite_master
                     WHERE name IN ('messages_by_recipient', 'messages_by_sender'))",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

#[tokio::test]
async fn a_version_2_store_is_upgraded_at_start_and_every_message_is_found_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path()).await;
    // B is known before the broadcast, so it is B's mail too.
    let (b, _) = Ws::register(&hub.url, "B").await;
    drop(b);
    let (mut a, _) = Ws::register(&hub.url, "A").await;
    for i in 0..SENT {
        a.send(json!({"type": "message", "to": "B", "content": format!("n={i}")}))
            .await;
        a.until("sent").await;
    }
    a.send(json!({"type": "message", "to": "all", "content": "to everyone"}))
        .await;
    a.until("sent").await;
    drop(a);
    assert!(hub.terminate().await.success());
    let db = hub.data_dir.join("relay.db");
    to_version_2(&db);

    // The operator's tool, as it would run next to an older hub still serving this store,
    // does its edit and leaves the store at version 2 with both indexes.
    let out = tokio::process::Command::new(bin())
        .args(["sessions", "release", "A", "--local", "--data-dir"])
        .arg(&hub.data_dir)
        .env("CLAUDE_RELAY_HOME", dir.path().join("home"))
        .env_remove("RELAY_DATA_DIR")
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(WAIT, out).await.unwrap().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(shape(&db), ("2".to_string(), 2));

    // The new hub upgrades it at start.
    let hub = Hub::start(dir.path()).await;
    assert_eq!(shape(&db), ("3".to_string(), 0));
    let log = hub.log.lock().unwrap().join("\n");
    assert!(log.contains("upgraded from schema version 2 to 3"), "{log}");

    // B's mail is all there: counted at registration, read back oldest first, once each.
    let (mut b, reg) = Ws::register(&hub.url, "B").await;
    assert_eq!(reg["unread"], SENT as u64 + 1, "{reg}");
    let mut got: Vec<String> = Vec::new();
    loop {
        b.send(json!({"type": "receive", "count": 100})).await;
        let inbox = b.expect("inbox").await;
        let msgs = inbox["messages"].as_array().unwrap().clone();
        if msgs.is_empty() {
            assert_eq!(inbox["remaining"], 0, "{inbox}");
            break;
        }
        let seqs: Vec<u64> = msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        got.extend(
            msgs.iter()
                .map(|m| m["content"].as_str().unwrap().to_string()),
        );
        b.send(json!({"type": "mark_read", "seqs": seqs})).await;
        b.expect("marked").await;
    }
    let mut want: Vec<String> = (0..SENT).map(|i| format!("n={i}")).collect();
    want.push("to everyone".into());
    assert_eq!(got, want);

    // A's own history, newest last, from the postings of what it sent.
    let (mut a, _) = Ws::register(&hub.url, "A").await;
    a.send(json!({"type": "get_history", "count": 3})).await;
    let page = a.expect("history").await;
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            &*format!("n={}", SENT - 2),
            &*format!("n={}", SENT - 1),
            "to everyone"
        ]
    );
}
