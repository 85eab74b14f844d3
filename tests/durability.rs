//! Nothing acknowledged is lost: the hub killed with SIGKILL in the middle of a burst and
//! restarted on the same data directory still holds every acked message, exactly once and
//! in send order, and idempotency keys make resending the unacked ones safe. Registrations
//! share a deferred commit (docs/STORAGE.md, "Registrations"): what a later ack depends on
//! — a new session's row, an owner secret handed out — is on disk by the time of that ack,
//! and an idle hub commits the rest on its own.

use crate::common;

use std::collections::{BTreeMap, HashMap};

use common::{
    hub::{Hub, WAIT},
    ws::Ws,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const TOTAL: usize = 2000;

/// Sends `range` as fast as the hub takes them (all pipelined) and collects acks until every
/// one is acked or the connection dies. Returns rid → (seq, duplicate).
async fn burst(
    ws: Ws,
    range: Vec<usize>,
    on_ack: impl Fn(usize) + Send + 'static,
) -> HashMap<usize, (u64, bool)> {
    let (mut sink, mut stream) = ws.ws.split();
    let want = range.len();
    let writer = tokio::spawn(async move {
        for i in range {
            let f = json!({"type": "message", "to": "R", "content": format!("n={i}"),
                           "key": format!("k{i}"), "rid": i});
            if sink.send(Message::text(f.to_string())).await.is_err() {
                return;
            }
        }
    });
    let mut acks = HashMap::new();
    while acks.len() < want {
        match tokio::time::timeout(WAIT, stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let f: Value = serde_json::from_str(&t).unwrap();
                if f["type"] == "sent" {
                    let rid = f["rid"].as_u64().unwrap() as usize;
                    acks.insert(rid, (f["seq"].as_u64().unwrap(), f["duplicate"] == true));
                    on_ack(acks.len());
                } else {
                    assert_ne!(f["type"], "error", "hub refused a send: {f}");
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(None) | Ok(Some(Err(_))) => break,
            Err(_) => panic!("no ack within {WAIT:?}"),
        }
    }
    writer.abort();
    acks
}

#[tokio::test]
async fn sigkill_mid_burst_loses_no_acked_message_and_duplicates_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path()).await;
    let port = hub.port;

    // Burst 2,000 messages; SIGKILL the hub once a few hundred are acked.
    let (sender, _) = Ws::register(&hub.url, "S").await;
    let pid = hub.pid() as i32;
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let k = killed.clone();
    let before = burst(sender, (0..TOTAL).collect(), move |n| {
        if n >= 300 && !k.swap(true, std::sync::atomic::Ordering::SeqCst) {
            common::hub::signal(pid, "KILL");
        }
    })
    .await;
    assert!(
        killed.load(std::sync::atomic::Ordering::SeqCst),
        "hub was never killed"
    );
    assert!(
        before.len() < TOTAL,
        "the kill came too late to test anything"
    );
    hub.kill().await;

    // Restart on the same port and data directory.
    let hub = Hub::start_on(dir.path(), port).await;

    // Resend everything that was not acked, with the same keys.
    let unacked: Vec<usize> = (0..TOTAL).filter(|i| !before.contains_key(i)).collect();
    let (sender, _) = Ws::register(&hub.url, "S").await;
    let after = burst(sender, unacked.clone(), |_| {}).await;
    assert_eq!(after.len(), unacked.len(), "every resend is acked");

    // Messages the hub had stored before dying (ack lost) come back as duplicates with an
    // earlier seq; the rest are stored now. Either way: one seq per message.
    let mut seq_of: BTreeMap<usize, u64> = BTreeMap::new();
    for (i, (seq, _)) in &before {
        seq_of.insert(*i, *seq);
    }
    let max_before = before.values().map(|(s, _)| *s).max().unwrap_or(0);
    let mut stored_without_ack = 0;
    for (i, (seq, dup)) in &after {
        if *dup {
            stored_without_ack += 1;
            assert!(*seq <= max_before + unacked.len() as u64);
        }
        seq_of.insert(*i, *seq);
    }
    println!(
        "acked before kill: {}, stored but unacked: {stored_without_ack}, stored after restart: {}",
        before.len(),
        after.len() - stored_without_ack
    );

    // The recipient reads everything: each message exactly once, in send order.
    let (mut r, reg) = Ws::register(&hub.url, "R").await;
    assert_eq!(reg["unread"], TOTAL as u64, "{reg}");
    let mut got: Vec<(u64, String)> = Vec::new();
    loop {
        r.send(json!({"type": "receive", "count": 500})).await;
        let inbox = r.expect("inbox").await;
        let msgs = inbox["messages"].as_array().unwrap().clone();
        if msgs.is_empty() {
            assert_eq!(inbox["remaining"], 0);
            break;
        }
        let seqs: Vec<u64> = msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        got.extend(msgs.iter().map(|m| {
            (
                m["seq"].as_u64().unwrap(),
                m["content"].as_str().unwrap().to_string(),
            )
        }));
        r.send(json!({"type": "mark_read", "seqs": seqs})).await;
        r.expect("marked").await;
    }
    let expected: Vec<String> = (0..TOTAL).map(|i| format!("n={i}")).collect();
    let texts: Vec<String> = got.iter().map(|(_, t)| t.clone()).collect();
    assert_eq!(texts, expected, "exactly once, in send order");
    for (i, (seq, _)) in got.iter().enumerate() {
        assert_eq!(seq_of[&i], *seq, "message {i} kept the seq its ack named");
    }
}

