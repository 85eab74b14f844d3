//! What each client frame does. One [`ConnSession`] per connection holds what the
//! connection has claimed; [`ConnSession::handle`] takes one parsed frame, consults the
//! router and the store, and queues the reply on the connection's outbox.
//!
//! Every reply echoes the request's `rid`. Every refusal is an `error` (or
//! `register_rejected`) frame that says what was wrong; the connection stays open.

mod register;
mod search;

use relay_proto::token::HubToken;
use std::{net::SocketAddr, sync::Arc};

use relay_proto::{
    BROADCAST, SessionId,
    id::validate,
    time::{now_ms, parse_iso},
    wire::{
        self, ClientFrame, ErrorFrame, Forgotten, GetHistory, History, Inbox, Marked, Peers, Pong,
        RegisterRejected, Released, RequestId, SendMessage, ServerFrame, Sessions, Status,
        Watching, codes,
    },
};
use tokio::sync::Notify;

use crate::{
    HubState,
    auth::{secret_matches, token_ok},
    budget::Charge,
    listing,
    operator::{self, Denied, Key, Operator},
    outbound::{AckTo, Outbox},
    parse::ParseError,
    store::{
        After, Append, HistoryQuery, NewMessage, Reply, StoreError, TryAppend, parse_message_id,
    },
};

/// Default page size of `get_history` and `receive` (the Node relay's).
pub(crate) const DEFAULT_COUNT: usize = 10;
/// Most seqs one `mark_read` may carry.
pub(crate) const MAX_MARK: usize = 1000;
/// Most unread messages pushed right after `registered` to a client that asks for its
/// backlog.
pub(crate) const BACKLOG: usize = relay_proto::wire::BACKLOG_MAX as usize;
/// Longest idempotency key of a `message`.
pub(crate) const MAX_KEY: usize = 128;
/// How many recent sends `get_status` reports.
pub(crate) const STATUS_SENDS: usize = 10;

/// What is left of a frame after [`ConnSession::now`].
pub(crate) enum Later {
    /// Nothing: it was handled.
    Done,
    /// All of it: [`ConnSession::handle`] it.
    Frame(ClientFrame),
    /// A checked message to [`ConnSession::queue`] once the store's queue has room.
    Queue(Append),
}

/// What one connection has claimed and how to reach it.
pub struct ConnSession {
    /// The connection's outbound queue.
    pub(crate) outbox: Outbox,
    /// Remote address.
    pub(crate) addr: SocketAddr,
    /// The id this connection holds, once registered.
    pub(crate) id: Option<SessionId>,
    /// Pinged by the router when someone else asks for our name.
    pub(crate) probe: Arc<Notify>,
    /// Whether the connection presented the hub token (always true on an open hub).
    pub(crate) authorized: bool,
    /// The session whose mail this connection watches (`watch`).
    pub(crate) watching: Option<SessionId>,
    /// This connection follows the operator feed (`subscribe`).
    pub(crate) subscribed: bool,
    /// Whether this connection is the hub's operator, decided by [`operator::decide`] from its
    /// upgrade request, and again when it shows the token in a frame: it may follow the feed
    /// (`subscribe`) and read every session's tasks.
    pub(crate) operator: Result<Operator, Denied>,
    /// The frame budget charge of the frame being handled (a `message` takes it into the
    /// store queue, so its bytes count until they are committed; see `crate::budget`).
    pub(crate) charge: Option<Charge>,
    /// The name held was made up for this one connection (`register.transient`): forget it
    /// when the connection ends, unless direct mail to it waits.
    pub(crate) transient: bool,
    /// Approval prompts this connection filed and waits for, with the session each is for
    /// (closed when it ends; bounded by `approvals::PER_CONNECTION`, and per session by
    /// `approvals::PER_SESSION`).
    pub(crate) filed: Vec<(u64, SessionId)>,
    /// This connection's `approval_file` rate (`approvals::FILE_RATE`), made by its first
    /// filing.
    pub(crate) filing: Option<crate::limits::TokenBucket>,
}

