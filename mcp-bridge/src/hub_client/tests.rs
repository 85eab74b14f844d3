//! The hub client against a scripted fake hub (a real WebSocket server in the test), for the
//! cases a real hub will not produce on demand: replies out of order, a connection dropped
//! mid-request, a hub that goes silent (half-open), names in use, store resets, pushes.
//! The real hub is exercised by the root package's `bridge_*` tests.

use std::time::Duration;

use super::{HubClient, LinkState, RequestError};
use crate::config::{BridgeConfig, Identity, IdentitySource, Timeouts, ToolProfile};
use futures_util::{SinkExt, StreamExt};
use relay_proto::wire::{ClientFrame, ServerFrame};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

const WAIT: Duration = Duration::from_secs(10);

struct FakeHub {
    listener: TcpListener,
    url: String,
}

type Sock = WebSocketStream<TcpStream>;

impl FakeHub {
    async fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        Self { listener, url }
    }

    /// The next connection that completes the WebSocket handshake (a redial the client
    /// already gave up on may sit dead in the listen backlog; it is skipped).
    async fn accept(&self) -> Sock {
        tokio::time::timeout(WAIT, async {
            loop {
                let (tcp, _) = self.listener.accept().await.unwrap();
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    return ws;
                }
            }
        })
        .await
        .expect("the client dials")
    }

    /// Accepts and answers `register` with `registered` (epoch, unread).
    async fn accept_registered(&self, epoch: &str, unread: u64) -> Sock {
        loop {
            let mut ws = self.accept().await;
            let Some(reg) = try_read(&mut ws).await else {
                continue; // that client was gone; wait for the live redial
            };
            assert_eq!(reg["type"], "register", "{reg}");
            assert_eq!(reg["meta"]["source"], "mcp-bridge", "{reg}");
            send(
                &mut ws,
                json!({"type": "registered", "clientId": reg["clientId"], "peers": [],
                       "epoch": epoch, "unread": unread, "rid": reg["rid"]}),
            )
            .await;
            return ws;
        }
    }
}

/// The next text frame that is not a keep-alive `ping`; `None` when the socket closes.
async fn try_read(ws: &mut Sock) -> Option<Value> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")?
            .ok()?;
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] != "ping" || v.get("rid").is_some() {
                return Some(v);
            }
        }
    }
}

/// The next text frame that is not the client's keep-alive `ping`.
async fn read(ws: &mut Sock) -> Value {
    try_read(ws).await.expect("socket open")
}

