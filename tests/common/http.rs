//! A minimal HTTP/1.1 client for the hub's HTTP side: one request per connection
//! (`Connection: close`), the answer read to the end and its head parsed with httparse. Every
//! request is bounded by [`WAIT`]. Event streams are not read with this (they never end).

use std::{path::Path, sync::Arc};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use super::hub::WAIT;

/// One answer.
#[derive(Debug, Clone)]
pub(crate) struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Resp {
    /// The first header called `name` (lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every header called `name`.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `method path` to 127.0.0.1:`port` with `headers` (Host and Connection are added)
/// and `body`, and reads the whole answer.
pub(crate) async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    request_over(connect(port).await, port, method, path, headers, body).await
}

/// [`request`] over TLS, trusting only the CA certificate in `ca_pem` (for a `wss://` hub,
/// whose port speaks HTTPS).
pub(crate) async fn request_tls(
    port: u16,
    ca_pem: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Resp {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    // The process-default provider (`ring`, the only one the workspace enables), as
    // hub/src/tls.rs does: naming `rustls::crypto::ring::default_provider()` is deprecated
    // since rustls 0.23.48.
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = connect(port).await;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake timed out")
    .expect("TLS handshake");
    request_over(tls, port, method, path, headers, "").await
}

async fn connect(port: u16) -> TcpStream {
    tokio::time::timeout(WAIT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect timed out")
        .expect("connect to hub")
}

async fn request_over<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    tokio::time::timeout(WAIT, async {
        let mut req = head(
            method,
            path,
            port,
            &[&[("Connection", "close")], headers].concat(),
        );
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await.expect("send request");
        let mut raw = Vec::new();
        // A TLS peer may close without close_notify once the answer is complete.
        if let Err(e) = s.read_to_end(&mut raw).await {
            assert!(!raw.is_empty(), "read answer: {e}");
        }
        let mut heads = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut heads);
        let at = match resp.parse(&raw).expect("an HTTP answer") {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => {
                panic!("incomplete answer: {}", String::from_utf8_lossy(&raw))
            }
        };
        Resp {
            status: resp.code.expect("status"),
            headers: lowered(resp.headers),
            body: String::from_utf8_lossy(&raw[at..]).into_owned(),
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{method} {path} timed out"))
}

/// Headers as (lower-case name, value).
fn lowered(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// A request's line and headers (without the blank line that ends them), with `Host` added
/// unless `headers` has one.
fn head(method: &str, path: &str, port: u16, headers: &[(&str, &str)]) -> String {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req
}

/// `GET path`.
pub(crate) async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(port, "GET", path, headers, "").await
}

/// One kept-alive HTTP/1.1 connection: several requests in a row on the same socket (each
/// answer read by its `Content-Length`), and a way to see the hub close it.
pub(crate) struct KeepAlive {
    stream: TcpStream,
    port: u16,
    buf: Vec<u8>,
}

impl KeepAlive {
    /// Opens a connection to 127.0.0.1:`port`.
    pub(crate) async fn open(port: u16) -> KeepAlive {
        KeepAlive {
            stream: connect(port).await,
            port,
            buf: Vec::new(),
        }
    }

    /// `GET path` with `headers` on this connection; the answer must carry a
    /// `Content-Length` (every answer but the event stream does).
    pub(crate) async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = head("GET", path, self.port, headers);
        req.push_str("\r\n");
        tokio::time::timeout(WAIT, async {
            self.stream
                .write_all(req.as_bytes())
                .await
                .expect("send request");
            loop {
                let mut heads = [httparse::EMPTY_HEADER; 64];
                let mut resp = httparse::Response::new(&mut heads);
                if let httparse::Status::Complete(at) = resp.parse(&self.buf).expect("HTTP") {
                    let headers = lowered(resp.headers);
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .map(|(_, v)| v.parse().expect("a length"))
                        .expect("an answer with Content-Length");
                    if self.buf.len() >= at + len {
                        let status = resp.code.expect("status");
                        let body = String::from_utf8_lossy(&self.buf[at..at + len]).into_owned();
                        self.buf.drain(..at + len);
                        return Resp {
                            status,
                            headers,
                            body,
                        };
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.expect("read answer");
                assert!(n > 0, "connection closed before the answer was complete");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("GET {path} timed out"))
    }

    /// Waits (bounded) until the hub closes the connection.
    pub(crate) async fn closed(&mut self) {
        tokio::time::timeout(WAIT, async {
            let mut chunk = [0u8; 4096];
            while !matches!(self.stream.read(&mut chunk).await, Ok(0) | Err(_)) {}
        })
        .await
        .expect("the hub did not close the connection");
    }
}
