//! A raw WebSocket client for protocol tests: speaks JSON frames exactly as a Node relay
//! client would, and waits for frames with a timeout (never a fixed sleep).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{
        Message, client::IntoClientRequest, handshake::client::Request, http::HeaderValue,
        protocol::frame::coding::CloseCode,
    },
};

/// An upgrade request for `url` carrying `token` as `Authorization: Bearer`.
pub(crate) fn bearer_request(url: &str, token: &str) -> Request {
    request_with(url, &[("authorization", &format!("Bearer {token}"))])
}

/// An upgrade request for `url` with `headers` set (replacing `Host`, say).
pub(crate) fn request_with(url: &str, headers: &[(&'static str, &str)]) -> Request {
    let mut req = url.into_client_request().expect("a ws:// URL");
    for (k, v) in headers {
        req.headers_mut()
            .insert(*k, HeaderValue::from_str(v).expect("a header-safe value"));
    }
    req
}

use super::hub::WAIT;

/// One raw connection to the hub.
pub(crate) struct Ws {
    /// The socket.
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    /// Connects to `url`.
    pub(crate) async fn connect(url: &str) -> Ws {
        let (ws, _) = tokio::time::timeout(WAIT, connect_async(url))
            .await
            .expect("connect timed out")
            .expect("connect to hub");
        Ws { ws }
    }

    /// Connects with the upgrade request `req`.
    pub(crate) async fn connect_request(req: Request) -> Ws {
        let (ws, _) = tokio::time::timeout(WAIT, connect_async(req))
            .await
            .expect("connect timed out")
            .expect("connect to hub");
        Ws { ws }
    }

    /// Connects and registers as `id`, returning the `registered` frame.
    pub(crate) async fn register(url: &str, id: &str) -> (Ws, Value) {
        let mut ws = Ws::connect(url).await;
        ws.send(json!({"type": "register", "clientId": id})).await;
        let reg = ws.expect("registered").await;
        (ws, reg)
    }

    /// Opens `n` connections, then sends each its `register` (as `{prefix}{i}`) before any
    /// reply is read, so the registrations reach the hub within milliseconds of each other.
    /// The replies are left for the caller.
    pub(crate) async fn register_at_once(url: &str, prefix: &str, n: usize) -> Vec<Ws> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(Ws::connect(url).await);
        }
        for (i, ws) in conns.iter_mut().enumerate() {
            ws.send(json!({"type": "register", "clientId": format!("{prefix}{i}")}))
                .await;
        }
        conns
    }

    /// Sends one JSON frame.
    pub(crate) async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send frame");
    }

    /// Sends raw text as one frame.
    pub(crate) async fn send_text(&mut self, s: impl Into<String>) {
        self.ws
            .send(Message::text(s.into()))
            .await
            .expect("send text");
    }

    /// The next JSON text frame (skipping control frames), or None if the connection closed.
    pub(crate) async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("no frame within {wait:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Some(serde_json::from_str(&t).expect("hub sent JSON"));
                }
                Ok(Some(Ok(Message::Close(_)))) => return None,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// The next JSON frame; panics if the connection closed.
    pub(crate) async fn next(&mut self) -> Value {
        self.next_within(WAIT).await.expect("connection closed")
    }

    /// The next frame, which must have `type` == `ty`.
    pub(crate) async fn expect(&mut self, ty: &str) -> Value {
        let f = self.next().await;
        assert_eq!(f["type"], ty, "expected a {ty} frame, got {f}");
        f
    }

    /// Skips frames until one of type `ty` arrives.
    pub(crate) async fn until(&mut self, ty: &str) -> Value {
        loop {
            let f = self.next().await;
            if f["type"] == ty {
                return f;
            }
        }
    }

    /// Asserts that no frame arrives within `wait` (used only after a round trip on another
    /// connection has proven the hub already processed what could have produced one).
    pub(crate) async fn assert_quiet(&mut self, wait: Duration) {
        if let Ok(Some(Ok(m))) = tokio::time::timeout(wait, self.ws.next()).await {
            panic!("expected silence, got {m:?}");
        }
    }

    /// Waits for the hub to close the connection; returns the close code and reason.
    pub(crate) async fn closed(&mut self) -> Option<(CloseCode, String)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("connection not closed within {WAIT:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(c)))) => {
                    return c.map(|c| (c.code, c.reason.to_string()));
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Ping/pong round trip: proves the connection is open and every earlier frame of this
    /// connection was processed.
    pub(crate) async fn roundtrip(&mut self) {
        self.send(json!({"type": "ping", "rid": "rt"})).await;
        loop {
            let f = self.next().await;
            if f["type"] == "pong" && f["rid"] == "rt" {
                return;
            }
        }
    }
}
