//! The bridge's stdio transport: newline-delimited JSON-RPC on stdin/stdout that answers every
//! request it can identify, even a bad one, so a client's call fails instead of hanging.
//!
//! rmcp 3.11's own `AsyncRwTransport` now bounds lines, resumes a partial line after a
//! cancelled read and answers well-formed JSON that is not a message with `-32600 Invalid
//! Request`. What this one still adds (docs/BRIDGE.md, "Robust MCP on stdio"):
//! - the `-32600` echoes the request's `id` when one can be read and says what is wrong (rmcp
//!   answers with id `null`, which no client can match to its pending call);
//! - a standard request with unreadable params (`tools/call` without `name`) gets `-32602
//!   Invalid params` with its id (rmcp reads it as an unknown custom method);
//! - a line over [`MAX_LINE_BYTES`] is discarded as it streams in and answered with `-32600`
//!   echoing the id found at its start (rmcp drops it silently: the call would hang);
//! - a last line without a newline at EOF is still served, and a UTF-8 BOM is ignored;
//! - each outgoing message is one line written and flushed by a single writer task through a
//!   bounded queue, so concurrent responses never interleave and a cancelled send never leaves
//!   half a line.
//!
//! A line that is not JSON at all is logged and ignored, as rmcp and the other MCP SDKs do
//! (rust-sdk issue 938): it has no id to answer, and replying to a peer that turns our
//! replies into more garbage (a shell on the other end of the pipe) would be an endless
//! error storm. Ignoring it does not make the bridge deaf: the next line is served. Blank
//! lines and notifications it cannot parse are ignored too (JSON-RPC forbids replying to a
//! notification). stdin EOF makes [`Transport::receive`] return `None`, which ends rmcp's
//! service loop.

use std::{borrow::Cow, io, time::Duration};

