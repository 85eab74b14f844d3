//! The operator's HTTP client: one request to the hub's HTTP API on its own port
//! (`ws://host:port` → `http://host:port`, `wss://` → `https://`), as the operator — the hub
//! token in an `Authorization: Bearer` header, or, on a hub without one, a loopback request
//! that proves it is no web page with the hub's own `Origin` and the CSRF token the hub
//! hands its loopback operator (docs/SECURITY.md, "The operator").
//!
//! This is how `claude-relay approvals` answers a prompt: over the operator's HTTP endpoint,
//! never over the WebSocket protocol a bridge speaks (docs/SECURITY.md, "Approvals").
//! hyper writes and reads the HTTP; rustls does TLS with the same trust as `wss://`.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, body::Incoming};
use hyper_util::rt::TokioIo;
use mcp_bridge::dial::ClientAuth;
use tokio::net::TcpStream;

/// Longest time for connecting and for a whole (non-streaming) answer.
pub(super) const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_BODY: usize = 4 << 20;

/// Where and how to reach the hub's HTTP API.
pub(super) struct Operator {
    /// `http://host:port` or `https://host:port`.
    pub origin: String,
    host: String,
    port: u16,
    tls: bool,
    auth: ClientAuth,
    token: Option<String>,
}

/// An answer.
pub(super) struct Answer {
    /// The status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

impl Operator {
    /// The hub at `relay_url` (`ws://` or `wss://`), presenting `auth`.
    pub(super) fn new(relay_url: &str, auth: ClientAuth) -> anyhow::Result<Self> {
        let (tls, rest) = if let Some(r) = relay_url.strip_prefix("wss://") {
            (true, r)
        } else if let Some(r) = relay_url.strip_prefix("ws://") {
            (false, r)
        } else {
            anyhow::bail!("{relay_url}: the hub's URL must start with ws:// or wss://");
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h.to_string(), p.parse().context("the hub URL's port")?)
            }
            _ => (authority.to_string(), if tls { 443 } else { 80 }),
        };
        let token = match &auth.token {
            mcp_bridge::dial::TokenSource::None => None,
            mcp_bridge::dial::TokenSource::Value(t) => Some(t.expose().to_string()),
            mcp_bridge::dial::TokenSource::File(p) => Some(
                relay_proto::token::read_token_file(p)
                    .with_context(|| format!("reading the hub token from {}", p.display()))?
                    .expose()
                    .to_string(),
            ),
        };
        Ok(Self {
            origin: format!("{}://{authority}", if tls { "https" } else { "http" }),
            host,
            port,
            tls,
            auth,
            token,
        })
    }

    /// Whether requests carry the hub token.
    pub(super) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Sends one request and returns the answer's head and body stream.
    pub(super) async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> anyhow::Result<hyper::Response<Incoming>> {
        let addr = (
            self.host.trim_start_matches('[').trim_end_matches(']'),
            self.port,
        );
        let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow::anyhow!("the hub at {} did not answer in time", self.origin))?
            .with_context(|| format!("cannot reach the hub at {}", self.origin))?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(
                hyper::header::HOST,
                self.origin.split("://").nth(1).unwrap_or(""),
            )
            .header("x-relay-client", "cli");
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = if self.tls {
            let config = mcp_bridge::dial::tls_client_config(self.auth.ca_cert.as_deref())?;
            let name = rustls::pki_types::ServerName::try_from(
                self.host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
            )
            .context("the hub's host name")?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS with {}", self.origin))?;
            exchange(TokioIo::new(stream), req).await?
        } else {
            exchange(TokioIo::new(tcp), req).await?
        };
        Ok(resp)
    }

    /// Sends one request and reads the whole answer (bounded).
    pub(super) async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> anyhow::Result<Answer> {
        let resp = self.send(method, path, headers, body).await?;
        let status = resp.status().as_u16();
        let bytes =
            tokio::time::timeout(TIMEOUT, Limited::new(resp.into_body(), MAX_BODY).collect())
                .await
                .map_err(|_| anyhow::anyhow!("the hub's answer did not arrive in time"))?
                .map_err(|e| anyhow::anyhow!("reading the hub's answer: {e}"))?
                .to_bytes();
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}

/// One HTTP/1 exchange on `io` (the connection task ends with the answer's body).
async fn exchange<T>(
    io: TokioIo<T>,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<hyper::Response<Incoming>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .context("HTTP handshake with the hub")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tokio::time::timeout(TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| anyhow::anyhow!("the hub did not answer in time"))?
        .context("HTTP request to the hub")
}
