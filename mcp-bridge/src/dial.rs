//! Opening a WebSocket to the hub, and one-shot request/reply for short-lived commands
//! (`claude-relay sessions`, `claude-relay wait`) that need no reconnecting client.
//!
//! Every client connection we make goes through [`connect_with`], so the URL rules,
//! timeouts, the hub token and TLS live in one place:
//! - **Token**: sent as `Authorization: Bearer …` on the WebSocket upgrade, so every frame
//!   (even `get_sessions` before `register`) is authorized. Where it comes from:
//!   `--token-file` (commands that have the flag), else `RELAY_TOKEN`, else the file named by
//!   `RELAY_TOKEN_FILE` (first line, trimmed). A file is read at each connect, so a rotated
//!   token is picked up by the next reconnect. The token is never logged or shown.
//! - **`wss://`**: rustls with the `ring` provider. With `--ca-cert` / `RELAY_CA_CERT` the
//!   client trusts exactly that CA (a private CA for the hub's certificate); otherwise the
//!   system's root certificates. TLS failures say what to check.
//!
//! Errors are worded for the person (or model) who has to fix them: a refused token, a
//! certificate that does not name the host, a CA that did not sign it.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use relay_proto::{
    token::HubToken,
    wire::{ClientFrame, ServerFrame},
};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    Connector, MaybeTlsStream, WebSocketStream, connect_async_tls_with_config,
    tungstenite::{
        Error as WsError, Message,
        client::IntoClientRequest,
        error::{TlsError, UrlError},
        http::{HeaderValue, header::AUTHORIZATION},
        protocol::WebSocketConfig,
    },
};

/// A client WebSocket to the hub.
pub type HubSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The largest frame a client accepts from the hub (history pages are capped far below).
pub(crate) const CLIENT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Environment variable holding the hub token itself.
pub(crate) const RELAY_TOKEN_ENV: &str = "RELAY_TOKEN";
/// Environment variable naming a file whose first line is the hub token.
pub(crate) const RELAY_TOKEN_FILE_ENV: &str = "RELAY_TOKEN_FILE";
/// Environment variable naming a PEM file of the CA that signed the hub's certificate.
pub(crate) const RELAY_CA_CERT_ENV: &str = "RELAY_CA_CERT";

/// Where the hub token comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TokenSource {
    /// No token (an open hub on loopback).
    #[default]
    None,
    /// The token itself (`RELAY_TOKEN`).
    Value(HubToken),
    /// A file whose first line is the token (`--token-file`, `RELAY_TOKEN_FILE`); read at
    /// every connect.
    File(PathBuf),
}

/// How a client authenticates to the hub and checks the hub's certificate. Cheap to clone;
/// holds no open files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientAuth {
    /// The hub token's source.
    pub token: TokenSource,
    /// A PEM file with the CA certificate(s) to trust for `wss://` instead of the system
    /// roots.
    pub ca_cert: Option<PathBuf>,
}

impl ClientAuth {
    /// Resolves the settings: the token from `token_file` (a command-line flag), else
    /// `RELAY_TOKEN`, else `RELAY_TOKEN_FILE`; the CA from `ca_cert`, else `RELAY_CA_CERT`.
    /// Empty values count as unset. Files are not read here (see [`connect_with`]).
    pub fn resolve(
        token_file: Option<&Path>,
        ca_cert: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let env_nonempty = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let token = if let Some(f) = token_file {
            TokenSource::File(f.to_path_buf())
        } else if let Some(t) = env_nonempty(RELAY_TOKEN_ENV)
            .as_deref()
            .and_then(HubToken::new)
        {
            TokenSource::Value(t)
        } else if let Some(f) = env_nonempty(RELAY_TOKEN_FILE_ENV) {
            TokenSource::File(PathBuf::from(f.trim()))
        } else {
            TokenSource::None
        };
        let ca_cert = ca_cert
            .map(Path::to_path_buf)
            .or_else(|| env_nonempty(RELAY_CA_CERT_ENV).map(|v| PathBuf::from(v.trim())));
        Self { token, ca_cert }
    }

    /// The token to present now (reading the token file, if that is the source).
    pub(crate) fn current_token(&self) -> Result<Option<HubToken>, ConnectError> {
        match &self.token {
            TokenSource::None => Ok(None),
            TokenSource::Value(t) => Ok(Some(t.clone())),
            TokenSource::File(path) => read_token_file(path).map(Some),
        }
    }