impl ConnSession {
    /// A fresh, unregistered connection.
    pub fn new(outbox: Outbox, addr: SocketAddr, authorized: bool) -> Self {
        Self {
            outbox,
            addr,
            id: None,
            probe: Arc::new(Notify::new()),
            authorized,
            watching: None,
            subscribed: false,
            operator: Err(Denied::NeedToken),
            charge: None,
            transient: false,
            filed: Vec::new(),
            filing: None,
        }
    }

    /// Answers a frame that arrived over the connection's frame rate; it was not processed.
    pub(crate) fn rate_limited(
        &self,
        rid: Option<RequestId>,
        wait: std::time::Duration,
        rate: f64,
    ) {
        let ms = retry_ms(wait);
        self.reply(ServerFrame::Error(ErrorFrame {
            message: format!(
                "rate limited: over {rate} frames/s on this connection; this frame was NOT processed, retry in {ms} ms"
            ),
            code: Some(codes::RATE_LIMITED.into()),
            retry_after_ms: Some(ms),
            rid,
        }));
    }

    pub(crate) fn reply(&self, frame: ServerFrame) {
        let _ = self.outbox.push_json(&frame);
    }

    /// Queues an `error` frame.
    pub(crate) fn error(&self, code: &str, message: impl Into<String>, rid: Option<RequestId>) {
        self.reply(ServerFrame::Error(ErrorFrame {
            message: message.into(),
            code: Some(code.to_string()),
            retry_after_ms: None,
            rid,
        }));
    }

    /// Answers a frame that failed to parse.
    pub fn parse_error(&self, e: ParseError) {
        self.error(e.code, e.message, e.rid);
    }

    /// Answers a request the store could not serve (`unavailable`).
    pub(crate) fn store_error(&self, e: StoreError, rid: Option<RequestId>) {
        self.error(
            codes::UNAVAILABLE,
            format!("hub store unavailable: {e}"),
            rid,
        );
    }

    pub(crate) fn registered_id(&self, what: &str, rid: &Option<RequestId>) -> Option<SessionId> {
        if self.id.is_none() {
            self.error(
                codes::NOT_REGISTERED,
                format!("register before {what} (send {{\"type\":\"register\",\"clientId\":\"NAME\"}} first)"),
                rid.clone(),
            );
        }
        self.id.clone()
    }

    /// Checks the hub token for a connection that has not presented it yet. Returns false
    /// (after answering) when the frame must not be processed.
    fn authorize(&mut self, hub: &HubState, frame: &ClientFrame) -> bool {
        let expected = hub.config.token.as_ref().map_or("", |t| t.expose());
        let presented = match frame {
            ClientFrame::Register(r) => r.token.as_deref(),
            ClientFrame::Release(r) => r.token.as_deref(),
            ClientFrame::Watch(w) => w.token.as_deref(),
            ClientFrame::Subscribe(s) => s.token.as_deref(),
            ClientFrame::Forget(f) => f.token.as_deref(),
            ClientFrame::ApprovalFile(a) => a.token.as_deref(),
            _ => None,
        };
        match presented {
            Some(t) if token_ok(expected, t) => {
                self.authorized = true;
                self.operator = operator::decide(
                    hub.config.token.as_ref().map(HubToken::expose),
                    &operator::Claim {
                        peer: self.addr.ip(),
                        host: None,
                        origin: None,
                        tls: hub.tls.is_some(),
                        key: Key::Token(t),
                    },
                );
                true
            }
            Some(_) => {
                let why = "invalid hub token";
                hub.refusals
                    .warn(self.addr, "invalid hub token presented in a frame: closing");
                match frame {
                    ClientFrame::Register(r) => {
                        self.reply(ServerFrame::RegisterRejected(RegisterRejected {
                            client_id: r.client_id.clone().unwrap_or_default(),
                            reason: why.into(),
                            code: Some(codes::UNAUTHORIZED.into()),
                            rid: r.rid.clone(),
                        }))
                    }
                    other => self.error(codes::UNAUTHORIZED, why, other.rid().cloned()),
                }
                // Guessing costs a connection (and registrations are rate-limited per address).
                self.outbox.finish(1008, why);
                false
            }
            None => {
                self.error(
                    codes::UNAUTHORIZED,
                    "this hub requires a token: send it as `token` on register, or as an \
                     `Authorization: Bearer` header on the WebSocket upgrade",
                    frame.rid().cloned(),
                );
                false
            }
        }
    }