use rmcp::{
    RoleServer,
    model::{
        CallToolRequestMethod, CallToolRequestParams, CancelTaskMethod, ClientRequest,
        CompleteRequestMethod, ConstString, DiscoverRequestMethod, GetPromptRequestMethod,
        GetSkillRequestMethod, GetTaskMethod, InitializeResultMethod, JsonRpcMessage,
        ListPromptsRequestMethod, ListResourceTemplatesRequestMethod, ListResourcesRequestMethod,
        ListSkillsRequestMethod, ListToolsRequestMethod, PingRequestMethod,
        ReadResourceDirectoryRequestMethod, ReadResourceRequestMethod, SetLevelRequestMethod,
        SubscribeRequestMethod, SubscriptionsListenRequestMethod, UnsubscribeRequestMethod,
        UpdateTaskMethod,
    },
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
    transport::Transport,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

/// The longest stdin line (one JSON-RPC message) the bridge accepts. Tool arguments are
/// messages for other agents, capped by the hub at 512 KiB, so 4 MiB leaves room for escaping
/// without letting a runaway client grow memory without bound.
pub(crate) const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// Outgoing lines waiting for the writer task. Bounded: senders wait (backpressure) when stdout
/// is slow, instead of queueing without limit.
const WRITE_QUEUE: usize = 64;

/// How much of a discarded over-long line is scanned for its request id.
const ID_SCAN_BYTES: usize = 64 * 1024;

/// How long `close` waits for queued output to reach stdout.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// JSON-RPC error codes this transport emits itself.
mod code {
    pub(super) const INVALID_REQUEST: i64 = -32600;
    pub(super) const INVALID_PARAMS: i64 = -32602;
}

/// One line for the writer task, with an optional acknowledgement once it is flushed.
struct WriteJob {
    bytes: Vec<u8>,
    done: Option<oneshot::Sender<io::Result<()>>>,
}

/// A server-side MCP transport over a byte reader (stdin) and writer (stdout).
pub(crate) struct StdioTransport<R> {
    reader: BufReader<R>,
    /// The line being assembled. Survives a cancelled `receive` (rmcp polls it in `select!`),
    /// so a partial line is resumed, never lost.
    line: Vec<u8>,
    /// Dropping the rest of an over-long line until its newline.
    discarding: bool,
    /// Saw EOF after a final line without a newline; the next `receive` returns `None`.
    eof: bool,
    max_line: usize,
    /// An error reply produced by `receive`, written before the next line is read.
    pending_reply: Option<Vec<u8>>,
    out: Option<mpsc::Sender<WriteJob>>,
    writer: Option<JoinHandle<()>>,
}

/// What one bounded line read produced.
enum LineRead {
    /// A whole line is in `line` (newline stripped or EOF reached).
    Line,
    /// The line exceeded the limit and was dropped; the id found at its start, if any.
    Oversized(Option<Value>),
    Eof,
    Io(io::Error),
}

/// What to do with one complete line.
enum Incoming {
    Message(Box<RxJsonRpcMessage<RoleServer>>),
    Ignore,
    Reply(Vec<u8>),
}

impl<R> StdioTransport<R>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    /// Wraps `reader` and `writer`; spawns the writer task (call inside a tokio runtime).
    pub(crate) fn new<W>(reader: R, writer: W) -> Self
    where
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let writer = tokio::spawn(write_loop(writer, rx));
        Self {
            reader: BufReader::new(reader),
            line: Vec::new(),
            discarding: false,
            eof: false,
            max_line: MAX_LINE_BYTES,
            pending_reply: None,
            out: Some(tx),
            writer: Some(writer),
        }
    }

    /// Overrides [`MAX_LINE_BYTES`] (tests use a small limit).
    #[cfg(test)]
    pub(crate) fn with_max_line(mut self, max: usize) -> Self {
        self.max_line = max.max(1);
        self
    }

    /// Reads one `\n`-terminated line into `self.line` without letting it grow past
    /// `max_line`. Cancellation-safe: bytes are consumed from the `BufReader` only after they
    /// were copied into `self.line` (or deliberately discarded), with no await in between.
    async fn read_line(&mut self) -> LineRead {
        loop {
            let (consumed, step) = {
                let available = match self.reader.fill_buf().await {
                    Ok(a) => a,
                    Err(e) => return LineRead::Io(e),
                };
                if available.is_empty() {
                    if !self.discarding && !self.line.is_empty() {
                        // A last line without a newline: serve it, then report EOF.
                        self.eof = true;
                        return LineRead::Line;
                    }
                    return LineRead::Eof;
                }
                let newline = available.iter().position(|b| *b == b'\n');
                let take = newline.map_or(available.len(), |i| i + 1);
                if self.discarding {
                    (
                        take,
                        if newline.is_some() {
                            Step::EndDiscard
                        } else {
                            Step::More
                        },
                    )
                } else if self.line.len() + take > self.max_line {
                    // Keep what we have only long enough to look for the request id.
                    let room = ID_SCAN_BYTES.saturating_sub(self.line.len());
                    self.line.extend_from_slice(&available[..take.min(room)]);
                    let id = top_level_id(&self.line[..self.line.len().min(ID_SCAN_BYTES)]);
                    self.line.clear();
                    self.line.shrink_to(64 * 1024);
                    (take, Step::Oversized(id, newline.is_none()))
                } else {
                    self.line.extend_from_slice(&available[..take]);
                    (
                        take,
                        if newline.is_some() {
                            Step::Line
                        } else {
                            Step::More
                        },
                    )
                }
            };
            self.reader.consume(consumed);
            match step {
                Step::Line => return LineRead::Line,
                Step::More => {}
                Step::EndDiscard => self.discarding = false,
                Step::Oversized(id, rest_follows) => {
                    self.discarding = rest_follows;
                    return LineRead::Oversized(id);
                }
            }
        }
    }
}

enum Step {
    Line,
    More,
    EndDiscard,
    Oversized(Option<Value>, bool),
}

impl<R> Transport<RoleServer> for StdioTransport<R>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    type Error = io::Error;

    fn name() -> Cow<'static, str> {
        "claude-relay-stdio".into()
    }

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let out = self.out.clone();
        let encoded = serde_json::to_vec(&item);
        async move {
            let mut bytes = encoded.map_err(io::Error::other)?;
            bytes.push(b'\n');
            let out = out.ok_or_else(closed)?;
            let (done, flushed) = oneshot::channel();
            out.send(WriteJob {
                bytes,
                done: Some(done),
            })
            .await
            .map_err(|_| closed())?;
            flushed.await.map_err(|_| closed())?
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            if self.pending_reply.is_some() {
                let out = self.out.as_ref()?;
                // `reserve` is cancellation-safe: the reply is taken only once a slot is ours.
                match out.reserve().await {
                    Ok(permit) => permit.send(WriteJob {
                        bytes: self.pending_reply.take().unwrap_or_default(),
                        done: None,
                    }),
                    Err(_) => return None,
                }
            }
            if self.eof {
                return None;
            }
            match self.read_line().await {
                LineRead::Line => {}
                LineRead::Oversized(id) => {
                    tracing::warn!(limit = self.max_line, "discarded an over-long stdin line");
                    self.pending_reply = Some(error_line(
                        id,
                        code::INVALID_REQUEST,
                        &format!(
                            "Invalid Request: message longer than {} bytes; discarded",
                            self.max_line
                        ),
                    ));
                    continue;
                }
                LineRead::Eof => return None,
                LineRead::Io(e) => {
                    tracing::error!("reading stdin failed: {e}");
                    return None;
                }
            }
            let incoming = classify(&self.line);
            self.line.clear();
            if self.line.capacity() > 1024 * 1024 {
                // Do not keep a multi-MiB buffer around after one large message.
                self.line.shrink_to(64 * 1024);
            }
            match incoming {
                Incoming::Message(m) => return Some(*m),
                Incoming::Ignore => {}
                Incoming::Reply(bytes) => self.pending_reply = Some(bytes),
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        // Dropping our sender lets the writer finish once in-flight sends are written.
        self.out = None;
        if let Some(writer) = self.writer.take() {
            let _ = tokio::time::timeout(CLOSE_FLUSH, writer).await;
        }
        Ok(())
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "stdout is closed")
}