async fn send(ws: &mut Sock, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

fn config(url: &str, id: &str, base: Option<&str>, timeouts: Timeouts) -> BridgeConfig {
    BridgeConfig {
        identity: Identity {
            id: id.into(),
            source: IdentitySource {
                label: "test".into(),
                auto_number_base: base.map(str::to_string),
                transient: false,
            },
        },
        relay_url: url.into(),
        timeouts,
        profile: ToolProfile::Full,
        claude_session_id: None,
        security: Default::default(),
        outbox: false,
    }
}

fn client(url: &str, id: &str, base: Option<&str>, timeouts: Timeouts) -> HubClient {
    let cfg = config(url, id, base, timeouts);
    let meta = crate::meta::register_meta(&cfg, 0);
    HubClient::new(&cfg, meta)
}

fn fast() -> Timeouts {
    Timeouts {
        backoff_start: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(100),
        ..Timeouts::default()
    }
}

async fn wait_state(c: &HubClient, what: &str, f: impl Fn(&LinkState) -> bool) -> LinkState {
    let mut rx = c.watch_state();
    let r = tokio::time::timeout(WAIT, rx.wait_for(|s| f(s)))
        .await
        .unwrap_or_else(|_| panic!("state never became {what}; now {:?}", c.snapshot()));
    r.unwrap().clone()
}

fn connected(s: &LinkState) -> bool {
    matches!(s, LinkState::Connected { .. })
}

#[tokio::test]
async fn replies_are_matched_by_rid_even_out_of_order() {
    let hub = FakeHub::new().await;
    let c = client(&hub.url, "CC-1", None, fast());
    c.start();
    let mut ws = hub.accept_registered("E1", 0).await;
    wait_state(&c, "connected", connected).await;

    let (c1, c2) = (c.clone(), c.clone());
    let status =
        tokio::spawn(async move { c1.request(ClientFrame::GetStatus(Default::default())).await });
    let peers =
        tokio::spawn(async move { c2.request(ClientFrame::GetPeers(Default::default())).await });
    let a = read(&mut ws).await;
    let b = read(&mut ws).await;
    let (st, pe) = if a["type"] == "get_status" {
        (a, b)
    } else {
        (b, a)
    };
    // Answer the later question first.
    send(
        &mut ws,
        json!({"type": "peers", "peers": ["CC-1"], "self": "CC-1", "rid": pe["rid"]}),
    )
    .await;
    send(&mut ws, json!({"type": "status", "self": "CC-1", "unread": 4, "epoch": "E1", "sends": [], "rid": st["rid"]})).await;
    assert!(matches!(status.await.unwrap(), Ok(ServerFrame::Status(s)) if s.unread == 4));
    assert!(matches!(peers.await.unwrap(), Ok(ServerFrame::Peers(p)) if p.peers == ["CC-1"]));
}

#[tokio::test]
async fn a_dropped_connection_fails_pending_requests_at_once() {
    let hub = FakeHub::new().await;
    // A long request timeout: only the drop can end the request early.
    let timeouts = Timeouts {
        request: Duration::from_secs(60),
        ..fast()
    };
    let c = client(&hub.url, "CC-1", None, timeouts);
    c.start();
    let mut ws = hub.accept_registered("E1", 0).await;
    wait_state(&c, "connected", connected).await;
    let c1 = c.clone();
    let pending = tokio::spawn(async move {
        c1.request(ClientFrame::Message(relay_proto::wire::SendMessage {
            to: Some("CC-2".into()),
            content: "x".into(),
            ..Default::default()
        }))
        .await
    });
    let frame = read(&mut ws).await;
    assert_eq!(frame["type"], "message");
    assert!(frame["key"].is_null(), "the client sends what it is given");
    drop(ws);
    let r = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    match r {
        Err(e @ RequestError::Lost { written: true }) => assert!(e.maybe_delivered()),
        other => panic!("expected Lost{{written: true}}, got {other:?}"),
    }
    // And the client dials again by itself.
    let _ws = hub.accept_registered("E1", 0).await;
    wait_state(&c, "connected again", connected).await;
}

#[tokio::test]
async fn a_silent_hub_is_detected_as_half_open_and_redialled() {
    let hub = FakeHub::new().await;
    let timeouts = Timeouts {
        ping_interval: Duration::from_millis(100),
        idle: Duration::from_millis(400),
        ..fast()
    };
    let c = client(&hub.url, "CC-1", None, timeouts);
    c.start();
    // Registers, then never sends another frame (and never reads).
    let _silent = hub.accept_registered("E1", 0).await;
    wait_state(&c, "connected", connected).await;
    let waiting = wait_state(&c, "waiting", |s| matches!(s, LinkState::Waiting { .. })).await;
    let LinkState::Waiting { last_error, .. } = waiting else {
        unreachable!()
    };
    assert!(
        last_error.contains("no traffic from the hub"),
        "{last_error}"
    );
    let _again = hub.accept_registered("E1", 0).await;
    wait_state(&c, "connected again", connected).await;
}

#[tokio::test]
async fn keep_alive_pings_flow_while_idle() {
    let hub = FakeHub::new().await;
    let timeouts = Timeouts {
        ping_interval: Duration::from_millis(50),
        ..fast()
    };
    let c = client(&hub.url, "CC-1", None, timeouts);
    c.start();
    let mut ws = hub.accept_registered("E1", 0).await;
    let msg = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
    assert_eq!(v["type"], "ping");
}

#[tokio::test]
async fn an_auto_numbered_id_moves_on_when_the_name_is_in_use() {
    let hub = FakeHub::new().await;
    let c = client(&hub.url, "CODEX", Some("CODEX"), fast());
    c.start();
    let mut ws = hub.accept().await;
    let reg = read(&mut ws).await;
    assert_eq!(reg["clientId"], "CODEX");
    send(
        &mut ws,
        json!({"type": "register_rejected", "clientId": "CODEX", "reason": "held",
                         "code": "name_in_use", "rid": reg["rid"]}),
    )
    .await;
    let reg = read(&mut ws).await;
    assert_eq!(reg["clientId"], "CODEX2", "retries on the same connection");
    send(
        &mut ws,
        json!({"type": "registered", "clientId": "CODEX2", "peers": [], "rid": reg["rid"]}),
    )
    .await;
    wait_state(&c, "connected", connected).await;
    assert_eq!(c.id(), "CODEX2");
    assert_eq!(c.granted(), Some("CODEX2".to_string()));
}

#[tokio::test]
async fn a_fixed_name_in_use_is_reported_plainly_and_retried() {
    let hub = FakeHub::new().await;
    let c = client(&hub.url, "CC-1", None, fast());
    c.start();
    let mut ws = hub.accept().await;
    let reg = read(&mut ws).await;
    send(
        &mut ws,
        json!({"type": "register_rejected", "clientId": "CC-1", "reason": "held",
                         "code": "name_in_use", "rid": reg["rid"]}),
    )
    .await;
    wait_state(&c, "rejected", |s| {
        matches!(s, LinkState::Waiting { rejected: true, .. })
    })
    .await;
    let text = c.snapshot().not_connected_text();
    assert!(
        text.contains("the name CC-1 is held by another live connection"),
        "{text}"
    );
    assert!(text.contains("retrying in"), "{text}");
    let r = c.request(ClientFrame::GetPeers(Default::default())).await;
    assert!(
        matches!(r, Err(RequestError::NotConnected(ref t)) if t.contains("held by another")),
        "{r:?}"
    );
    // While the retry is in progress (the hub has not answered it yet) the refusal still
    // stands: it is not link trouble, so relay_send says NOT sent rather than queueing, and
    // the text still says why.
    wait_state(&c, "retrying", |s| {
        matches!(s, LinkState::Connecting { refused: true, .. })
    })
    .await;
    let snap = c.snapshot();
    assert!(!snap.link_trouble_only(), "{:?}", snap.state);
    let text = snap.not_connected_text();
    assert!(
        text.starts_with("not registered with the hub")
            && text.contains("held by another live connection")
            && text.contains("attempt 2 in progress"),
        "{text}"
    );
    // The holder left: the retry gets the name, still CC-1.
    let _ws = hub.accept_registered("E1", 0).await;
    wait_state(&c, "connected", connected).await;
    assert_eq!(c.id(), "CC-1");
}

#[tokio::test]
async fn a_rejected_claim_backs_off_instead_of_looping() {
    // The hub refuses every claim of an owned name (`not_owner`, as hub/src/dispatch.rs words
    // it); the client must wait between attempts, with a growing delay ceiling, and never
    // write an owner secret it was not given.
    let hub = FakeHub::new().await;
    let owners = tempfile::tempdir().unwrap();
    let mut cfg = config(
        &hub.url,
        "CC-1",
        None,
        Timeouts {
            backoff_start: Duration::from_millis(10),
            backoff_cap: Duration::from_secs(30),
            ..Timeouts::default()
        },
    );
    cfg.security.owners = Some(crate::owner::OwnerStore::new(owners.path()));
    let meta = crate::meta::register_meta(&cfg, 0);
    let client = HubClient::new(&cfg, meta);
    let mut rx = client.watch_state();
    client.start();
    let refuse = tokio::spawn(async move {
        loop {
            let mut ws = hub.accept().await;
            let reg = read(&mut ws).await;
            assert!(reg.get("ownerSecret").is_none(), "{reg}");
            send(
                &mut ws,
                json!({"type": "register_rejected", "clientId": "CC-1", "code": "not_owner",
                       "reason": "CC-1 is owned: claims must present its owner secret",
                       "rid": reg["rid"]}),
            )
            .await;
        }
    });
    // Each refusal is followed by a wait (Waiting, retry in the future) and the attempt count
    // keeps growing, so the delay ceiling doubles: 10 ms, 20, 40, … up to the cap.
    let mut waits = 0;
    let mut last_attempt = 0;
    tokio::time::timeout(WAIT, async {
        while waits < 4 {
            rx.changed().await.unwrap();
            let state = rx.borrow_and_update().clone();
            match state {
                LinkState::Waiting {
                    rejected,
                    last_error,
                    ..
                } => {
                    assert!(rejected, "{last_error}");
                    assert!(last_error.contains("CC-1 is owned"), "{last_error}");
                    waits += 1;
                }
                LinkState::Connecting { attempt, .. } => {
                    assert!(attempt >= last_attempt, "{attempt} after {last_attempt}");
                    last_attempt = attempt;
                }
                LinkState::Connected { .. } => panic!("an owned name was granted"),
                _ => {}
            }
        }
    })
    .await
    .expect("four refusals in time");
    assert!(last_attempt >= 4, "{last_attempt}");
    assert!(!owners.path().join("CC-1").exists());
    client.shutdown().await;
    refuse.abort();
}

#[tokio::test]
async fn pushes_reach_subscribers_and_a_new_epoch_leaves_a_notice() {
    let hub = FakeHub::new().await;
    let c = client(&hub.url, "CC-1", None, fast());
    let mut pushes = c.subscribe();
    c.start();
    let mut ws = hub.accept_registered("E1", 2).await;
    wait_state(&c, "connected", connected).await;
    // The two unread messages come first as backlog (already counted in `unread`), then a
    // live one.
    for (seq, content) in [(7, "old 1"), (8, "old 2"), (9, "hi")] {
        send(
            &mut ws,
            json!({"type": "message", "id": format!("E1-{seq}"), "from": "CC-2", "to": "CC-1",
                   "content": content, "timestamp": "2026-01-01T00:00:00.000Z", "seq": seq}),
        )
        .await;
    }
    let mut e = None;
    for _ in 0..3 {
        e = Some(
            tokio::time::timeout(WAIT, pushes.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let e = e.unwrap();
    assert_eq!((e.from.as_str(), e.content.as_str()), ("CC-2", "hi"));
    assert_eq!(c.snapshot().unread, Some(3), "backlog is not counted twice");
    assert_eq!(c.take_reset_notice(), None);

    // The hub comes back with a different store.
    drop(ws);
    let _ws = hub.accept_registered("E2", 0).await;
    wait_state(&c, "connected again", connected).await;
    let notice = c.take_reset_notice().expect("a reset notice");
    assert!(notice.contains("history was reset"), "{notice}");
    assert_eq!(c.take_reset_notice(), None, "said once");
}

#[tokio::test]
async fn an_unreachable_hub_is_reported_with_its_url_at_once() {
    // A port nobody listens on.
    let url = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("ws://{}", l.local_addr().unwrap())
    };
    let c = client(&url, "CC-1", None, fast());
    c.start();
    wait_state(&c, "waiting", |s| matches!(s, LinkState::Waiting { .. })).await;
    let r = c.request(ClientFrame::GetPeers(Default::default())).await;
    match r {
        Err(RequestError::NotConnected(t)) => {
            assert!(
                t.starts_with(&format!("not connected to the hub at {url}")),
                "{t}"
            );
            assert!(t.contains("last error:"), "{t}");
        }
        other => panic!("{other:?}"),
    }
}

fn relay(c: &HubClient) -> crate::actions::Relay {
    crate::actions::Relay::new(
        c.clone(),
        std::sync::Arc::new(|| Ok(Vec::new())),
        "test".into(),
    )
}

fn send_call(message: &str, to: &str) -> crate::tools::ToolCall {
    crate::tools::ToolCall::Send {
        message: message.into(),
        to: Some(to.into()),
        reply_to: None,
    }
}

#[tokio::test]
async fn a_send_whose_ack_was_lost_is_resent_with_the_same_key_and_reported_once() {
    let hub = FakeHub::new().await;
    let c = client(&hub.url, "CC-1", None, fast());
    c.start();
    let mut ws = hub.accept_registered("E1", 0).await;
    wait_state(&c, "connected", connected).await;
    let r = relay(&c);
    let call = tokio::spawn(async move { r.call(send_call("handoff", "CC-2")).await });

    let first = read(&mut ws).await;
    assert_eq!(first["type"], "message");
    let key = first["key"].as_str().expect("a key").to_string();
    drop(ws); // the ack is lost with the connection

    let mut ws = hub.accept_registered("E1", 0).await;
    let again = read(&mut ws).await;
    assert_eq!(again["key"], key.as_str(), "resent with the same key");
    assert_eq!(again["content"], "handoff");
    send(
        &mut ws,
        json!({"type": "sent", "id": "E1-1", "to": "CC-2", "delivered": false, "seq": 1,
                         "duplicate": true, "rid": again["rid"]}),
    )
    .await;
    let reply = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
    assert!(!reply.is_error, "{reply:?}");
    assert!(
        reply.text.starts_with("Stored for CC-2 (offline)"),
        "{}",
        reply.text
    );
    assert!(reply.text.contains("not stored twice"), "{}", reply.text);
}

// On a paused clock (everything here runs on this runtime: the fake hub, the client, no store
// thread), so the bridge's 5 s wait for a reconnect costs nothing.
#[tokio::test(start_paused = true)]
async fn an_unknown_outcome_is_said_plainly_and_the_retry_reuses_the_key() {
    let hub = FakeHub::new().await;
    let c = client(&hub.url, "CC-1", None, fast());
    c.start();
    let mut ws = hub.accept_registered("E1", 0).await;
    wait_state(&c, "connected", connected).await;
    let r = std::sync::Arc::new(relay(&c));
    let r1 = r.clone();
    let call = tokio::spawn(async move { r1.call(send_call("handoff", "CC-2")).await });
    let first = read(&mut ws).await;
    let key = first["key"].as_str().unwrap().to_string();
    // The ack is lost, and the hub does not take the bridge back in time (the redial waits in
    // the listen backlog until we accept).
    drop(ws);
    let reply = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .unwrap()
        .unwrap();
    assert!(reply.is_error, "{reply:?}");
    assert!(reply.text.starts_with("Outcome unknown"), "{}", reply.text);
    assert!(!reply.text.contains("NOT sent"), "{}", reply.text);

    // Still disconnected: a retry of the same message cannot claim "not sent" either…
    let retry = r.call(send_call("handoff", "CC-2")).await;
    assert!(retry.text.starts_with("Outcome unknown"), "{}", retry.text);
    // …while a different message plainly was not sent.
    let other = r.call(send_call("something else", "CC-2")).await;
    assert!(
        other.text.starts_with("NOT sent: not connected"),
        "{}",
        other.text
    );

    // Back online: the retry carries the first attempt's key.
    let mut ws = hub.accept_registered("E1", 0).await;
    wait_state(&c, "connected", connected).await;
    let r2 = r.clone();
    let call = tokio::spawn(async move { r2.call(send_call("handoff", "CC-2")).await });
    let again = read(&mut ws).await;
    assert_eq!(again["key"], key.as_str());
    send(
        &mut ws,
        json!({"type": "sent", "id": "E1-1", "to": "CC-2", "delivered": true, "seq": 1,
               "duplicate": true, "rid": again["rid"]}),
    )
    .await;
    let done = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
    assert!(
        done.text.starts_with("Delivered to CC-2 (live)"),
        "{}",
        done.text
    );
}

/// A link that registers and dies at once (a flapping tunnel) keeps backing off: the attempt
/// count grows across such connections instead of starting over; a connection that stayed up
/// for `healthy_after` starts it over.
#[tokio::test]
async fn backoff_starts_over_only_after_a_healthy_connection() {
    let hub = FakeHub::new().await;
    let timeouts = Timeouts {
        healthy_after: Duration::from_millis(300),
        ..fast()
    };
    let c = client(&hub.url, "CC-1", None, timeouts);
    let mut rx = c.watch_state();
    c.start();
    let attempt_after_drop = |rx: &mut tokio::sync::watch::Receiver<LinkState>| {
        let mut rx = rx.clone();
        async move {
            let s = tokio::time::timeout(
                WAIT,
                rx.wait_for(|s| {
                    matches!(
                        s,
                        LinkState::Connecting {
                            last_error: Some(_),
                            ..
                        }
                    )
                }),
            )
            .await
            .unwrap()
            .unwrap()
            .clone();
            let LinkState::Connecting { attempt, .. } = s else {
                unreachable!()
            };
            attempt
        }
    };
    let mut seen = Vec::new();
    for _ in 0..3 {
        let ws = hub.accept_registered("E1", 0).await;
        wait_state(&c, "connected", connected).await;
        rx.borrow_and_update();
        drop(ws); // dies at once
        seen.push(attempt_after_drop(&mut rx).await);
    }
    assert_eq!(seen, [2, 3, 4], "short-lived links keep backing off");
    // One that lives past healthy_after resets the sequence.
    let ws = hub.accept_registered("E1", 0).await;
    wait_state(&c, "connected", connected).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    rx.borrow_and_update();
    drop(ws);
    assert_eq!(
        attempt_after_drop(&mut rx).await,
        seen[0],
        "as after the very first connection"
    );
}
