//! A store that cannot write (a full disk) still lets everyone read their mail: sends are
//! refused with an honest error, but `register` succeeds and `receive` returns what waits.
//!
//! How the disk is made full: the hub process's file-size limit (RLIMIT_FSIZE, `ulimit -f`)
//! is lowered to the size its files already have, with `prlimit(2)` on the running hub. No
//! store file can grow any more — what a full disk does to SQLite — while everything stored
//! stays readable. The hub turns SIGXFSZ into an error (see `src/cli/hub_cmd.rs`).
//! `prlimit(2)` on another process is Linux's.
#![cfg(target_os = "linux")]

use crate::common;

use common::{
    hub::{Hub, limit_file_size},
    ws::Ws,
};
use serde_json::{Value, json};

/// Sends until the hub refuses to store; returns how many were stored.
async fn fill(ws: &mut Ws, body: &str) -> usize {
    for i in 0..100_000 {
        ws.send(json!({"type": "message", "to": "Reader", "content": body}))
            .await;
        let f = ws.next().await;
        match f["type"].as_str() {
            Some("sent") => {}
            Some("error") => {
                assert_eq!(f["code"], "unavailable", "{f}");
                assert!(f["message"].as_str().unwrap().contains("NOT stored"), "{f}");
                return i;
            }
            _ => panic!("unexpected reply to a send: {f}"),
        }
    }
    panic!("the store never filled up");
}

#[tokio::test]
async fn on_a_full_disk_sends_are_refused_but_sessions_still_register_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let (mut sender, _) = Ws::register(&hub.url, "Sender").await;
    // Mail that waits for Reader before the disk fills up.
    for i in 0..3 {
        sender
            .send(json!({"type": "message", "to": "Reader", "content": format!("waiting {i}")}))
            .await;
        sender.until("sent").await;
    }

    limit_file_size(hub.pid(), 0);
    // Big sends fail first; then small ones, until not one more page can be written.
    fill(&mut sender, &"x".repeat(64 << 10)).await;
    fill(&mut sender, "y").await;
    sender.roundtrip().await;

    // A session that was never seen before (its record cannot be written) registers...
    let (mut reader, reg) = Ws::register(&hub.url, "Reader").await;
    assert_eq!(reg["type"], "registered", "{reg}");
    assert!(reg["unread"].as_u64().unwrap() >= 3, "{reg}");
    // ...and reads its mail, oldest first.
    reader.send(json!({"type": "receive", "count": 3})).await;
    let inbox = reader.expect("inbox").await;
    let texts: Vec<&str> = inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m: &Value| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["waiting 0", "waiting 1", "waiting 2"], "{inbox}");
    reader.roundtrip().await;

    // The hub said in its log what it could not write.
    let log = hub.log.lock().unwrap().join("\n");
    assert!(log.contains("session record not written"), "{log}");
}