/// Writes queued lines in order, one `write_all` + `flush` each. After the first write error
/// (the client closed our stdout) every later job fails fast with the same kind of error.
async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<WriteJob>) {
    let mut failed: Option<io::ErrorKind> = None;
    while let Some(job) = rx.recv().await {
        let result = match failed {
            Some(kind) => Err(io::Error::new(kind, "stdout is closed")),
            None => {
                let r = async {
                    w.write_all(&job.bytes).await?;
                    w.flush().await
                }
                .await;
                if let Err(e) = &r {
                    tracing::debug!("writing stdout failed: {e}");
                    failed = Some(e.kind());
                }
                r
            }
        };
        if let Some(done) = job.done {
            let _ = done.send(result);
        }
    }
}

/// Decides what one complete line is: a message for rmcp, nothing, or an error reply.
fn classify(raw: &[u8]) -> Incoming {
    let line = raw.strip_suffix(b"\n").unwrap_or(raw);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Incoming::Ignore;
    }
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            // No id to answer, and answering garbage can feed an error storm (module doc).
            tracing::warn!("ignoring a stdin line that is not JSON: {e}");
            return Incoming::Ignore;
        }
    };
    match RxJsonRpcMessage::<RoleServer>::deserialize(&value) {
        Ok(JsonRpcMessage::Request(req)) if matches!(&req.request, ClientRequest::CustomRequest(c) if is_standard_request(&c.method)) =>
        {
            // rmcp reads a standard request with unreadable params as a custom request and
            // would answer "method not found"; say what is actually wrong.
            let method = value["method"].as_str().unwrap_or_default();
            let why = match method {
                "tools/call" => value
                    .get("params")
                    .cloned()
                    .map(serde_json::from_value::<CallToolRequestParams>)
                    .map_or_else(
                        || "missing params".to_string(),
                        |r| match r {
                            Err(e) => e.to_string(),
                            Ok(_) => "params do not match the method".to_string(),
                        },
                    ),
                _ => "params do not match the method".to_string(),
            };
            Incoming::Reply(error_line(
                value.get("id").cloned(),
                code::INVALID_PARAMS,
                &format!("Invalid params for {method}: {why}"),
            ))
        }
        Ok(message) => Incoming::Message(Box::new(message)),
        Err(e) => invalid(&value, &e.to_string()),
    }
}

/// The methods of rmcp's standard client requests: every `ClientRequest` variant but
/// `CustomRequest`, named by rmcp's own method types, so a renamed method fails to compile.
/// (`ClientRequest` is `#[non_exhaustive]` and untagged, so its variants cannot be enumerated
/// from outside rmcp; the test `standard_methods_are_rmcps` checks each name against rmcp's
/// `ClientRequest::method`, and an rmcp upgrade that adds a request must add it here.)
const STANDARD_REQUESTS: [&str; 21] = [
    InitializeResultMethod::VALUE,
    PingRequestMethod::VALUE,
    DiscoverRequestMethod::VALUE,
    CompleteRequestMethod::VALUE,
    SetLevelRequestMethod::VALUE,
    GetPromptRequestMethod::VALUE,
    ListPromptsRequestMethod::VALUE,
    ListResourcesRequestMethod::VALUE,
    ListResourceTemplatesRequestMethod::VALUE,
    ReadResourceRequestMethod::VALUE,
    SubscriptionsListenRequestMethod::VALUE,
    SubscribeRequestMethod::VALUE,
    UnsubscribeRequestMethod::VALUE,
    CallToolRequestMethod::VALUE,
    ListToolsRequestMethod::VALUE,
    GetTaskMethod::VALUE,
    UpdateTaskMethod::VALUE,
    CancelTaskMethod::VALUE,
    ListSkillsRequestMethod::VALUE,
    GetSkillRequestMethod::VALUE,
    ReadResourceDirectoryRequestMethod::VALUE,
];

