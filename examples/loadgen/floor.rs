//! The floor: a bare relay that does only what the benchmark needs, durably, so that every
//! hub figure can be given as a ratio to it, measured side by side in the same invocation
//! (issue 16; docs/BENCHMARKS.md, "The floor").
//!
//! What it does: WebSocket on loopback; `register {clientId}` → `registered {clientId,
//! peers: []}` (a taken name is refused); `message {to, content, rid}` → appended to a log
//! file, then, once written, pushed as `message` to the recipient (or to everyone else for
//! `to: "all"`) and acked to the sender with `sent`. WebSocket pings are answered by
//! tungstenite. Anything else is ignored. No presence, no history, no read state, no limits,
//! no idempotency keys, no metrics: routing plus the write.
//!
//! With `--floor-presence` it also pays what the Node relay's protocol costs a relay: a
//! client that registers without a `presence` field (the Node relay's own clients) is told of
//! every join and leave as `peer_joined`/`peer_left {clientId, peers}` with the whole list,
//! and its `registered` carries the list of the others. Each frame is rendered once and its
//! bytes shared by every connection, and what a connection is owed is held for
//! [`PRESENCE_EVERY`] and written in one flush (the hub's batch interval), so many joins cost
//! a client a few writes, not one each. This is the least any relay that keeps those clients
//! working must push (their bridge sets its list from `peers` and tells its model "Peer X
//! joined" for every frame), so the hub's Node-protocol storm is compared with it, not only
//! with routing (docs/BENCHMARKS.md, "The floor with the Node relay's presence")...
//!
//! The write follows the hub's store policy as shipped (`--sync normal`, docs/STORAGE.md):
//! one thread owns the log and appends whatever is queued (up to [`MAX_BATCH`] messages) in
//! one `write`, so concurrent senders share one group commit; a message is acked and pushed
//! only after its batch is written (in the OS page cache: a killed process loses nothing), and
//! the file is fsync'd every [`SYNC_EVERY`] while there is traffic (the hub's checkpoint
//! cadence). The threads are the hub's too: one network thread (a current-thread runtime),
//! the writer thread, and the sync thread.
//!
//! It is started by the generator itself (`loadgen --serve-floor DIR`, see
//! [`crate::hubproc`]) so that `--floor` needs no second binary.

use std::{
    borrow::Cow,
    cell::RefCell,
    collections::HashMap,
    fs::File,
    io::Write as _,
    path::Path,
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes, protocol::WebSocketConfig};

/// Most messages written in one group commit (the hub's `MAX_BATCH`).
const MAX_BATCH: usize = 512;
/// Appends that may wait for the writer (the hub's store queue); senders wait beyond it.
const QUEUE: usize = 4096;
/// Written batches that may wait for routing (the hub's route queue).
const ROUTE_QUEUE: usize = 64;
/// Frames a connection's outbound queue holds (the hub's default); a client that lets it
/// fill is dropped.
const OUTBOX: usize = 4096;
/// tungstenite's read buffer per connection (the hub's `READ_CHUNK`).
const READ_BUFFER: usize = 4 << 10;
/// How often the log is fsync'd while it is written to (the hub's checkpoint cadence).
const SYNC_EVERY: Duration = Duration::from_millis(50);
/// With `--floor-presence`, how long presence frames are held before a connection's writer
/// gets them all at once (the hub's batch interval for `presence: "full"`).
const PRESENCE_EVERY: Duration = Duration::from_millis(250);

/// One frame from a client: only the fields the floor reads.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(rename = "clientId", borrow, default)]
    client_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(default)]
    rid: Option<serde_json::Value>,
    /// Present (any mode) on our own protocol's clients; absent on the Node relay's.
    #[serde(borrow, default)]
    presence: Option<Cow<'a, str>>,
}

/// A message on its way to the log.
struct Append {
    conn: u64,
    from: Arc<str>,
    to: String,
    content: String,
    rid: Option<serde_json::Value>,
}