    /// Whether this connection must still show the hub token before its frames are handled
    /// (never, on a hub without one).
    fn awaits_token(&self, hub: &HubState) -> bool {
        !self.authorized && hub.config.token.is_some()
    }

    /// Handles one frame that [`now`](Self::now) could not. The reader boxes this future for
    /// the frame's life; the rarer handlers are boxed again inside it so it stays the size of
    /// `message` (a reply, or an unauthorized connection's), not of the biggest handler.
    pub async fn handle(&mut self, hub: &HubState, frame: ClientFrame) {
        if self.awaits_token(hub) && !self.authorize(hub, &frame) {
            return;
        }
        match frame {
            ClientFrame::Register(r) => Box::pin(self.register(hub, r)).await,
            ClientFrame::Message(m) => self.message(hub, m).await,
            ClientFrame::GetHistory(q) => Box::pin(self.history(hub, q)).await,
            ClientFrame::GetPeers(b) => self.reply(ServerFrame::Peers(Peers {
                peers: hub.router.online_listed(self.id.as_ref()),
                self_id: self.id.as_ref().map(|i| i.to_string()),
                rid: b.rid,
            })),
            ClientFrame::GetSessions(q) => Box::pin(self.sessions(hub, q)).await,
            ClientFrame::Ping(b) => self.reply(ServerFrame::Pong(Pong {
                timestamp: now_ms(),
                version: Some(crate::VERSION.to_string()),
                rid: b.rid,
            })),
            ClientFrame::Receive(r) => Box::pin(self.receive(hub, r)).await,
            ClientFrame::MarkRead(m) => Box::pin(self.mark_read(hub, m)).await,
            ClientFrame::GetStatus(b) => Box::pin(self.status(hub, b.rid)).await,
            ClientFrame::Release(r) => Box::pin(self.release(hub, r)).await,
            ClientFrame::Watch(w) => Box::pin(self.watch(hub, w)).await,
            ClientFrame::Subscribe(s) => Box::pin(crate::subscribe::handle(self, hub, s)).await,
            ClientFrame::Forget(f) => Box::pin(self.forget(hub, f)).await,
            ClientFrame::Search(q) => Box::pin(self.search(hub, q)).await,
            f @ (ClientFrame::TaskCreate(_)
            | ClientFrame::TaskAct(_)
            | ClientFrame::TaskList(_)
            | ClientFrame::TaskGet(_)
            | ClientFrame::BlobPut(_)
            | ClientFrame::TaskBundle(_)
            | ClientFrame::TaskReserve(_)) => {
                Box::pin(crate::tasks::handle::frame(self, hub, f)).await
            }
            ClientFrame::ApprovalFile(a) => {
                Box::pin(crate::approvals::frames::file(self, hub, a)).await
            }
            ClientFrame::ApprovalClose(c) => {
                Box::pin(crate::approvals::frames::close(self, hub, c)).await
            }
        }
    }