/// A standard MCP request method (rmcp falls back to "custom" for these only when their
/// params are unreadable).
fn is_standard_request(method: &str) -> bool {
    STANDARD_REQUESTS.contains(&method)
}

/// The reply (or silence) for JSON that rmcp could not read as a client message.
fn invalid(value: &Value, serde_reason: &str) -> Incoming {
    let reply = |id: Option<Value>, why: String| {
        Incoming::Reply(error_line(
            id,
            code::INVALID_REQUEST,
            &format!("Invalid Request: {why}"),
        ))
    };
    let Some(obj) = value.as_object() else {
        return if value.is_array() {
            reply(
                None,
                "batches are not supported; send one message per line".into(),
            )
        } else {
            reply(None, "a JSON-RPC message must be a JSON object".into())
        };
    };
    let id = obj
        .get("id")
        .filter(|id| id.is_string() || id.is_number())
        .cloned();
    let method = obj.get("method");
    if obj.contains_key("result") || obj.contains_key("error") {
        if method.is_none() {
            // A malformed response to one of our requests: replying would be a protocol error.
            tracing::warn!("ignoring an unreadable response from the client: {serde_reason}");
            return Incoming::Ignore;
        }
    } else if !obj.contains_key("id") && method.is_some_and(Value::is_string) {
        // A notification we cannot read (non-standard, or bad params): no reply is allowed.
        tracing::debug!("ignoring an unreadable notification: {serde_reason}");
        return Incoming::Ignore;
    }
    let why = if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        r#""jsonrpc" must be "2.0""#.to_string()
    } else if obj.contains_key("id") && id.is_none() {
        "\"id\" must be a string or a number".to_string()
    } else {
        match method {
            None => r#"missing "method""#.to_string(),
            Some(Value::String(m)) => format!("bad params for {m:?}: {serde_reason}"),
            Some(_) => r#""method" must be a string"#.to_string(),
        }
    };
    reply(id, why)
}

