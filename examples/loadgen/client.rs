//! Opening a client connection and registering a session, as any protocol client would.
//!
//! A registration refused for the hub's per-address rate (`register_rejected`, code
//! `rate_limited`, "retry in N ms") is retried after the wait the hub asked for, and the wait
//! is counted: the report must show when the hub's limits, not its speed, set the pace.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use relay_proto::wire::{Registered, ServerFrame, codes};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{Message, protocol::WebSocketConfig},
};

/// A client connection to the hub.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// How long one connect + register may take (rate-limit waits excluded).
pub(crate) const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Most rate-limit retries of one registration before giving up.
const MAX_RETRIES: u32 = 1000;

/// How presence changes should be pushed to a registering session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Presence {
    /// The whole peer list on every join/leave (old, Node-compatible clients).
    Full,
    /// Only the id that changed.
    Delta,
    /// No presence pushes (what the MCP bridge uses).
    None,
    /// No `presence` field at all: a client of the Node relay's protocol (the hub's default,
    /// `full`, with whatever else the hub does for clients that do not ask).
    Node,
}

impl Presence {
    /// The `presence` field of `register`, if any.
    fn field(self) -> &'static str {
        match self {
            Presence::Full => r#","presence":"full""#,
            Presence::Delta => r#","presence":"delta""#,
            Presence::None => r#","presence":"none""#,
            Presence::Node => "",
        }
    }
}

/// Counts of what registering cost besides the hub's own work.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RegisterStats {
    /// Registrations refused for rate and retried.
    pub rate_limited: u64,
    /// Total time spent waiting as the hub asked, ms.
    pub waited_ms: u64,
}

/// Where to connect: `ws://HOST:PORT[/…]` → `HOST:PORT`.
pub(crate) fn host_port(url: &str) -> anyhow::Result<&str> {
    let rest = url
        .strip_prefix("ws://")
        .with_context(|| format!("{url}: only ws:// URLs are supported"))?;
    Ok(rest.split('/').next().unwrap_or(rest))
}

/// Opens a WebSocket to `url`. `read_buffer` is tungstenite's read buffer: small for
/// thousands of idle sessions, larger for the traffic clients.
pub(crate) async fn connect(url: &str, read_buffer: usize) -> anyhow::Result<Ws> {
    let tcp = TcpStream::connect(host_port(url)?)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tcp.set_nodelay(true)?;
    // Frames queue in tungstenite's write buffer (allocated as used) until a flush, so a
    // writer that feeds several ready frames sends them in one write.
    let config = WebSocketConfig::default().read_buffer_size(read_buffer);
    let (ws, _) = client_async_with_config(url, tcp, Some(config))
        .await
        .with_context(|| format!("WebSocket handshake with {url}"))?;
    Ok(ws)
}

/// Parses the wait out of a rate-limit reason ("… retry in 12 ms").
pub(crate) fn retry_ms(reason: &str) -> Option<u64> {
    let at = reason.find("retry in ")? + "retry in ".len();
    let digits: String = reason[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Sends `register` for `id` and waits for `registered` (returned), retrying rate-limit
/// refusals. Any other refusal is an error.
pub(crate) async fn register(
    ws: &mut Ws,
    id: &str,
    presence: Presence,
    stats: &mut RegisterStats,
) -> anyhow::Result<Registered> {
    let frame = format!(
        r#"{{"type":"register","clientId":"{id}"{}}}"#,
        presence.field()
    );
    for _ in 0..MAX_RETRIES {
        ws.send(Message::text(frame.clone())).await?;
        let reply = tokio::time::timeout(REGISTER_TIMEOUT, async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => match serde_json::from_str::<ServerFrame>(&t) {
                        Ok(f @ (ServerFrame::Registered(_) | ServerFrame::RegisterRejected(_))) => {
                            return Ok(f);
                        }
                        // Presence pushes and the like may come first; they are not the reply.
                        _ => continue,
                    },
                    Some(Ok(Message::Close(c))) => bail!("hub closed the connection: {c:?}"),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.into()),
                    None => bail!("hub closed the connection"),
                }
            }
        })
        .await
        .with_context(|| format!("no reply to register {id}"))??;
        match reply {
            ServerFrame::Registered(r) => return Ok(r),
            ServerFrame::RegisterRejected(r) if r.code.as_deref() == Some(codes::RATE_LIMITED) => {
                let ms = retry_ms(&r.reason).unwrap_or(1).max(1);
                stats.rate_limited += 1;
                stats.waited_ms += ms;
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            ServerFrame::RegisterRejected(r) => bail!("register {id} rejected: {}", r.reason),
            _ => unreachable!("only replies leave the loop"),
        }
    }
    bail!("register {id}: still rate limited after {MAX_RETRIES} retries")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_wait_is_read_from_the_reason() {
        assert_eq!(
            retry_ms("too many registrations from your address (over 1000/s); retry in 12 ms"),
            Some(12)
        );
        assert_eq!(retry_ms("name in use"), None);
    }

    #[test]
    fn urls() {
        assert_eq!(host_port("ws://127.0.0.1:9999").unwrap(), "127.0.0.1:9999");
        assert_eq!(host_port("ws://localhost:1/x").unwrap(), "localhost:1");
        assert!(host_port("wss://h:1").is_err());
    }
}
