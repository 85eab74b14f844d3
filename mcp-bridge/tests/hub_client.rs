//! The hub client against a scripted fake hub (a real WebSocket server in the test), for the
//! cases a real hub will not produce on demand: replies out of order, a connection dropped
//! mid-request, a hub that goes silent (half-open), names in use, store resets, pushes.
//! The real hub is exercised by the root package's `bridge_*` tests.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mcp_bridge::{
    config::{BridgeConfig, Identity, IdentitySource, Timeouts, ToolProfile},
    hub_client::{HubClient, LinkState, RequestError},
};
use serde_json::{Value, json};
use sessions::wire::{ClientFrame, ServerFrame};
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

    async fn accept(&self) -> Sock {
        let (tcp, _) = tokio::time::timeout(WAIT, self.listener.accept())
            .await
            .expect("the client dials")
            .unwrap();
        tokio_tungstenite::accept_async(tcp).await.unwrap()
    }

    /// Accepts and answers `register` with `registered` (epoch, unread).
    async fn accept_registered(&self, epoch: &str, unread: u64) -> Sock {
        let mut ws = self.accept().await;
        let reg = read(&mut ws).await;
        assert_eq!(reg["type"], "register", "{reg}");
        assert_eq!(reg["meta"]["source"], "mcp-bridge", "{reg}");
        send(
            &mut ws,
            json!({"type": "registered", "clientId": reg["clientId"], "peers": [],
                   "epoch": epoch, "unread": unread, "rid": reg["rid"]}),
        )
        .await;
        ws
    }
}

/// The next text frame that is not the client's keep-alive `ping`.
async fn read(ws: &mut Sock) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] != "ping" || v.get("rid").is_some() {
                return v;
            }
        }
    }
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
            },
        },
        relay_url: url.into(),
        timeouts,
        profile: ToolProfile::Full,
        claude_session_id: None,
    }
}

fn client(url: &str, id: &str, base: Option<&str>, timeouts: Timeouts) -> HubClient {
    let cfg = config(url, id, base, timeouts);
    let meta = mcp_bridge::meta::register_meta(&cfg, 0);
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
        c1.request(ClientFrame::Message(sessions::wire::SendMessage {
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
    assert_eq!(*c.watch_registered().borrow(), Some("CODEX2".to_string()));
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
    // The holder left: the retry gets the name, still CC-1.
    let _ws = hub.accept_registered("E1", 0).await;
    wait_state(&c, "connected", connected).await;
    assert_eq!(c.id(), "CC-1");
}

#[tokio::test]
async fn pushes_reach_subscribers_and_a_new_epoch_leaves_a_notice() {
    let hub = FakeHub::new().await;
    let c = client(&hub.url, "CC-1", None, fast());
    let mut pushes = c.subscribe();
    c.start();
    let mut ws = hub.accept_registered("E1", 2).await;
    wait_state(&c, "connected", connected).await;
    send(
        &mut ws,
        json!({"type": "message", "id": "E1-9", "from": "CC-2", "to": "CC-1",
                         "content": "hi", "timestamp": "2026-01-01T00:00:00.000Z", "seq": 9}),
    )
    .await;
    let e = tokio::time::timeout(WAIT, pushes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((e.from.as_str(), e.content.as_str()), ("CC-2", "hi"));
    assert_eq!(c.snapshot().unread, Some(3));
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