    /// Where the token comes from, in words (never the token itself), for error messages.
    pub fn token_origin(&self) -> String {
        match &self.token {
            TokenSource::None => "no token is configured".into(),
            TokenSource::Value(_) => format!("the token comes from {RELAY_TOKEN_ENV}"),
            TokenSource::File(p) => format!("the token comes from {}", p.display()),
        }
    }
}

/// Reads a token file (see [`relay_proto::token::read_token_file`]); errors name the file.
pub(crate) fn read_token_file(path: &Path) -> Result<HubToken, ConnectError> {
    relay_proto::token::read_token_file(path).map_err(|e| ConnectError::Token {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

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
    /// The token file could not be used.
    #[error("cannot read the hub token from {}: {reason}", path.display())]
    Token {
        /// The token file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The CA file could not be used.
    #[error("cannot use the CA certificate {}: {reason}", path.display())]
    CaCert {
        /// The CA file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The hub answered the upgrade with an HTTP error (401: token refused; 503: too many
    /// connections from this address).
    #[error("{message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// What happened and what to check.
        message: String,
    },
    /// The TLS handshake failed; the message says what to check.
    #[error("{message}")]
    Tls {
        /// What happened and what to check.
        message: String,
    },
    /// TCP connect or WebSocket handshake failed (hub down, wrong port, refused).
    #[error("hub unreachable at {url}: {source}{hint}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// The underlying error.
        #[source]
        source: WsError,
        /// A suggestion (may be empty), starting with a separator.
        hint: String,
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
    Io(#[from] WsError),
}

/// Checks that `url` is a `ws://` or `wss://` URL.
pub(crate) fn check_url(url: &str) -> Result<(), ConnectError> {
    if url.starts_with("ws://") || url.starts_with("wss://") {
        Ok(())
    } else {
        Err(ConnectError::BadUrl {
            url: url.to_string(),
            reason: "it must start with ws:// or wss://".into(),
        })
    }
}

/// Opens a WebSocket to the hub at `url` presenting `auth`, giving up after `timeout`.
pub async fn connect_with(
    url: &str,
    auth: &ClientAuth,
    timeout: Duration,
) -> Result<HubSocket, ConnectError> {
    check_url(url)?;
    let mut request = url
        .into_client_request()
        .map_err(|e| ConnectError::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    if let Some(token) = auth.current_token()? {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                ConnectError::Refused {
                    status: 0,
                    message: format!(
                        "the hub token is not usable: it contains characters an HTTP header cannot \
                     carry ({})",
                        auth.token_origin()
                    ),
                }
            })?;
        value.set_sensitive(true);
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    let connector = if url.starts_with("wss://") {
        tls_connector(auth.ca_cert.as_deref())?
    } else {
        None
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(CLIENT_MAX_FRAME))
        .max_frame_size(Some(CLIENT_MAX_FRAME));
    let dial = connect_async_tls_with_config(request, Some(config), true, connector);
    match tokio::time::timeout(timeout, dial).await {
        Err(_) => Err(ConnectError::Timeout(url.to_string(), timeout)),
        Ok(Err(source)) => Err(explain(url, auth, source)),
        Ok(Ok((ws, _response))) => Ok(ws),
    }
}

/// The TLS connector for `wss://`: one trusting exactly the CA certificate(s) in `ca_cert`,
/// or `None` for the system roots (tokio-tungstenite loads them; its `rustls-tls-native-roots`
/// feature). Always rustls with the process-default provider, which rustls takes from its
/// crate features: `ring`, the only one this workspace enables (see the root Cargo.toml).
fn tls_connector(ca_cert: Option<&Path>) -> Result<Option<Connector>, ConnectError> {
    let Some(path) = ca_cert else {
        return Ok(None);
    };
    let bad = |reason: String| ConnectError::CaCert {
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "no certificate in it (expected a PEM block \"BEGIN CERTIFICATE\")".into(),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Connector::Rustls(Arc::new(config))))
}

/// The rustls client configuration for an HTTPS request to a `wss://` hub (what
/// `claude-relay approvals` sends): exactly the CA certificate(s) in `ca_cert`, else the
/// system's roots — the same trust as [`connect_with`].
pub fn tls_client_config(
    ca_cert: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
    if let Some(Connector::Rustls(config)) = tls_connector(ca_cert)? {
        return Ok(config);
    }
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Turns a failed dial into an error that says what to check.
fn explain(url: &str, auth: &ClientAuth, source: WsError) -> ConnectError {
    let host = host_of(url);
    if let WsError::Http(response) = &source {
        let status = response.status().as_u16();
        let said = response
            .body()
            .as_deref()
            .map(|b| {
                String::from_utf8_lossy(&b[..b.len().min(300)])
                    .trim()
                    .to_string()
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| response.status().to_string());
        let message = match status {
            401 => format!(
                "the hub at {url} refused the token (HTTP 401: {said}); {} — check that it is \
                 the hub's token (RELAY_TOKEN, RELAY_TOKEN_FILE or --token-file)",
                auth.token_origin()
            ),
            503 => format!("the hub at {url} refused the connection (HTTP 503: {said})"),
            _ => format!("the hub at {url} refused the WebSocket upgrade (HTTP {status}: {said})"),
        };
        return ConnectError::Refused { status, message };
    }
    if let Some(e) = rustls_error(&source) {
        return ConnectError::Tls {
            message: tls_advice(url, &host, auth.ca_cert.as_deref(), e),
        };
    }
    if let WsError::Io(e) = &source
        && url.starts_with("wss://")
        && e.kind() == std::io::ErrorKind::UnexpectedEof
    {
        // The peer hung up on our ClientHello: it does not speak TLS on that port.
        return ConnectError::Tls {
            message: format!(
                "TLS handshake with {url} failed: the hub closed the connection without \
                 answering TLS; a hub started without --tls-cert serves ws://, not wss://"
            ),
        };
    }
    if let WsError::Tls(TlsError::InvalidDnsName) = &source {
        return ConnectError::Tls {
            message: format!(
                "TLS to {url} failed: {host:?} is not a host name or IP address a certificate \
                 can name"
            ),
        };
    }
    if let WsError::Url(UrlError::TlsFeatureNotEnabled) = &source {
        return ConnectError::Tls {
            message: "this build has no TLS support for wss://".into(),
        };
    }
    let hint = match &source {
        WsError::Io(e) if e.to_string().contains("no native root CA certificates") => format!(
            "; no trusted root certificates were found on this system — give the CA that signed \
             the hub's certificate with {RELAY_CA_CERT_ENV} or --ca-cert"
        ),
        WsError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            "; is the hub running, and is the port right?".to_string()
        }
        // A plain ws:// client talking to a hub that serves wss:// sees the connection die
        // during the HTTP handshake.
        WsError::Protocol(_) | WsError::Io(_) | WsError::ConnectionClosed
            if url.starts_with("ws://") =>
        {
            "; if the hub serves wss:// (started with --tls-cert), use a wss:// URL".to_string()
        }
        _ => String::new(),
    };
    ConnectError::Unreachable {
        url: url.to_string(),
        source,
        hint,
    }
}

/// The rustls error inside a dial failure, if the TLS handshake is what failed.
fn rustls_error(e: &WsError) -> Option<&rustls::Error> {
    match e {
        WsError::Tls(TlsError::Rustls(e)) => Some(e),
        WsError::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

fn tls_advice(url: &str, host: &str, ca: Option<&Path>, e: &rustls::Error) -> String {
    use rustls::{CertificateError as C, Error as E};
    let trust = match ca {
        Some(p) => format!("the CA in {}", p.display()),
        None => "the system's trusted CAs".to_string(),
    };
    let what = match e {
        E::InvalidCertificate(C::UnknownIssuer) => match ca {
            Some(p) => format!(
                "the hub's certificate is not signed by the CA in {}; check that this file is \
                 the CA that signed the hub's --tls-cert",
                p.display()
            ),
            None => format!(
                "the hub's certificate is not signed by any CA this system trusts; for a hub \
                 with a private CA, give that CA's certificate with {RELAY_CA_CERT_ENV} (or \
                 --ca-cert)"
            ),
        },
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "the hub's certificate does not name {host:?}; the host in the URL must be one of the \
             certificate's names (subjectAltName) — connect with a name it has, or reissue it \
             with {host}"
        ),
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "the hub's certificate is expired or not yet valid; check its dates and this \
              machine's clock"
            .to_string(),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            "the hub did not answer with TLS; a hub started without --tls-cert serves ws://, \
             not wss://"
                .to_string()
        }
        other => format!(
            "{other}; check the hub's certificate (its names must include {host:?}) and the \
             CA it is checked against ({trust})"
        ),
    };
    format!("TLS handshake with {url} failed: {what}")
}

/// The host part of a ws:// or wss:// URL (for messages).
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_string();
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .to_string()
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

/// Connects presenting `auth`, sends one frame, returns the first reply that is not a push
/// (`message`, `peer_joined`, `peer_left`, `mail`), and closes the connection.
pub async fn request_once(
    url: &str,
    auth: &ClientAuth,
    frame: &ClientFrame,
    timeout: Duration,
) -> Result<ServerFrame, ConnectError> {
    let mut ws = connect_with(url, auth, timeout).await?;
    send_frame(&mut ws, frame).await?;
    let reply = read_reply(&mut ws, timeout).await;
    let _ = ws.close(None).await;
    reply
}

/// The next frame that is a reply, skipping pushes (`message`, `peer_joined`, `peer_left`,
/// `presence`, `mail`).
pub async fn read_reply(
    ws: &mut HubSocket,
    timeout: Duration,
) -> Result<ServerFrame, ConnectError> {
    read_until(ws, timeout, |f| match f {
        ServerFrame::Message(_)
        | ServerFrame::PeerJoined(_)
        | ServerFrame::PeerLeft(_)
        | ServerFrame::Presence(_)
        | ServerFrame::Mail(_) => None,
        other => Some(other),
    })
    .await
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::env_of;

    #[test]
    fn token_precedence_flag_then_value_then_file() {
        let env = env_of(&[("RELAY_TOKEN", " t0k "), ("RELAY_TOKEN_FILE", "/env/file")]);
        let a = ClientAuth::resolve(Some(Path::new("/flag")), None, &env);
        assert_eq!(a.token, TokenSource::File("/flag".into()));
        let a = ClientAuth::resolve(None, None, &env);
        assert_eq!(a.token, TokenSource::Value(HubToken::new("t0k").unwrap()));
        let a = ClientAuth::resolve(None, None, env_of(&[("RELAY_TOKEN_FILE", "/env/file")]));
        assert_eq!(a.token, TokenSource::File("/env/file".into()));
        let a = ClientAuth::resolve(None, None, env_of(&[("RELAY_TOKEN", "  ")]));
        assert_eq!(a.token, TokenSource::None);
    }

    #[test]
    fn ca_precedence() {
        let env = env_of(&[("RELAY_CA_CERT", "/env/ca.pem")]);
        assert_eq!(
            ClientAuth::resolve(None, Some(Path::new("/flag.pem")), &env).ca_cert,
            Some(PathBuf::from("/flag.pem"))
        );
        assert_eq!(
            ClientAuth::resolve(None, None, &env).ca_cert,
            Some(PathBuf::from("/env/ca.pem"))
        );
        assert_eq!(ClientAuth::resolve(None, None, env_of(&[])).ca_cert, None);
    }

    #[test]
    fn tokens_never_show_in_debug_output() {
        let a = ClientAuth::resolve(None, None, env_of(&[("RELAY_TOKEN", "s3cret-value")]));
        assert!(!format!("{a:?}").contains("s3cret"));
        assert!(!a.token_origin().contains("s3cret"));
    }

    #[test]
    fn token_file_is_its_first_line_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "  abc123  \nsecond line\n").unwrap();
        assert_eq!(read_token_file(&f).unwrap().expose(), "abc123");
        std::fs::write(&f, "\n").unwrap();
        let e = read_token_file(&f).unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains("token"), "{e}");
        let e = read_token_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn a_bad_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate").unwrap();
        let e = tls_connector(Some(&f)).err().unwrap().to_string();
        assert!(e.contains("ca.pem") && e.contains("no certificate"), "{e}");
        let e = tls_connector(Some(&dir.path().join("nope.pem")))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("nope.pem"), "{e}");
    }

    #[test]
    fn host_of_urls() {
        assert_eq!(host_of("wss://hub.example:9999/x"), "hub.example");
        assert_eq!(host_of("wss://127.0.0.1:9999"), "127.0.0.1");
        assert_eq!(host_of("wss://[::1]:9999"), "::1");
        assert_eq!(host_of("ws://localhost"), "localhost");
    }
}