/// Kills the hub with SIGKILL and starts it again on the same port and data directory.
async fn kill_and_restart(dir: &std::path::Path, mut hub: Hub) -> Hub {
    let port = hub.port;
    common::hub::signal(hub.pid() as i32, "KILL");
    hub.kill().await;
    Hub::start_on(dir, port).await
}

#[tokio::test]
async fn a_new_sessions_row_is_on_disk_before_a_broadcast_it_should_get_is_acked() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    // B is new: its row (which broadcasts count as its mail) joins the deferred commit.
    let (_b, _) = Ws::register(&hub.url, "B").await;
    let (mut a, _) = Ws::register(&hub.url, "A").await;
    a.send(json!({"type": "message", "to": "all", "content": "for B too"}))
        .await;
    a.until("sent").await;
    // Killed within milliseconds of the ack, well inside the deferred commit's window.
    let hub = kill_and_restart(dir.path(), hub).await;

    let (mut b, reg) = Ws::register(&hub.url, "B").await;
    assert_eq!(
        reg["unread"], 1,
        "B's row survived with the broadcast: {reg}"
    );
    b.send(json!({"type": "receive"})).await;
    let inbox = b.expect("inbox").await;
    assert_eq!(inbox["messages"][0]["content"], "for B too", "{inbox}");
}

#[tokio::test]
async fn an_owner_secret_is_on_disk_before_it_is_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let mut c = Ws::connect(&hub.url).await;
    c.send(json!({"type": "register", "clientId": "C", "ownership": true}))
        .await;
    let reg = c.expect("registered").await;
    let secret = reg["ownerSecret"].as_str().expect("a secret").to_string();
    drop(c);
    // Nothing else happens before the kill that would commit it.
    let hub = kill_and_restart(dir.path(), hub).await;

    let mut thief = Ws::connect(&hub.url).await;
    thief
        .send(json!({"type": "register", "clientId": "C"}))
        .await;
    let refused = thief.expect("register_rejected").await;
    assert_eq!(refused["code"], "not_owner", "{refused}");
    drop(thief);
    let mut owner = Ws::connect(&hub.url).await;
    owner
        .send(json!({"type": "register", "clientId": "C", "ownerSecret": secret}))
        .await;
    let reg = owner.expect("registered").await;
    assert_eq!(reg["owned"], true, "{reg}");
}

#[tokio::test]
async fn an_idle_hub_commits_deferred_registrations_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let (_d, _) = Ws::register(&hub.url, "D").await;
    // No other traffic: only the actor's deadline (50 ms) can commit D's row within a
    // second — the hub's next store call, its integrity check, comes every 2 s and would
    // commit it too, which is what the bound tells apart. Read the file the way another
    // process would.
    let db = rusqlite::Connection::open_with_flags(
        hub.data_dir.join("relay.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let within = std::time::Duration::from_secs(1);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let rows: i64 = db
            .query_row("SELECT count(*) FROM sessions WHERE id = 'D'", [], |r| {
                r.get(0)
            })
            .unwrap();
        if rows == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "D's row was not committed within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