/// A message that is in the log.
struct Written {
    seq: u64,
    ts: i64,
    msg: Append,
}

/// A live connection: its name and its outbound queue.
struct Conn {
    name: Option<Arc<str>>,
    tx: mpsc::Sender<Utf8Bytes>,
    /// Registered without a `presence` field, with `--floor-presence`: told of joins and
    /// leaves the Node relay's way.
    node: bool,
}

/// Who is connected (owned by the network thread).
#[derive(Default)]
struct Table {
    conns: HashMap<u64, Conn>,
    names: HashMap<Arc<str>, u64>,
    /// `--floor-presence`: send the Node relay's presence.
    presence: bool,
    /// Presence frames held for each connection until the next [`PRESENCE_EVERY`] tick.
    held: HashMap<u64, Vec<Utf8Bytes>>,
}

impl Table {
    /// Queues `frame` for `conn`; a full queue drops the connection (its task sees the
    /// closed channel).
    fn push(&mut self, conn: u64, frame: Utf8Bytes) -> bool {
        let Some(c) = self.conns.get(&conn) else {
            return false;
        };
        match c.tx.try_send(frame) {
            Ok(()) => true,
            Err(_) => {
                self.drop_conn(conn);
                false
            }
        }
    }

    fn drop_conn(&mut self, conn: u64) {
        self.held.remove(&conn);
        if let Some(c) = self.conns.remove(&conn)
            && let Some(name) = c.name
        {
            self.names.remove(&name);
        }
    }

    /// The registered names as a JSON array, the Node relay's `peers`, without `except`
    /// (a client is not its own peer).
    fn peers(&self, except: Option<&str>) -> String {
        let names: Vec<&str> = self
            .names
            .keys()
            .map(|n| &**n)
            .filter(|n| Some(*n) != except)
            .collect();
        serde_json::to_string(&names).expect("names serialize")
    }

    /// Tells every other Node-protocol client that `name` joined or left (`ty`), with the
    /// whole list: one frame, its bytes shared.
    fn announce(&mut self, ty: &str, name: &str, except: u64) {
        if !self.presence {
            return;
        }
        let frame = utf8(
            format!(
                r#"{{"type":"{ty}","clientId":{},"peers":{}}}"#,
                serde_json::Value::from(name),
                self.peers(None)
            )
            .into_bytes(),
        );
        let targets: Vec<u64> = self
            .conns
            .iter()
            .filter(|(c, conn)| **c != except && conn.node && conn.name.is_some())
            .map(|(&c, _)| c)
            .collect();
        for c in targets {
            self.held.entry(c).or_default().push(frame.clone());
        }
    }

    /// Hands each connection the presence held for it, all at once.
    fn release_held(&mut self) {
        for (conn, frames) in std::mem::take(&mut self.held) {
            for frame in frames {
                if !self.push(conn, frame) {
                    break;
                }
            }
        }
    }

    /// `conn` is gone: forgotten, and (with presence) its leave announced.
    fn leave(&mut self, conn: u64) {
        let name = self.conns.get(&conn).and_then(|c| c.name.clone());
        self.drop_conn(conn);
        if let Some(name) = name {
            self.announce("peer_left", &name, conn);
        }
    }
}