    /// `forget`: drops an offline session from the table. Who may: for an owned name, only
    /// whoever presents its owner secret; for a name nobody owns, any client (anyone could
    /// claim that name and read its mail anyway). A session held by a connection — online,
    /// or registering right now — is never forgotten.
    async fn forget(&mut self, hub: &HubState, f: wire::Forget) {
        let id = match SessionId::parse(&f.client_id) {
            Ok(id) => id,
            Err(e) => {
                return self.error(codes::INVALID_ID, format!("invalid clientId: {e}"), f.rid);
            }
        };
        let secret = f.owner_secret;
        let router = hub.router.clone();
        let result = {
            let id = id.clone();
            // Checked on the store thread, after any registration queued before it.
            hub.store
                .call(move |b| {
                    if router.is_held(id.as_str()) {
                        return Ok(Forgot::Online);
                    }
                    match b.owner_hash(id.as_str())? {
                        Some(h) if secret.as_deref().is_some_and(|s| secret_matches(&h, s)) => {}
                        Some(_) => return Ok(Forgot::NotOwner(secret.is_some())),
                        None => {}
                    }
                    Ok(if b.forget_session(id.as_str())? {
                        Forgot::Done
                    } else {
                        Forgot::Unknown
                    })
                })
                .await
        };
        match result {
            Ok(Forgot::Done) => {
                tracing::info!(%id, addr = %self.addr, "session forgotten");
                self.reply(ServerFrame::Forgotten(Forgotten {
                    client_id: id.to_string(),
                    rid: f.rid,
                }))
            }
            Ok(Forgot::Online) => self.error(
                codes::NAME_IN_USE,
                format!("{id} is online: only an offline session can be forgotten"),
                f.rid,
            ),
            Ok(Forgot::NotOwner(presented)) => self.error(
                codes::NOT_OWNER,
                if presented {
                    format!("wrong owner secret for {id}")
                } else {
                    format!("{id} is owned: forgetting it needs its owner secret")
                },
                f.rid,
            ),
            Ok(Forgot::Unknown) => self.error(
                codes::NOT_FOUND,
                format!("the hub knows no session {id}"),
                f.rid,
            ),
            Err(e) => self.store_error(e, f.rid),
        }
    }

    async fn release(&mut self, hub: &HubState, r: wire::Release) {
        let id = match SessionId::parse(&r.client_id) {
            Ok(id) => id,
            Err(e) => {
                return self.error(codes::INVALID_ID, format!("invalid clientId: {e}"), r.rid);
            }
        };
        let secret = r.owner_secret;
        let result = {
            let id = id.clone();
            hub.store
                .call(move |b| match b.owner_hash(id.as_str())? {
                    Some(h) if secret_matches(&h, &secret) => {
                        b.release_owner(id.as_str()).map(Some)
                    }
                    Some(_) => Ok(None),
                    None => Ok(Some(false)),
                })
                .await
        };
        match result {
            Ok(Some(_)) => {
                tracing::info!(%id, "name released");
                self.reply(ServerFrame::Released(Released {
                    client_id: id.to_string(),
                    rid: r.rid,
                }))
            }
            Ok(None) => self.error(
                codes::NOT_OWNER,
                format!("wrong owner secret for {id}"),
                r.rid,
            ),
            Err(e) => self.store_error(e, r.rid),
        }
    }

    async fn watch(&mut self, hub: &HubState, w: wire::Watch) {
        let id = match SessionId::parse(&w.client_id) {
            Ok(id) => id,
            Err(e) => {
                return self.error(codes::INVALID_ID, format!("invalid clientId: {e}"), w.rid);
            }
        };
        let secret = w.owner_secret;
        let checked = {
            let id = id.clone();
            hub.store
                .call(move |b| {
                    if let Some(h) = b.owner_hash(id.as_str())?
                        && !secret.as_deref().is_some_and(|s| secret_matches(&h, s))
                    {
                        return Ok(None);
                    }
                    Ok(Some((
                        b.unread_count(id.as_str())?,
                        b.unread_senders(id.as_str(), 10)?,
                        b.session(id.as_str())?.is_some(),
                    )))
                })
                .await
        };
        let (unread, from, known) = match checked {
            Ok(Some(v)) => v,
            Ok(None) => {
                return self.error(
                    codes::NOT_OWNER,
                    format!("{id} is owned: watching its mail needs its owner secret"),
                    w.rid,
                );
            }
            Err(e) => return self.store_error(e, w.rid),
        };
        if let Some(old) = self.watching.take() {
            hub.router.unwatch(&old, self.outbox.id());
        }
        if let Err(max) = hub.router.watch(&id, self.outbox.clone()) {
            return self.error(
                codes::TOO_LARGE,
                format!("{id} already has {max} watchers"),
                w.rid,
            );
        }
        self.watching = Some(id.clone());
        self.reply(ServerFrame::Watching(Watching {
            client_id: id.to_string(),
            unread,
            from,
            known: Some(known),
            rid: w.rid,
        }));
    }

