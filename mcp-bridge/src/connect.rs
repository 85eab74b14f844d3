//! Opening a WebSocket to the hub, and one-shot request/reply for short-lived commands
//! (`claude-relay sessions`, `claude-relay wait`) that need no reconnecting client.
//!
//! Every client connection we make goes through [`connect`], so the URL rules, timeouts and
//! (later) TLS and token handling live in one place.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sessions::wire::{ClientFrame, ServerFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async_with_config,
    tungstenite::{Message, protocol::WebSocketConfig},
};

/// A client WebSocket to the hub.
pub type HubSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The largest frame a client accepts from the hub (history pages are capped far below).
pub const CLIENT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Why talking to the hub failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not a `ws://` or `wss://` URL.
    #[error("invalid hub URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TCP connect or WebSocket handshake failed (hub down, wrong port, refused).
    #[error("hub unreachable at {url}: {source}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// The underlying error.
        #[source]
        source: tokio_tungstenite::tungstenite::Error,
    },
    /// No answer in time.
    #[error("hub at {0} did not answer within {1:?}")]
    Timeout(String, Duration),
    /// The connection closed before the reply arrived.
    #[error("hub closed the connection before replying")]
    Closed,
    /// The hub sent something that is not a protocol frame.
    #[error("hub sent an unreadable frame: {0}")]
    BadFrame(String),
    /// Writing to the socket failed.
    #[error("hub connection failed: {0}")]
    Io(#[from] tokio_tungstenite::tungstenite::Error),
}

/// Checks that `url` is a `ws://` or `wss://` URL.
pub fn check_url(url: &str) -> Result<(), ConnectError> {
    if url.starts_with("ws://") || url.starts_with("wss://") {
        Ok(())
    } else {
        Err(ConnectError::BadUrl {
            url: url.to_string(),
            reason: "it must start with ws:// or wss://".into(),
        })
    }
}

/// Opens a WebSocket to the hub at `url`, giving up after `timeout`.
pub async fn connect(url: &str, timeout: Duration) -> Result<HubSocket, ConnectError> {
    check_url(url)?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(CLIENT_MAX_FRAME))
        .max_frame_size(Some(CLIENT_MAX_FRAME));
    match tokio::time::timeout(timeout, connect_async_with_config(url, Some(config), true)).await {
        Err(_) => Err(ConnectError::Timeout(url.to_string(), timeout)),
        Ok(Err(source)) => Err(ConnectError::Unreachable {
            url: url.to_string(),
            source,
        }),
        Ok(Ok((ws, _response))) => Ok(ws),
    }
}

/// Sends `frame` on `ws` as one text frame.
pub async fn send_frame(ws: &mut HubSocket, frame: &ClientFrame) -> Result<(), ConnectError> {
    let text = serde_json::to_string(frame).expect("client frames always serialize");
    ws.send(Message::text(text)).await?;
    Ok(())
}

/// Reads frames until one satisfies `pick`, skipping pushes (presence, messages) it rejects.
pub async fn read_until<T>(
    ws: &mut HubSocket,
    timeout: Duration,
    mut pick: impl FnMut(ServerFrame) -> Option<T>,
) -> Result<T, ConnectError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| ConnectError::Timeout("hub".into(), timeout))?;
        match next {
            None => return Err(ConnectError::Closed),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(text))) => {
                let frame: ServerFrame = serde_json::from_str(&text).map_err(|e| {
                    ConnectError::BadFrame(format!("{e}: {}", truncate(&text, 200)))
                })?;
                if let Some(v) = pick(frame) {
                    return Ok(v);
                }
            }
            Some(Ok(Message::Close(_))) => return Err(ConnectError::Closed),
            Some(Ok(_)) => {}
        }
    }
}

/// Connects, sends one frame, returns the first reply that is not a push
/// (`message`, `peer_joined`, `peer_left`), and closes the connection.
pub async fn request_once(
    url: &str,
    frame: &ClientFrame,
    timeout: Duration,
) -> Result<ServerFrame, ConnectError> {
    let mut ws = connect(url, timeout).await?;
    send_frame(&mut ws, frame).await?;
    let reply = read_until(&mut ws, timeout, |f| match f {
        ServerFrame::Message(_) | ServerFrame::PeerJoined(_) | ServerFrame::PeerLeft(_) => None,
        other => Some(other),
    })
    .await;
    let _ = ws.close(None).await;
    reply
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