/// Runs the floor relay with its log in `dir` until killed (with `presence`, the Node relay's
/// presence too: see the module's header). Prints `listening on ws://…` on stderr once it
/// accepts connections.
pub(crate) fn serve(dir: &Path, presence: bool) -> anyhow::Result<()> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("floor.log"))
        .context("opening the floor's log")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("floor-net")
        .build()?;
    tokio::task::LocalSet::new().block_on(&runtime, async move {
        let (append_tx, append_rx) = mpsc::channel::<Append>(QUEUE);
        let (route_tx, route_rx) = mpsc::channel::<Vec<Written>>(ROUTE_QUEUE);
        let dirty = Arc::new(AtomicBool::new(false));
        let sync_file = log.try_clone()?;
        let sync_dirty = dirty.clone();
        std::thread::Builder::new()
            .name("floor-sync".into())
            .spawn(move || sync_loop(sync_file, sync_dirty))?;
        std::thread::Builder::new()
            .name("floor-writer".into())
            .spawn(move || write_loop(log, append_rx, route_tx, dirty))?;
        let table = Rc::new(RefCell::new(Table {
            presence,
            ..Table::default()
        }));
        tokio::task::spawn_local(route_loop(route_rx, table.clone()));
        if presence {
            let table = table.clone();
            tokio::task::spawn_local(async move {
                let mut tick = tokio::time::interval(PRESENCE_EVERY);
                loop {
                    tick.tick().await;
                    table.borrow_mut().release_held();
                }
            });
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        eprintln!("floor relay listening on ws://{}", listener.local_addr()?);
        let mut next_conn = 0u64;
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            next_conn += 1;
            tokio::task::spawn_local(connection(tcp, next_conn, table.clone(), append_tx.clone()));
        }
    })
}

/// fsyncs the log every [`SYNC_EVERY`] if it was written to since the last time.
fn sync_loop(file: File, dirty: Arc<AtomicBool>) {
    loop {
        std::thread::sleep(SYNC_EVERY);
        if dirty.swap(false, Ordering::AcqRel) && file.sync_data().is_err() {
            return;
        }
    }
}

/// The writer thread: drains what is queued (≤ [`MAX_BATCH`]), appends it in one write,
/// then hands the batch to the network thread for delivery and acks.
fn write_loop(
    mut log: File,
    mut rx: mpsc::Receiver<Append>,
    route: mpsc::Sender<Vec<Written>>,
    dirty: Arc<AtomicBool>,
) {
    let mut seq = 0u64;
    let mut buf = Vec::with_capacity(64 << 10);
    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::with_capacity(64);
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            batch.push(msg);
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        buf.clear();
        let ts = relay_proto::time::now_ms();
        let written: Vec<Written> = batch
            .into_iter()
            .map(|msg| {
                seq += 1;
                // seq, time, from, to, content (JSON-escaped): one line per message.
                let _ = write!(buf, "{seq}\t{ts}\t{}\t{}\t", msg.from, msg.to);
                let _ = serde_json::to_writer(&mut buf, &msg.content);
                buf.push(b'\n');
                Written { seq, ts, msg }
            })
            .collect();
        if log.write_all(&buf).is_err() {
            eprintln!("floor relay: writing the log failed");
            return;
        }
        dirty.store(true, Ordering::Release);
        if route.blocking_send(written).is_err() {
            return;
        }
    }
}

/// Routes written batches: the `message` to its recipient(s), the `sent` ack to the sender.
async fn route_loop(mut rx: mpsc::Receiver<Vec<Written>>, table: Rc<RefCell<Table>>) {
    while let Some(batch) = rx.recv().await {
        {
            let mut t = table.borrow_mut();
            for w in batch {
                let frame = message_frame(&w);
                let delivered = if w.msg.to == relay_proto::BROADCAST {
                    let targets: Vec<u64> = t
                        .names
                        .iter()
                        .filter(|(name, _)| **name != w.msg.from)
                        .map(|(_, &c)| c)
                        .collect();
                    let mut n = 0;
                    for c in targets {
                        n += t.push(c, frame.clone()) as u32;
                    }
                    n > 0
                } else {
                    match t.names.get(w.msg.to.as_str()).copied() {
                        Some(c) => t.push(c, frame),
                        None => false,
                    }
                };
                t.push(w.msg.conn, sent_frame(&w, delivered));
            }
        }
        tokio::task::yield_now().await;
    }
}