    /// Handles a frame at once when that needs no waiting — a `message` without `replyTo`
    /// (a reply asks the store first) while the store's queue has room — so the reader
    /// builds no future for it: [`handle`](Self::handle)'s is ~1.7 KiB, and allocating and
    /// copying it for every frame was ~4 % of the network thread's samples per delivery
    /// (docs/BENCHMARKS.md, "Routing"). Returns what is left to wait for.
    pub(crate) fn now(&mut self, hub: &HubState, frame: ClientFrame) -> Later {
        let ClientFrame::Message(m) = frame else {
            return Later::Frame(frame);
        };
        if self.awaits_token(hub) || reply_of(&m).is_some() {
            return Later::Frame(ClientFrame::Message(m));
        }
        let Some((from, to)) = self.check_message(hub, &m) else {
            return Later::Done;
        };
        match hub.store.try_append(self.append_of(from, to, m, None)) {
            Ok(()) => Later::Done,
            Err(TryAppend::Full(append)) => Later::Queue(append),
            Err(TryAppend::Closed(append)) => {
                self.store_error(StoreError::Closed, append.ack.rid);
                Later::Done
            }
        }
    }

    /// Queues a checked message once the store's queue has room (see [`now`](Self::now)).
    pub(crate) async fn queue(&self, hub: &HubState, append: Append) {
        let rid = append.ack.rid.clone();
        if let Err(e) = hub.store.append(append).await {
            self.store_error(e, rid);
        }
    }

    async fn message(&mut self, hub: &HubState, m: SendMessage) {
        let Some((from, to)) = self.check_message(hub, &m) else {
            return;
        };
        let reply = match reply_of(&m) {
            None => None,
            Some(r) => match self.reply_to(hub, &from, r).await {
                Ok(reply) => Some(reply),
                Err((code, why)) => return self.error(code, why, m.rid),
            },
        };
        let append = self.append_of(from, to, m, reply);
        self.queue(hub, append).await;
    }

    /// The sender and recipient of a `message` frame, once its sender is registered and its
    /// recipient, size and key are valid; otherwise the client is told why and `None`.
    fn check_message(&self, hub: &HubState, m: &SendMessage) -> Option<(SessionId, Arc<str>)> {
        let from = self.registered_id("sending messages", &m.rid)?;
        let to = match m.to.as_deref() {
            None | Some("") => BROADCAST,
            Some(t) if t == BROADCAST => BROADCAST,
            Some(t) => match validate(t) {
                Ok(()) => t,
                Err(e) => {
                    self.error(
                        codes::INVALID_ID,
                        format!("invalid recipient {t:?}: {e}"),
                        m.rid.clone(),
                    );
                    return None;
                }
            },
        };
        if m.content.len() > hub.config.max_content_bytes {
            self.error(
                codes::TOO_LARGE,
                format!(
                    "content is {} bytes; the limit is {} — send a file path or commit instead",
                    m.content.len(),
                    hub.config.max_content_bytes
                ),
                m.rid.clone(),
            );
            return None;
        }
        if let Some(k) = &m.key
            && (k.is_empty() || k.len() > MAX_KEY)
        {
            self.error(
                codes::BAD_FRAME,
                format!("key must be 1 to {MAX_KEY} bytes, got {}", k.len()),
                m.rid.clone(),
            );
            return None;
        }
        Some((from, Arc::from(to)))
    }

    /// The store's request for a checked message; it carries the frame's budget charge.
    fn append_of(
        &mut self,
        from: SessionId,
        to: Arc<str>,
        m: SendMessage,
        reply: Option<Reply>,
    ) -> Append {
        Append {
            msg: NewMessage {
                from: Arc::from(from.as_str()),
                to,
                content: m.content,
                ts: now_ms(),
                key: m.key,
                delivered_at: None,
                reply,
            },
            ack: AckTo {
                outbox: self.outbox.clone(),
                rid: m.rid,
            },
            _charge: self.charge.take(),
        }
    }