/// A JSON-RPC error response line. `id` is `null` when the request's id could not be read.
fn error_line(id: Option<Value>, code: i64, message: &str) -> Vec<u8> {
    let v = json!({
        "jsonrpc": "2.0",
        "id": id.unwrap_or(Value::Null),
        "error": { "code": code, "message": message },
    });
    let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Finds the top-level `"id"` of a JSON object from the first bytes of its text, without
/// parsing the (possibly truncated) rest. Only a number or an escape-free string is returned.
fn top_level_id(text: &[u8]) -> Option<Value> {
    let n = text.len();
    let skip_ws = |mut i: usize| {
        while i < n && text[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut depth = 0usize;
    let mut i = 0;
    while i < n {
        match text[i] {
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < n && text[j] != b'"' {
                    j += if text[j] == b'\\' { 2 } else { 1 };
                }
                if j >= n {
                    return None;
                }
                let after = skip_ws(j + 1);
                if depth == 1 && after < n && text[after] == b':' && &text[start..j] == b"id" {
                    return id_value(&text[skip_ws(after + 1)..]);
                }
                i = j + 1;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

fn id_value(text: &[u8]) -> Option<Value> {
    match text.first()? {
        b'"' => {
            let end = text[1..].iter().position(|b| *b == b'"')? + 1;
            let s = std::str::from_utf8(&text[1..end]).ok()?;
            (!s.contains('\\')).then(|| Value::String(s.to_string()))
        }
        b'-' | b'0'..=b'9' => {
            let end = text
                .iter()
                .position(|b| {
                    !(b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
                })
                .unwrap_or(text.len());
            serde_json::from_slice::<serde_json::Number>(&text[..end])
                .ok()
                .map(Value::Number)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

    use super::*;

    /// A transport on one end of a duplex pipe; the test holds the other end as the client.
    fn pair(
        max_line: usize,
    ) -> (
        StdioTransport<tokio::io::ReadHalf<DuplexStream>>,
        DuplexStream,
    ) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(server);
        (StdioTransport::new(r, w).with_max_line(max_line), client)
    }

    async fn next_line(r: &mut BufReader<tokio::io::ReadHalf<DuplexStream>>) -> Value {
        let mut s = String::new();
        tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut s))
            .await
            .expect("a reply line in time")
            .unwrap();
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("reply is JSON ({e}): {s:?}"))
    }

    async fn recv(
        t: &mut StdioTransport<tokio::io::ReadHalf<DuplexStream>>,
    ) -> Option<RxJsonRpcMessage<RoleServer>> {
        tokio::time::timeout(Duration::from_secs(5), t.receive())
            .await
            .expect("receive in time")
    }

    fn is_ping(m: &RxJsonRpcMessage<RoleServer>, want: i64) -> bool {
        matches!(m, JsonRpcMessage::Request(r)
            if matches!(r.request, ClientRequest::PingRequest(_)) && r.id.to_string() == want.to_string())
    }

    #[test]
    fn standard_methods_are_rmcps() {
        // Each listed method, sent with params rmcp cannot read, is answered `Invalid params`
        // with its id, or (where its params are optional) read by rmcp as that very request;
        // never passed on as a custom request that would be answered "method not found".
        for method in STANDARD_REQUESTS {
            let line = json!({"jsonrpc": "2.0", "id": 5, "method": method, "params": {"_": [1]}})
                .to_string();
            match classify(line.as_bytes()) {
                Incoming::Message(m) => match *m {
                    JsonRpcMessage::Request(r) => {
                        assert!(
                            !matches!(r.request, ClientRequest::CustomRequest(_)),
                            "{method} read as custom"
                        );
                        assert_eq!(r.request.method(), method);
                    }
                    other => panic!("{method}: {other:?}"),
                },
                Incoming::Reply(bytes) => {
                    let v: Value = serde_json::from_slice(&bytes).unwrap();
                    assert_eq!(
                        (v["id"].clone(), v["error"]["code"].clone()),
                        (json!(5), json!(-32602)),
                        "{method}: {v}"
                    );
                }
                Incoming::Ignore => panic!("{method} ignored"),
            }
        }
        // Anything else is rmcp's custom request, passed on untouched.
        let custom = classify(br#"{"jsonrpc":"2.0","id":6,"method":"x/y","params":{}}"#);
        assert!(matches!(custom, Incoming::Message(m)
            if matches!(&*m, JsonRpcMessage::Request(r) if matches!(r.request, ClientRequest::CustomRequest(_)))));
    }

    const PING: &str = r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#;

    #[tokio::test]
    async fn a_line_that_is_not_json_is_ignored_and_the_next_request_is_served() {
        let (mut t, client) = pair(MAX_LINE_BYTES);
        let (cr, mut cw) = tokio::io::split(client);
        let mut cr = BufReader::new(cr);
        cw.write_all(format!("{{not json\n]]]\n{PING}\n").as_bytes())
            .await
            .unwrap();
        let m = recv(&mut t).await.expect("the ping after the bad lines");
        assert!(is_ping(&m, 7), "{m:?}");
        // Nothing was written for the garbage: the first line out answers the next bad request.
        cw.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":7}\n{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\"}\n")
            .await
            .unwrap();
        let m = recv(&mut t)
            .await
            .expect("the ping after the invalid request");
        assert!(is_ping(&m, 9), "{m:?}");
        let e = next_line(&mut cr).await;
        assert_eq!(
            (e["id"].clone(), e["error"]["code"].clone()),
            (json!(8), json!(-32600))
        );
    }

    #[tokio::test]
    async fn invalid_request_echoes_id() {
        let (mut t, client) = pair(MAX_LINE_BYTES);
        let (cr, mut cw) = tokio::io::split(client);
        let mut cr = BufReader::new(cr);
        cw.write_all(
            b"{\"id\":3,\"method\":\"ping\"}\n[1,2]\n{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":7}\n",
        )
        .await
        .unwrap();
        cw.write_all(format!("{PING}\n").as_bytes()).await.unwrap();
        assert!(is_ping(&recv(&mut t).await.unwrap(), 7));
        let e = next_line(&mut cr).await;
        assert_eq!(
            (e["id"].clone(), e["error"]["code"].clone()),
            (json!(3), json!(-32600))
        );
        assert!(
            e["error"]["message"].as_str().unwrap().contains("jsonrpc"),
            "{e}"
        );
        let e = next_line(&mut cr).await;
        assert_eq!(
            (e["id"].clone(), e["error"]["code"].clone()),
            (Value::Null, json!(-32600))
        );
        let e = next_line(&mut cr).await;
        assert_eq!(
            (e["id"].clone(), e["error"]["code"].clone()),
            (json!(4), json!(-32600))
        );
    }

    #[tokio::test]
    async fn a_tools_call_without_a_name_is_invalid_params_not_method_not_found() {
        let (mut t, client) = pair(MAX_LINE_BYTES);
        let (cr, mut cw) = tokio::io::split(client);
        let mut cr = BufReader::new(cr);
        cw.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":{}}\n")
            .await
            .unwrap();
        cw.write_all(format!("{PING}\n").as_bytes()).await.unwrap();
        assert!(is_ping(&recv(&mut t).await.unwrap(), 7));
        let e = next_line(&mut cr).await;
        assert_eq!(
            (e["id"].clone(), e["error"]["code"].clone()),
            (json!(5), json!(-32602))
        );
        assert!(
            e["error"]["message"].as_str().unwrap().contains("name"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn oversized_line_is_discarded_with_its_id_and_serving_continues() {
        let (mut t, client) = pair(1024);
        let (cr, mut cw) = tokio::io::split(client);
        let mut cr = BufReader::new(cr);
        let big = format!(
            r#"{{"jsonrpc":"2.0","id":"big-1","method":"tools/call","params":{{"name":"relay_send","arguments":{{"message":"{}"}}}}}}"#,
            "x".repeat(10_000)
        );
        let writer = tokio::spawn(async move {
            cw.write_all(big.as_bytes()).await.unwrap();
            cw.write_all(b"\n").await.unwrap();
            cw.write_all(format!("{PING}\n").as_bytes()).await.unwrap();
            cw
        });
        assert!(is_ping(&recv(&mut t).await.unwrap(), 7));
        let e = next_line(&mut cr).await;
        assert_eq!(e["id"], "big-1");
        assert_eq!(e["error"]["code"], -32600);
        assert!(
            t.line.capacity() <= 64 * 1024 + 1024,
            "buffer stayed bounded"
        );
        // Both halves of the client's pipe gone: EOF.
        drop(writer.await.unwrap());
        drop(cr);
        assert!(recv(&mut t).await.is_none(), "EOF ends the stream");
    }

    #[tokio::test]
    async fn blank_lines_crlf_bom_and_unknown_notifications_are_quiet() {
        let (mut t, client) = pair(MAX_LINE_BYTES);
        let (cr, mut cw) = tokio::io::split(client);
        cw.write_all(
            b"\n   \r\n{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x/y\",\"params\":5}\n",
        )
        .await
        .unwrap();
        cw.write_all(format!("\u{feff}{PING}\r\n").as_bytes())
            .await
            .unwrap();
        assert!(is_ping(&recv(&mut t).await.unwrap(), 7));
        // Nothing was written back: the next thing on the wire is our own send.
        let sent = t.send(JsonRpcMessage::response(
            rmcp::model::ServerResult::empty(()),
            rmcp::model::RequestId::Number(7),
        ));
        sent.await.unwrap();
        let mut cr = BufReader::new(cr);
        let line = next_line(&mut cr).await;
        assert_eq!(line["id"], 7);
        assert!(line.get("error").is_none(), "{line}");
    }

    #[tokio::test]
    async fn last_line_without_newline_is_served_then_eof() {
        let (mut t, mut client) = pair(MAX_LINE_BYTES);
        client.write_all(PING.as_bytes()).await.unwrap();
        client.shutdown().await.unwrap();
        drop(client);
        assert!(is_ping(&recv(&mut t).await.unwrap(), 7));
        assert!(recv(&mut t).await.is_none());
    }

    #[test]
    fn id_scan() {
        assert_eq!(
            top_level_id(br#"{"jsonrpc":"2.0","id":12,"method""#),
            Some(json!(12))
        );
        assert_eq!(top_level_id(br#"{"id" : "a-b","x":"#), Some(json!("a-b")));
        assert_eq!(
            top_level_id(br#"{"params":{"id":5},"method":"x","id":6,"#),
            Some(json!(6))
        );
        assert_eq!(
            top_level_id(br#"{"method":"x","params":{"id":5,"text":"aaaa"#),
            None
        );
        assert_eq!(
            top_level_id(br#"{"note":"\"id\":9","id":-1,"#),
            Some(json!(-1))
        );
        assert_eq!(top_level_id(b"garbage"), None);
    }
}
