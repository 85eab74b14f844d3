//! The hub's wire protocol, spoken over a raw WebSocket: the Node relay's core frames field
//! for field, privacy of direct mail, bad input, name ownership, heartbeats and clean
//! shutdown. The hub is served in this process (`common::inproc`) except where the process
//! is the point (SIGTERM); the heartbeat tests move tokio's paused clock instead of waiting.

use crate::common;

use std::time::Duration;

use common::{
    hub::{Hub, WAIT},
    inproc::{InProcHub, hold_clock},
    ws::Ws,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::{CloseFrame, frame::coding::CloseCode},
};

fn is_iso(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T')
}

/// A client that knows only the Node relay's core frames, and sends no extra fields.
#[tokio::test]
async fn node_core_client_works_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;

    let mut m1 = Ws::connect(&hub.url).await;
    m1.send(json!({"type": "register", "clientId": "M1"})).await;
    let reg = m1.expect("registered").await;
    assert_eq!(reg["clientId"], "M1");
    assert_eq!(reg["peers"], json!([]));

    let (mut m2, reg2) = Ws::register(&hub.url, "M2").await;
    assert_eq!(
        reg2["peers"],
        json!(["M1"]),
        "registered.peers excludes self"
    );
    let joined = m1.expect("peer_joined").await;
    assert_eq!(joined["clientId"], "M2");
    assert_eq!(
        joined["peers"],
        json!(["M1", "M2"]),
        "peer_joined.peers lists everyone"
    );

    // Broadcast: `to` omitted means all.
    m1.send(json!({"type": "message", "content": "hello all"}))
        .await;
    let msg = m2.expect("message").await;
    assert_eq!(msg["from"], "M1");
    assert_eq!(msg["to"], "all");
    assert_eq!(msg["content"], "hello all");
    assert!(is_iso(&msg["timestamp"]), "{msg}");
    let sent = m1.expect("sent").await;
    assert_eq!(sent["to"], "all");
    assert_eq!(sent["delivered"], true);
    assert_eq!(sent["id"], msg["id"]);

    // Direct.
    m2.send(json!({"type": "message", "to": "M1", "content": "hi M1"}))
        .await;
    let msg = m1.expect("message").await;
    assert_eq!(
        (msg["from"].as_str(), msg["to"].as_str()),
        (Some("M2"), Some("M1"))
    );
    m2.expect("sent").await;

    m1.send(json!({"type": "get_history", "count": 10})).await;
    let h = m1.expect("history").await;
    let contents: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["hello all", "hi M1"], "oldest first");
    for m in h["messages"].as_array().unwrap() {
        assert!(m["from"].is_string() && m["to"].is_string() && is_iso(&m["timestamp"]));
    }

    m1.send(json!({"type": "get_peers"})).await;
    let p = m1.expect("peers").await;
    assert_eq!(p["peers"], json!(["M1", "M2"]));
    assert_eq!(p["self"], "M1");

    m1.send(json!({"type": "ping"})).await;
    let pong = m1.expect("pong").await;
    assert!(pong["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    // The hub's version, for `claude-relay doctor` (additive; the Node relay has none).
    assert_eq!(pong["version"], env!("CARGO_PKG_VERSION"));

    m1.send(json!({"type": "get_sessions"})).await;
    let s = m1.expect("sessions").await;
    assert_eq!(s["self"], "M1");
    assert_eq!(s["sessions"]["M2"]["online"], true);

    drop(m2);
    let left = m1.expect("peer_left").await;
    assert_eq!(left["clientId"], "M2");
    assert_eq!(left["peers"], json!(["M1"]));
    hub.stop().await;
}

#[tokio::test]
async fn request_ids_are_echoed_on_every_reply() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let mut a = Ws::connect(&hub.url).await;
    a.send(json!({"type": "register", "clientId": "A", "rid": 1}))
        .await;
    assert_eq!(a.expect("registered").await["rid"], 1);
    for (i, frame) in [
        json!({"type": "message", "to": "B", "content": "x"}),
        json!({"type": "get_history"}),
        json!({"type": "get_peers"}),
        json!({"type": "get_sessions"}),
        json!({"type": "ping"}),
        json!({"type": "receive"}),
        json!({"type": "mark_read", "seqs": []}),
        json!({"type": "get_status"}),
        json!({"type": "nonsense"}),
        json!({"type": "message", "content": 42}),
    ]
    .into_iter()
    .enumerate()
    {
        let rid = format!("r{i}");
        let mut f = frame.clone();
        f["rid"] = json!(rid);
        a.send(f).await;
        let reply = a.next().await;
        assert_eq!(reply["rid"], json!(rid), "no rid echo for {frame}: {reply}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn direct_mail_is_private_through_every_frame_and_filter() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let (mut a, _) = Ws::register(&hub.url, "CC-1").await;
    let (mut b, _) = Ws::register(&hub.url, "CC-2").await;
    let (mut c, _) = Ws::register(&hub.url, "CC-3").await;
    a.send(json!({"type": "message", "to": "CC-2", "content": "secret a->b"}))
        .await;
    let sent = a.until("sent").await;
    b.until("message").await;
    b.send(json!({"type": "message", "to": "CC-1", "content": "secret b->a"}))
        .await;
    b.until("sent").await;
    let cursor_before = format!(
        "{}-0",
        sent["id"].as_str().unwrap().split('-').next().unwrap()
    );

    for q in [
        json!({"type": "get_history", "count": 500}),
        json!({"type": "get_history", "from": "CC-1"}),
        json!({"type": "get_history", "to": "CC-2"}),
        json!({"type": "get_history", "from": "CC-2", "to": "CC-1"}),
        json!({"type": "get_history", "after": cursor_before}),
        json!({"type": "get_history", "after": "2000-01-01T00:00:00Z"}),
        json!({"type": "get_history", "inboundOnly": true}),
        json!({"type": "receive", "count": 100}),
        json!({"type": "receive", "from": "CC-1"}),
    ] {
        c.send(q.clone()).await;
        let r = c.next().await;
        assert_eq!(r["messages"], json!([]), "{q} leaked: {r}");
    }
    c.send(json!({"type": "get_status"})).await;
    assert_eq!(c.expect("status").await["unread"], 0);
    // Marking someone else's message read changes nothing for them.
    c.send(json!({"type": "mark_read", "seqs": [1, 2]})).await;
    assert_eq!(c.expect("marked").await["marked"], 0);
    b.send(json!({"type": "receive"})).await;
    assert_eq!(
        b.expect("inbox").await["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A `from` in a client frame is ignored: the hub stamps the sender.
    c.send(json!({"type": "message", "to": "CC-2", "from": "CC-1", "content": "spoof"}))
        .await;
    c.until("sent").await;
    let m = b.until("message").await;
    assert_eq!(m["from"], "CC-3");
    hub.stop().await;
}

#[tokio::test]
async fn bad_input_gets_an_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let (mut a, _) = Ws::register(&hub.url, "A").await;
    let (mut b, _) = Ws::register(&hub.url, "B").await;
    a.until("peer_joined").await;

    let mut unregistered = Ws::connect(&hub.url).await;
    unregistered
        .send(json!({"type": "message", "to": "A", "content": "hi"}))
        .await;
    let e = unregistered.expect("error").await;
    assert_eq!(e["code"], "not_registered");
    unregistered.send(json!({"type": "get_history"})).await;
    assert_eq!(unregistered.expect("error").await["code"], "not_registered");
    unregistered.roundtrip().await;

    let cases: Vec<(String, &str, &str)> = vec![
        ("{not json".into(), "bad_json", "malformed JSON"),
        ("[1,2,3]".into(), "bad_frame", "JSON object"),
        (r#"{"content":"x"}"#.into(), "bad_frame", "type"),
        (r#"{"type":"teleport"}"#.into(), "unknown_type", "teleport"),
        (
            r#"{"type":"message","content":42}"#.into(),
            "bad_frame",
            "string",
        ),
        (
            r#"{"type":"message","to":"B"}"#.into(),
            "bad_frame",
            "content",
        ),
        (
            r#"{"type":"message","to":"not valid!","content":"x"}"#.into(),
            "invalid_id",
            "recipient",
        ),
        (
            r#"{"type":"get_history","count":"ten"}"#.into(),
            "bad_frame",
            "get_history",
        ),
        (
            format!(
                r#"{{"type":"message","to":"B","content":"{}"}}"#,
                "x".repeat(1_500_000)
            ),
            "too_large",
            "limit",
        ),
    ];
    for (frame, code, words) in cases {
        a.send_text(frame.clone()).await;
        let e = a.expect("error").await;
        assert_eq!(e["code"], code, "for {:.80}: {e}", frame);
        assert!(
            e["message"].as_str().unwrap().contains(words),
            "error for {:.80} should mention {words:?}: {e}",
            frame
        );
    }
    futures_util::SinkExt::send(
        &mut a.ws,
        tokio_tungstenite::tungstenite::Message::binary(vec![1u8, 2, 3]),
    )
    .await
    .unwrap();
    assert_eq!(a.expect("error").await["code"], "binary_frame");

    // Bad ids on register are refused with a reason; the connection can try again.
    let mut c = Ws::connect(&hub.url).await;
    for bad in ["", "all", "1abc", "has space", &"x".repeat(65), "ünïcode"] {
        c.send(json!({"type": "register", "clientId": bad})).await;
        let r = c.expect("register_rejected").await;
        assert_eq!(r["code"], "invalid_id", "{bad:?}: {r}");
    }
    c.send(json!({"type": "register", "clientId": "C"})).await;
    c.expect("registered").await;

    // Both connections still work, B saw none of it but C's arrival, and nothing was stored.
    a.send(json!({"type": "message", "to": "B", "content": "still here"}))
        .await;
    assert_eq!(a.until("sent").await["delivered"], true);
    assert_eq!(b.expect("peer_joined").await["clientId"], "C");
    assert_eq!(b.expect("message").await["content"], "still here");
    b.send(json!({"type": "get_history", "count": 100})).await;
    assert_eq!(
        b.expect("history").await["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// A resend with the same key is acked as a duplicate; the same key on a different message
/// is refused and that message is not stored (it would otherwise be acked and dropped).
#[tokio::test]
async fn a_key_reused_for_a_different_message_is_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let (mut a, _) = Ws::register(&hub.url, "A").await;
    let send = |to: &str, content: &str, rid: u32| json!({"type": "message", "to": to, "content": content, "key": "k-1", "rid": rid});
    a.send(send("B", "deploy v1", 1)).await;
    let first = a.expect("sent").await;
    a.send(send("B", "deploy v1", 2)).await;
    let again = a.expect("sent").await;
    assert_eq!(
        (again["duplicate"].clone(), again["id"].clone()),
        (json!(true), first["id"].clone())
    );

    for (to, content, rid) in [("B", "deploy v2", 3), ("C", "deploy v1", 4)] {
        a.send(send(to, content, rid)).await;
        let e = a.expect("error").await;
        assert_eq!(e["code"], "key_conflict", "{e}");
        assert_eq!(e["rid"], rid, "{e}");
        let text = e["message"].as_str().unwrap();
        assert!(
            text.contains("NOT stored") && text.contains("new key"),
            "{e}"
        );
    }

    let (mut b, reg) = Ws::register(&hub.url, "B").await;
    assert_eq!(reg["unread"], 1, "{reg}");
    b.send(json!({"type": "receive"})).await;
    let inbox = b.expect("inbox").await;
    assert_eq!(inbox["messages"][0]["content"], "deploy v1");
    let (_c, reg) = Ws::register(&hub.url, "C").await;
    assert_eq!(reg["unread"], 0, "{reg}");
    hub.stop().await;
}

#[tokio::test]
async fn a_frame_over_the_hard_limit_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let (mut a, _) = Ws::register(&hub.url, "A").await;
    let (mut big, _) = Ws::register(&hub.url, "Big").await;
    a.until("peer_joined").await;
    // The hub refuses the frame from its header and closes (1009); the client may still be
    // writing and see a reset instead of the close frame.
    let sent = futures_util::SinkExt::send(
        &mut big.ws,
        tokio_tungstenite::tungstenite::Message::text("x".repeat(17 << 20)),
    )
    .await;
    if sent.is_ok()
        && let Some((code, reason)) = big.closed().await
    {
        assert_eq!(u16::from(code), 1009, "{reason}");
    }
    assert_eq!(a.expect("peer_left").await["clientId"], "Big");
    a.roundtrip().await;
    hub.stop().await;
}

#[tokio::test]
async fn a_live_name_is_never_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let (mut holder, _) = Ws::register(&hub.url, "CC-1").await;
    let (mut other, _) = Ws::register(&hub.url, "CC-2").await;
    holder.until("peer_joined").await;

    let mut thief = Ws::connect(&hub.url).await;
    for _ in 0..3 {
        thief
            .send(json!({"type": "register", "clientId": "CC-1"}))
            .await;
        let r = thief.expect("register_rejected").await;
        assert_eq!(r["code"], "name_in_use");
        assert!(
            r["reason"]
                .as_str()
                .unwrap()
                .contains("held by a live connection")
        );
    }
    // The thief is not registered: it cannot send as anyone.
    thief
        .send(json!({"type": "message", "to": "CC-2", "content": "x"}))
        .await;
    assert_eq!(thief.expect("error").await["code"], "not_registered");

    // The holder is undisturbed: it still gets its mail and nobody saw it leave.
    other
        .send(json!({"type": "message", "to": "CC-1", "content": "for the holder"}))
        .await;
    assert_eq!(other.expect("sent").await["delivered"], true);
    assert_eq!(holder.expect("message").await["content"], "for the holder");

    // Once the holder is gone, the name is free at once.
    drop(holder);
    assert_eq!(other.expect("peer_left").await["clientId"], "CC-1");
    thief
        .send(json!({"type": "register", "clientId": "CC-1"}))
        .await;
    thief.expect("registered").await;
    hub.stop().await;
}

/// The hub's heartbeat interval in these tests (its default; the clock is paused, so it
/// costs nothing to wait).
const BEAT: Duration = Duration::from_secs(25);

/// Reads `ws` in the background, as a live client does — so every ping is answered at once —
/// and hands over each message (`None` once the connection ended).
fn read_in_background(mut ws: Ws) -> mpsc::UnboundedReceiver<Option<Message>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let m = match ws.ws.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => None,
                Some(Ok(m)) => Some(m),
            };
            let end = m.is_none();
            if tx.send(m).is_err() || end {
                break;
            }
        }
    });
    rx
}

