//! One `ping` round trip to the hub, for the commands that only need to know whether the hub
//! answers and which version it runs (`doctor`, `service status`), and the wording of why it
//! did not. The connection goes through `mcp_bridge::dial` like every other client, so the
//! token (never shown) and the CA are handled in one place.

use std::time::Duration;

use anyhow::Context as _;
use mcp_bridge::dial::{ClientAuth, ConnectError, request_once};
use relay_proto::wire::{Bare, ClientFrame, ServerFrame, codes};

/// How long the hub may take to accept the connection, and then to answer.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// What one `ping` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ping {
    /// The hub answered. `version` is `None` for hubs that do not report one (the Node
    /// relay, older builds).
    Answered { version: Option<String> },
    /// The hub wants a token and did not get a good one (or the token file is unusable).
    Token(String),
    /// The TLS handshake failed (wrong CA, a certificate for another name, ws vs wss).
    Tls(String),
    /// Nothing answered at that address, or not in time.
    Unreachable(String),
    /// Anything else: a bad URL, an unexpected answer.
    Other(String),
}

/// Pings the hub at `url`, presenting `auth`, on a small runtime of its own.
pub(crate) fn ping(url: &str, auth: &ClientAuth) -> anyhow::Result<Ping> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let frame = ClientFrame::Ping(Bare::default());
    let reply = rt.block_on(request_once(url, auth, &frame, PING_TIMEOUT));
    Ok(match reply {
        Ok(ServerFrame::Pong(p)) => Ping::Answered { version: p.version },
        Ok(ServerFrame::Error(e)) if e.code.as_deref() == Some(codes::UNAUTHORIZED) => {
            Ping::Token(format!(
                "the hub at {url} requires a token and {} ({})",
                auth.token_origin(),
                e.message
            ))
        }
        Ok(ServerFrame::Error(e)) => Ping::Other(format!(
            "the hub at {url} answered ping with an error: {}",
            e.message
        )),
        Ok(other) => Ping::Other(format!(
            "the hub at {url} answered ping with an unexpected frame: {other:?}"
        )),
        Err(e @ (ConnectError::Token { .. } | ConnectError::Refused { status: 401, .. })) => {
            Ping::Token(e.to_string())
        }
        Err(e @ (ConnectError::Tls { .. } | ConnectError::CaCert { .. })) => {
            Ping::Tls(e.to_string())
        }
        Err(e @ (ConnectError::Unreachable { .. } | ConnectError::Timeout(..))) => {
            Ping::Unreachable(describe_connect_error(url, &e))
        }
        Err(e) => Ping::Other(e.to_string()),
    })
}

/// One line saying why the hub could not be asked.
pub(crate) fn describe_connect_error(url: &str, e: &ConnectError) -> String {
    match e {
        ConnectError::Unreachable { source, hint, .. } => {
            format!("the hub at {url} is unreachable ({source}){hint}")
        }
        ConnectError::Timeout(_, t) => format!("the hub at {url} did not answer within {t:?}"),
        other => other.to_string(),
    }
}