fn message_frame(w: &Written) -> Utf8Bytes {
    let mut out = Vec::with_capacity(160 + w.msg.content.len());
    let _ = write!(
        out,
        r#"{{"type":"message","id":"floor-{}","from":"{}","to":"{}","content":"#,
        w.seq, w.msg.from, w.msg.to
    );
    let _ = serde_json::to_writer(&mut out, &w.msg.content);
    let _ = write!(
        out,
        r#","timestamp":"{}","seq":{}}}"#,
        relay_proto::time::iso(w.ts),
        w.seq
    );
    utf8(out)
}

fn sent_frame(w: &Written, delivered: bool) -> Utf8Bytes {
    let mut out = Vec::with_capacity(128);
    let _ = write!(
        out,
        r#"{{"type":"sent","id":"floor-{}","to":"{}","delivered":{delivered},"seq":{}"#,
        w.seq, w.msg.to, w.seq
    );
    if let Some(rid) = &w.msg.rid {
        out.extend_from_slice(br#","rid":"#);
        let _ = serde_json::to_writer(&mut out, rid);
    }
    out.push(b'}');
    utf8(out)
}

fn utf8(bytes: Vec<u8>) -> Utf8Bytes {
    // Only valid UTF-8 went in: names and content came from text frames, the rest is ours.
    Utf8Bytes::from(String::from_utf8(bytes).expect("frames are UTF-8"))
}

/// One client connection: the reader here, the writer in its own task.
async fn connection(
    tcp: tokio::net::TcpStream,
    id: u64,
    table: Rc<RefCell<Table>>,
    appends: mpsc::Sender<Append>,
) {
    // The hub's read buffer (4 KiB, eagerly allocated): idle connections cost the same.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(OUTBOX);
    table.borrow_mut().conns.insert(
        id,
        Conn {
            name: None,
            tx,
            node: false,
        },
    );
    let writer = tokio::task::spawn_local(async move {
        while let Some(frame) = rx.recv().await {
            if sink.feed(Message::Text(frame)).await.is_err() {
                return;
            }
            while let Ok(frame) = rx.try_recv() {
                if sink.feed(Message::Text(frame)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let mut name: Option<Arc<str>> = None;
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            continue;
        };
        let Ok(f) = serde_json::from_str::<Frame<'_>>(text.as_str()) else {
            continue;
        };
        match (&*f.ty, &name) {
            ("register", None) => {
                let Some(asked) = f.client_id else { continue };
                let mut t = table.borrow_mut();
                let reply = if t.names.contains_key(&*asked) {
                    format!(
                        r#"{{"type":"register_rejected","reason":"name in use","clientId":{}}}"#,
                        serde_json::Value::from(&*asked)
                    )
                } else {
                    let n: Arc<str> = Arc::from(&*asked);
                    t.names.insert(n.clone(), id);
                    // The Node relay's clients send no `presence`; ours asking for "full"
                    // get the same frames from the hub.
                    let node = t.presence && f.presence.as_deref().is_none_or(|p| p == "full");
                    if let Some(c) = t.conns.get_mut(&id) {
                        c.name = Some(n.clone());
                        c.node = node;
                    }
                    name = Some(n);
                    let peers = if node {
                        t.peers(Some(&asked))
                    } else {
                        "[]".into()
                    };
                    format!(
                        r#"{{"type":"registered","clientId":{},"peers":{peers}}}"#,
                        serde_json::Value::from(&*asked)
                    )
                };
                t.push(id, reply.into());
                if let Some(n) = &name {
                    t.announce("peer_joined", n, id);
                }
            }
            ("message", Some(from)) => {
                let (Some(to), Some(content)) = (f.to, f.content) else {
                    continue;
                };
                let a = Append {
                    conn: id,
                    from: from.clone(),
                    to: to.into_owned(),
                    content: content.into_owned(),
                    rid: f.rid,
                };
                if appends.send(a).await.is_err() {
                    break;
                }
            }
            _ => {}
        }
    }
    table.borrow_mut().leave(id);
    writer.abort();
}