/// Moves the paused clock on by `total`, a tenth of a second at a time, so whatever is in
/// flight (a pong) is handled between any two of the hub's timers, as it would be in real time.
async fn pass(total: Duration) {
    let step = Duration::from_millis(100);
    let mut left = total;
    while !left.is_zero() {
        let d = left.min(step);
        tokio::time::advance(d).await;
        left -= d;
    }
}

/// The next message read (`None`: the connection ended), waited for with the clock held.
async fn next_read(rx: &mut mpsc::UnboundedReceiver<Option<Message>>) -> Option<Message> {
    hold_clock(tokio::time::timeout(WAIT, rx.recv()))
        .await
        .expect("a message in time")
        .expect("the reader is running")
}

#[tokio::test]
async fn a_connection_that_stops_answering_pings_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let (mut watcher, _) = Ws::register(&hub.url, "Watcher").await;
    // A client that never reads never answers pings (its pongs are only sent while reading).
    let (_mute, _) = Ws::register(&hub.url, "Mute").await;
    assert_eq!(watcher.expect("peer_joined").await["clientId"], "Mute");
    let mut watched = read_in_background(watcher);
    tokio::time::pause();
    // One interval: both pinged; nothing else yet (the mute one's answer is not due).
    pass(BEAT + Duration::from_secs(1)).await;
    let first = next_read(&mut watched).await;
    assert!(matches!(first, Some(Message::Ping(_))), "{first:?}");
    // The second interval passes without a word from it: dropped; the watcher, which
    // answered, stays and is told.
    pass(BEAT).await;
    let mut left = None;
    for _ in 0..3 {
        match next_read(&mut watched).await {
            Some(Message::Text(t)) => {
                left = Some(serde_json::from_str::<Value>(&t).unwrap());
                break;
            }
            Some(Message::Ping(_)) => {}
            other => panic!("the watcher got {other:?}"),
        }
    }
    let left = left.expect("the mute connection is still there after two intervals");
    assert_eq!(left["type"], "peer_left", "{left}");
    assert_eq!(left["clientId"], "Mute");
    let (mut again, _) = hold_clock(Ws::register(&hub.url, "Mute")).await;
    hold_clock(again.roundtrip()).await;
    hub.stop().await;
}