    /// Places a reply: the message `id` must be one `from` can see (its own send, mail to
    /// it, a broadcast). An unknown id and one of another pair's direct messages get the same
    /// refusal, so a refusal says nothing about other sessions' mail.
    async fn reply_to(
        &self,
        hub: &HubState,
        from: &SessionId,
        id: &str,
    ) -> Result<Reply, (&'static str, String)> {
        let refused = || {
            (
                codes::NOT_FOUND,
                format!(
                    "message NOT stored: replyTo {:?} is no message you can see (your own \
                     sends, mail to you and broadcasts); check the id (relay_receive shows it)",
                    id.chars().take(80).collect::<String>()
                ),
            )
        };
        let Some(seq) = parse_message_id(&hub.store.epoch(), id) else {
            return Err(refused());
        };
        let viewer = from.clone();
        match hub
            .store
            .call(move |b| b.thread_of(viewer.as_str(), seq))
            .await
        {
            Ok(Some(thread)) => Ok(Reply { to: seq, thread }),
            Ok(None) => Err(refused()),
            Err(e) => Err((
                codes::UNAVAILABLE,
                format!("message NOT stored: hub store unavailable: {e}"),
            )),
        }
    }

    async fn history(&mut self, hub: &HubState, q: GetHistory) {
        let Some(viewer) = self.registered_id("reading history", &q.rid) else {
            return;
        };
        for (field, v) in [("from", &q.from), ("to", &q.to)] {
            if let Some(v) = v
                && v != BROADCAST
                && let Err(e) = validate(v)
            {
                return self.error(
                    codes::INVALID_ID,
                    format!("invalid {field} {v:?}: {e}"),
                    q.rid,
                );
            }
        }
        let epoch = hub.store.epoch();
        let thread = match q.thread.as_deref().filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => match parse_message_id(&epoch, t) {
                Some(seq) => Some(seq),
                None => {
                    return self.error(
                        codes::BAD_FRAME,
                        format!(
                            "thread {:?} is not a message id of this hub (ids look like \
                             {epoch}-42)",
                            t.chars().take(80).collect::<String>()
                        ),
                        q.rid,
                    );
                }
            },
        };
        let after = match q.after.as_deref() {
            None | Some("") => After::Latest,
            Some(a) => match parse_message_id(&epoch, a) {
                Some(seq) => After::Seq(seq),
                None => match parse_iso(a) {
                    Some(t) => After::Time(t),
                    None => {
                        // Unknown position (another epoch, a garbled id): say so, replay nothing.
                        return self.reply(ServerFrame::History(History {
                            messages: vec![],
                            cursor: None,
                            unknown_cursor: true,
                            more: false,
                            rid: q.rid,
                        }));
                    }
                },
            },
        };
        let query = HistoryQuery {
            from: q.from,
            to: q.to,
            after,
            inbound_only: q.inbound_only.unwrap_or(false),
            thread,
            count: page_size(q.count, hub),
            max_bytes: hub.config.max_page_bytes,
        };
        let page = hub
            .store
            .call(move |b| {
                let page = b.history(viewer.as_str(), &query)?;
                Ok((page.more, crate::tasks::envelopes(b, page.messages)))
            })
            .await;
        match page {
            Ok((more, messages)) => {
                let cursor = messages
                    .last()
                    .map(|m| m.id.clone())
                    .or(q.after.filter(|a| !a.is_empty()));
                self.reply(ServerFrame::History(History {
                    messages,
                    cursor,
                    unknown_cursor: false,
                    more,
                    rid: q.rid,
                }))
            }
            Err(e) => self.store_error(e, q.rid),
        }
    }

    /// One page of the session table (see [`listing`]): at most `limit` sessions and the
    /// hub's page budget in bytes, so the reply stays bounded however many sessions exist.
    async fn sessions(&mut self, hub: &HubState, q: wire::GetSessions) {
        let limit = q.limit.map_or(listing::PAGE_MAX, |n| {
            (n as usize).clamp(1, listing::PAGE_MAX)
        });
        let cursor = match q.after.as_deref().filter(|a| !a.is_empty()) {
            None => listing::Cursor::Start,
            Some(a) => match listing::Cursor::parse(a) {
                Some(c) => c,
                None => {
                    return self.error(
                        codes::BAD_FRAME,
                        "after is not a cursor from this hub: pass the `next` of the previous \
                         sessions page, or leave it out for the first page",
                        q.rid,
                    );
                }
            },
        };
        let router = hub.router.clone();
        let max_bytes = hub.config.max_page_bytes;
        let reader = self.id.clone();
        let page = hub
            .store
            .call(move |b| listing::page(b, &router, &cursor, limit, max_bytes, reader.as_ref()))
            .await;
        match page {
            Ok(p) => self.reply(ServerFrame::Sessions(Sessions {
                sessions: p.sessions,
                self_id: self.id.as_ref().map(|i| i.to_string()),
                total: Some(p.total),
                online: Some(p.online),
                next: p.next,
                rid: q.rid,
            })),
            Err(e) => self.store_error(e, q.rid),
        }
    }

    async fn receive(&mut self, hub: &HubState, r: wire::Receive) {
        let Some(viewer) = self.registered_id("receiving", &r.rid) else {
            return;
        };
        if let Some(f) = &r.from
            && let Err(e) = validate(f)
        {
            return self.error(codes::INVALID_ID, format!("invalid from {f:?}: {e}"), r.rid);
        }
        let count = page_size(r.count, hub);
        let max_bytes = hub.config.max_page_bytes;
        let from = r.from;
        let now = now_ms();
        let page = hub
            .store
            .call(move |b| {
                let page = b.inbox(viewer.as_str(), from.as_deref(), count, max_bytes)?;
                // Handing mail to a live connection of its recipient is delivering it (when
                // the store can record that; reading works without it).
                let marks: Vec<(u64, Option<i64>)> =
                    page.messages.iter().map(|m| (m.seq, Some(now))).collect();
                if let Err(e) = b.mark_delivered(&marks) {
                    tracing::warn!(viewer = %viewer, "delivery not recorded: {e}");
                }
                Ok((page.remaining, crate::tasks::envelopes(b, page.messages)))
            })
            .await;
        let epoch = hub.store.epoch();
        if let (Ok((_, messages)), Some(me)) = (&page, &self.id) {
            hub.feed
                .delivered(me.as_str(), messages.iter().map(|m| m.seq));
        }
        match page {
            Ok((remaining, messages)) => self.reply(ServerFrame::Inbox(Inbox {
                messages,
                remaining,
                epoch: Some(epoch.to_string()),
                rid: r.rid,
            })),
            Err(e) => self.store_error(e, r.rid),
        }
    }

    async fn mark_read(&mut self, hub: &HubState, m: wire::MarkRead) {
        let Some(viewer) = self.registered_id("marking messages read", &m.rid) else {
            return;
        };
        if m.seqs.len() > MAX_MARK {
            return self.error(
                codes::TOO_LARGE,
                format!(
                    "mark_read takes at most {MAX_MARK} seqs per frame, got {}",
                    m.seqs.len()
                ),
                m.rid,
            );
        }
        let seqs = m.seqs;
        let now = now_ms();
        let watched = hub.feed.active().then(|| seqs.clone());
        match hub
            .store
            .call(move |b| b.mark_read(viewer.as_str(), &seqs, now))
            .await
        {
            Ok((marked, unread)) => {
                if let (Some(seqs), Some(me)) = (watched, &self.id) {
                    hub.feed.read(me.as_str(), seqs, unread);
                }
                self.reply(ServerFrame::Marked(Marked {
                    marked,
                    unread,
                    rid: m.rid,
                }))
            }
            Err(e) => self.store_error(e, m.rid),
        }
    }

    async fn status(&mut self, hub: &HubState, rid: Option<RequestId>) {
        let Some(me) = self.registered_id("asking for status", &rid) else {
            return;
        };
        let result = hub
            .store
            .call(move |b| {
                Ok((
                    b.unread_count(me.as_str())?,
                    b.recent_sends(me.as_str(), STATUS_SENDS)?,
                ))
            })
            .await;
        match result {
            Ok((unread, sends)) => self.reply(ServerFrame::Status(Status {
                self_id: self.id.as_ref().map(|i| i.to_string()),
                unread,
                epoch: hub.store.epoch().to_string(),
                sends,
                rid,
            })),
            Err(e) => self.store_error(e, rid),
        }
    }

    /// The connection ended: free its name, tell the others, remember when it was seen.
    pub fn disconnected(&mut self, hub: &HubState) {
        if let Some(w) = self.watching.take() {
            hub.router.unwatch(&w, self.outbox.id());
        }
        let filed = std::mem::take(&mut self.filed)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let who = self
            .id
            .as_ref()
            .map_or_else(|| "its filer".to_string(), |i| i.to_string());
        crate::approvals::filer_left(hub, filed, who);
        let Some(id) = self.id.take() else { return };
        if hub.router.release(&id, self.outbox.id()) {
            hub.router.announce(&id, false);
            let now = now_ms();
            let sid = id.clone();
            let transient = self.transient;
            let max = hub.config.max_sessions;
            let router = hub.router.clone();
            // Deferred: a storm of disconnects shares one commit, as registrations do.
            if !hub.store.try_call_deferred(move |b| {
                let _ = b.session_left(sid.as_str(), now);
                // A made-up name nobody will claim again: gone with its connection, unless
                // mail to it waits (then it stays listed, and owned, until forgotten).
                if transient && !router.is_held(sid.as_str()) {
                    let _ = b.forget_if_idle(sid.as_str());
                }
                // The bound on the table: the least recently seen offline sessions go.
                let _ = b.trim_sessions(max, &|id| router.is_held(id));
            }) {
                tracing::warn!(%id, "store queue full: last-seen time not recorded");
            }
            session_line(hub, &id, self.addr, "disconnected");
        }
    }
}

/// Logs a session coming or going (`what`: `registered`, `disconnected`) within the hub's
/// budget for such lines (`log_budget`): each one normally, a sample and a count in a storm.
fn session_line(hub: &HubState, id: &SessionId, addr: SocketAddr, what: &str) {
    match hub.session_lines.allow(std::time::Instant::now()) {
        Some(0) => tracing::info!(%id, %addr, "{what}"),
        Some(skipped) => tracing::info!(%id, %addr, skipped, "{what}"),
        None => {}
    }
}

/// The message id a `message` answers, if it names one (an empty `replyTo` names none).
fn reply_of(m: &SendMessage) -> Option<&str> {
    m.reply_to.as_deref().filter(|r| !r.is_empty())
}

/// A token bucket's wait in whole milliseconds, rounded up (at least 1): a client that waits
/// exactly this long must find a token there.
fn retry_ms(wait: std::time::Duration) -> u64 {
    u64::try_from(wait.as_micros().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Why a claim of an owned name was refused.
fn not_owner_reason(id: &SessionId, presented: bool) -> String {
    if presented {
        format!("wrong owner secret for {id}")
    } else {
        format!(
            "{id} is owned: claims must present its owner secret \
             (~/.claude-relay/owners/{id} on the machine that claimed it). \
             Copy that file here, or free the name there with \
             `claude-relay sessions release {id}`"
        )
    }
}

/// What the store said about a `forget`.
enum Forgot {
    Done,
    /// A connection holds the name.
    Online,
    /// The name is owned; whether a (wrong) secret was presented.
    NotOwner(bool),
    /// Nothing by that name.
    Unknown,
}

fn page_size(count: Option<u32>, hub: &HubState) -> usize {
    match count {
        None | Some(0) => DEFAULT_COUNT,
        Some(n) => (n as usize).min(hub.config.max_page),
    }
}