#[tokio::test]
async fn an_idle_client_that_answers_pings_is_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let (idle, _) = Ws::register(&hub.url, "Idle").await;
    let mut read = read_in_background(idle);
    tokio::time::pause();
    // Nothing but reading (which answers the hub's pings) for five heartbeat intervals: a
    // ping each interval, no close, no error.
    pass(5 * BEAT + Duration::from_secs(1)).await;
    for beat in 1..=5 {
        let got = next_read(&mut read).await;
        assert!(
            matches!(got, Some(Message::Ping(_))),
            "heartbeat {beat}: {got:?}"
        );
    }
    // Still registered: the name is held by it.
    let refused = hold_clock(async {
        let mut t = Ws::connect(&hub.url).await;
        t.send(json!({"type": "register", "clientId": "Idle"}))
            .await;
        t.next().await
    })
    .await;
    assert_eq!(refused["type"], "register_rejected", "{refused}");
    assert_eq!(refused["code"], "name_in_use", "{refused}");
    hub.stop().await;
}

#[tokio::test]
async fn sigterm_closes_clients_cleanly_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path()).await;
    let (mut a, _) = Ws::register(&hub.url, "A").await;
    a.roundtrip().await;
    let status = tokio::join!(hub.terminate(), a.closed());
    assert!(status.0.success(), "hub exit status {:?}", status.0);
    let (code, reason) = status.1.expect("a close frame");
    assert_eq!(u16::from(code), 1001, "{reason}");
}

#[tokio::test]
async fn history_pages_forward_from_a_cursor_and_refuses_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let (mut a, _) = Ws::register(&hub.url, "A").await;
    for i in 0..7 {
        a.send(json!({"type": "message", "to": "B", "content": format!("m{i}")}))
            .await;
        a.expect("sent").await;
    }
    // Without `after`: the most recent `count`, oldest first.
    a.send(json!({"type": "get_history", "count": 3})).await;
    let h = a.expect("history").await;
    let texts = |h: &Value| -> Vec<String> {
        h["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(texts(&h), ["m4", "m5", "m6"]);

    // Following `cursor` from the start sees everything once, in order.
    let first_id = {
        a.send(json!({"type": "get_history", "count": 100})).await;
        a.expect("history").await["messages"][0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let epoch = first_id.rsplit_once('-').unwrap().0.to_string();
    let mut cursor = format!("{epoch}-0");
    let mut seen = vec![];
    loop {
        a.send(json!({"type": "get_history", "count": 3, "after": cursor}))
            .await;
        let h = a.expect("history").await;
        if h["messages"].as_array().unwrap().is_empty() {
            assert_eq!(h["cursor"], json!(cursor), "cursor stays put at the end");
            break;
        }
        seen.extend(texts(&h));
        cursor = h["cursor"].as_str().unwrap().to_string();
    }
    assert_eq!(seen, (0..7).map(|i| format!("m{i}")).collect::<Vec<_>>());

    for unknown in ["deadbeef-3", "garbage", "12345"] {
        a.send(json!({"type": "get_history", "after": unknown}))
            .await;
        let h = a.expect("history").await;
        assert_eq!(h["unknownCursor"], true, "{unknown}: {h}");
        assert_eq!(h["messages"], json!([]), "never a silent replay");
    }
    hub.stop().await;
}

/// Collects `presence` batches on `ws` until `want(joined, left)` holds.
async fn presence_until(
    ws: &mut Ws,
    mut want: impl FnMut(&[String], &[String]) -> bool,
) -> (Vec<String>, Vec<String>, usize) {
    let (mut joined, mut left, mut frames) = (Vec::new(), Vec::new(), 0);
    loop {
        let f = ws.next().await;
        assert_ne!(f["type"], "peer_joined", "delta clients get batches: {f}");
        assert_ne!(f["type"], "peer_left", "delta clients get batches: {f}");
        if f["type"] != "presence" {
            continue;
        }
        frames += 1;
        for (list, key) in [(&mut joined, "joined"), (&mut left, "left")] {
            list.extend(
                f[key]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string()),
            );
        }
        if want(&joined, &left) {
            return (joined, left, frames);
        }
    }
}

/// A delta client's `registered` lists only the first page of peers (by id) and how many
/// there are; the Node relay's clients (no `presence` field) still get the whole list; the
/// rest is one `get_sessions` away.
#[tokio::test]
async fn delta_clients_get_the_first_page_of_peers_and_old_clients_the_whole_list() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start_with(dir.path(), |c| c.delta_peers_page = 2).await;
    let mut others = Vec::new();
    for id in ["P3", "P1", "P2"] {
        others.push(Ws::register(&hub.url, id).await.0);
    }
    let mut delta = Ws::connect(&hub.url).await;
    delta
        .send(json!({"type": "register", "clientId": "D", "presence": "delta"}))
        .await;
    let reg = delta.expect("registered").await;
    assert_eq!(reg["peers"], json!(["P1", "P2"]), "{reg}");
    assert_eq!(reg["peersTotal"], 3, "{reg}");
    delta
        .send(json!({"type": "get_sessions", "limit": 10}))
        .await;
    let listed = delta.expect("sessions").await;
    assert_eq!(listed["sessions"]["P3"]["online"], true, "{listed}");

    let (_old, reg) = Ws::register(&hub.url, "N").await;
    assert_eq!(reg["peers"], json!(["D", "P1", "P2", "P3"]), "{reg}");
    assert!(reg.get("peersTotal").is_none(), "Node clients: {reg}");
    hub.stop().await;
}

/// A batch of more changes than one page names none of them: it says `resync` and how many
/// are online. After it — and after a `registered` that held only the first page — the client
/// is sent nothing until it reads the list again; then small batches name their changes.
#[tokio::test]
async fn a_batch_past_one_page_says_resync_and_nothing_follows_until_the_list_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start_with(dir.path(), |c| c.delta_peers_page = 2).await;
    // An old client: its held `peer_joined` frames go out in the same flush as the delta
    // batches, so once it has seen a join, any batch about it is queued for the others.
    let (mut witness, _) = Ws::register(&hub.url, "F").await;
    let mut delta = Ws::connect(&hub.url).await;
    delta
        .send(json!({"type": "register", "clientId": "D", "presence": "delta"}))
        .await;
    let reg = delta.expect("registered").await;
    assert_eq!(reg["peersTotal"], 1, "{reg}");

    // Ten joins at once (connected first, then all ten `register`s sent before any reply
    // is read): they land within milliseconds, so some batch holds more than the page of 2.
    let mut others = Ws::register_at_once(&hub.url, "P", 10).await;
    for ws in &mut others {
        ws.expect("registered").await;
    }
    let online = loop {
        let f = delta.next().await;
        if f["type"] != "presence" {
            continue;
        }
        let joined = f["joined"].as_array().unwrap().len();
        let left = f["left"].as_array().unwrap().len();
        if f["resync"] == true {
            assert_eq!((joined, left), (0, 0), "a resync names no one: {f}");
            break f["online"].as_u64().unwrap();
        }
        assert!(
            joined + left <= 2,
            "a named batch holds one page at most: {f}"
        );
        assert!(f.get("online").is_none(), "{f}");
    };
    assert!(
        (3..=12).contains(&online),
        "F, D and some of the ten: {online}"
    );

    // A delta client that registers past the first page is not sent batches either.
    let mut late = Ws::connect(&hub.url).await;
    late.send(json!({"type": "register", "clientId": "W", "presence": "delta"}))
        .await;
    let reg = late.expect("registered").await;
    assert_eq!(reg["peersTotal"], 12, "{reg}");
    others.push(Ws::register(&hub.url, "Z1").await.0);
    loop {
        let f = witness.next().await;
        if f["type"] == "peer_joined" && f["clientId"] == "Z1" {
            break;
        }
    }
    for (ws, who) in [(&mut delta, "D after its resync"), (&mut late, "W")] {
        ws.send(json!({"type": "ping", "rid": "p"})).await;
        let f = ws.next().await;
        assert_eq!(f["type"], "pong", "{who} was sent {f}");
    }

    // Reading the list turns the batches back on, for that client only.
    delta
        .send(json!({"type": "get_sessions", "limit": 20}))
        .await;
    let listed = delta.expect("sessions").await;
    for id in ["P0", "P9", "Z1", "W"] {
        assert_eq!(listed["sessions"][id]["online"], true, "{id}: {listed}");
    }
    others.push(Ws::register(&hub.url, "Z2").await.0);
    let (joined, _, _) = presence_until(&mut delta, |j, _| j.iter().any(|x| x == "Z2")).await;
    assert_eq!(joined, ["Z2"]);
    late.send(json!({"type": "ping", "rid": "p"})).await;
    let f = late.next().await;
    assert_eq!(
        f["type"], "pong",
        "W, which never read the list, was sent {f}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn delta_clients_get_batched_presence_and_none_clients_get_none() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let mut delta = Ws::connect(&hub.url).await;
    delta
        .send(json!({"type": "register", "clientId": "D", "presence": "delta"}))
        .await;
    delta.expect("registered").await;
    let mut quiet = Ws::connect(&hub.url).await;
    quiet
        .send(json!({"type": "register", "clientId": "Q", "presence": "none"}))
        .await;
    quiet.expect("registered").await;

    // A burst of joins arrives as a few batched frames, not one frame per join.
    let mut others = Vec::new();
    for i in 0..20 {
        others.push(Ws::register(&hub.url, &format!("P{i}")).await.0);
    }
    let (_, _, frames) = presence_until(&mut delta, |j, _| {
        (0..20).all(|i| j.iter().any(|x| *x == format!("P{i}")))
    })
    .await;
    // 20 joins in a few milliseconds: batches four times a second make one or two frames.
    assert!(frames < 20, "{frames} presence frames for 20 joins");
    drop(others);
    let (_, left, _) = presence_until(&mut delta, |_, l| l.len() >= 20).await;
    assert_eq!(left.len(), 20, "{left:?}");

    // The batch has gone out (D saw it), so anything for Q would be queued before its pong.
    quiet.send(json!({"type": "ping", "rid": "q"})).await;
    let f = quiet.next().await;
    assert_eq!(f["type"], "pong", "a presence: none client got {f}");
    hub.stop().await;
}

/// With a store queue of one request, most messages of a burst find it full: each waits for
/// room (the reader's slow path) instead of being refused or lost, and all are stored,
/// acked and delivered in the order they were sent.
#[tokio::test]
async fn a_burst_into_a_full_store_queue_waits_for_room_and_keeps_its_order() {
    const N: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start_with(dir.path(), |c| c.store_queue = 1).await;
    let (mut b, _) = Ws::register(&hub.url, "B").await;
    let (mut a, _) = Ws::register(&hub.url, "A").await;
    for i in 0..N {
        let m = json!({"type": "message", "to": "B", "content": format!("m{i}"), "rid": i});
        a.send(m).await;
    }
    for i in 0..N {
        let sent = a.until("sent").await;
        assert_eq!(sent["rid"], i, "{sent}");
        assert_eq!(sent["delivered"], true, "{sent}");
    }
    for i in 0..N {
        let got = b.until("message").await;
        assert_eq!(got["content"], format!("m{i}"), "{got}");
    }
    hub.stop().await;
}

/// A client that closes gets the hub's close frame back (RFC 6455 §5.5.1), not a bare TCP
/// close: its WebSocket library then reports a clean close, not an abnormal one.
#[tokio::test]
async fn a_client_that_closes_gets_a_close_frame_back() {
    let dir = tempfile::tempdir().unwrap();
    let hub = InProcHub::start(dir.path()).await;
    let (mut ws, _) = Ws::register(&hub.url, "Closer").await;
    let bye = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    ws.ws.close(Some(bye)).await.unwrap();
    // The hub answers with the client's code; a reset without it reads as `None`.
    let answer = ws.closed().await;
    assert_eq!(answer.map(|(code, _)| code), Some(CloseCode::Normal));
    hub.stop().await;
}
