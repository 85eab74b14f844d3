//! What each client frame does. One [`ConnSession`] per connection holds what the
//! connection has claimed; [`ConnSession::handle`] takes one parsed frame, consults the
//! router and the store, and queues the reply on the connection's outbox.
//!
//! Every reply echoes the request's `rid`. Every refusal is an `error` (or
//! `register_rejected`) frame that says what was wrong; the connection stays open.

use std::{net::SocketAddr, sync::Arc};

use sessions::{
    BROADCAST, SessionId,
    id::validate,
    time::{now_ms, parse_iso},
    wire::{
        self, ClientFrame, ErrorFrame, Forgotten, GetHistory, History, Inbox, Marked, Meta, Peers,
        Pong, PresenceMode, Register, RegisterRejected, Registered, Released, RequestId,
        SendMessage, ServerFrame, Sessions, Status, Watching, codes,
    },
};
use tokio::sync::Notify;

use crate::{
    HubState,
    auth::{hash_secret, mint_secret, secret_matches, token_ok},
    budget::Charge,
    frames::{self, RegisteredOut},
    listing,
    operator::{self, Denied, Key, Operator},
    outbound::{AckTo, Outbox},
    parse::ParseError,
    presence,
    refusals::loggable,
    router::Peer,
    store::{After, Append, HistoryQuery, NewMessage, StoreError, parse_message_id},
};

/// Default page size of `get_history` and `receive` (the Node relay's).
pub const DEFAULT_COUNT: usize = 10;
/// Most seqs one `mark_read` may carry.
pub const MAX_MARK: usize = 1000;
/// Most unread messages pushed right after `registered` to a client that asks for its
/// backlog.
pub const BACKLOG: usize = sessions::wire::BACKLOG_MAX as usize;
/// Longest idempotency key of a `message`.
pub const MAX_KEY: usize = 128;
/// How many recent sends `get_status` reports.
pub const STATUS_SENDS: usize = 10;

/// What one connection has claimed and how to reach it.
pub struct ConnSession {
    /// The connection's outbound queue.
    pub outbox: Outbox,
    /// Remote address.
    pub addr: SocketAddr,
    /// The id this connection holds, once registered.
    pub id: Option<SessionId>,
    /// Pinged by the router when someone else asks for our name.
    pub probe: Arc<Notify>,
    /// Whether the connection presented the hub token (always true on an open hub).
    pub authorized: bool,
    /// The session whose mail this connection watches (`watch`).
    pub watching: Option<SessionId>,
    /// This connection follows the operator feed (`subscribe`).
    pub subscribed: bool,
    /// Whether this connection is the hub's operator, decided by [`operator::decide`] from its
    /// upgrade request, and again when it shows the token in a frame: it may follow the feed
    /// (`subscribe`) and read every session's tasks.
    pub operator: Result<Operator, Denied>,
    /// The frame budget charge of the frame being handled (a `message` takes it into the
    /// store queue, so its bytes count until they are committed; see `crate::budget`).
    pub charge: Option<Charge>,
    /// The name held was made up for this one connection (`register.transient`): forget it
    /// when the connection ends, unless direct mail to it waits.
    pub transient: bool,
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
        }
    }

    /// Answers a frame that arrived over the connection's frame rate; it was not processed.
    pub fn rate_limited(&self, rid: Option<RequestId>, wait: std::time::Duration, rate: f64) {
        let ms = wait.as_millis().max(1) as u64;
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
    pub fn error(&self, code: &str, message: impl Into<String>, rid: Option<RequestId>) {
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

    fn store_error(&self, e: StoreError, rid: Option<RequestId>) {
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
        let expected = hub.config.token.as_deref().unwrap_or_default();
        let presented = match frame {
            ClientFrame::Register(r) => r.token.as_deref(),
            ClientFrame::Release(r) => r.token.as_deref(),
            ClientFrame::Watch(w) => w.token.as_deref(),
            ClientFrame::Subscribe(s) => s.token.as_deref(),
            ClientFrame::Forget(f) => f.token.as_deref(),
            _ => None,
        };
        match presented {
            Some(t) if token_ok(expected, t) => {
                self.authorized = true;
                self.operator = operator::decide(
                    hub.config.token.as_deref(),
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

    /// Handles one frame. The rarer handlers are boxed so the future every connection keeps
    /// alive between frames stays the size of the common path (`message`), not of the
    /// biggest handler.
    pub async fn handle(&mut self, hub: &HubState, frame: ClientFrame) {
        if !self.authorized && hub.config.token.is_some() && !self.authorize(hub, &frame) {
            return;
        }
        match frame {
            ClientFrame::Register(r) => Box::pin(self.register(hub, r)).await,
            ClientFrame::Message(m) => self.message(hub, m).await,
            ClientFrame::GetHistory(q) => Box::pin(self.history(hub, q)).await,
            ClientFrame::GetPeers(b) => self.reply(ServerFrame::Peers(Peers {
                peers: hub.router.online(),
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
            f @ (ClientFrame::TaskCreate(_)
            | ClientFrame::TaskAct(_)
            | ClientFrame::TaskList(_)
            | ClientFrame::TaskGet(_)
            | ClientFrame::BlobPut(_)
            | ClientFrame::TaskBundle(_)
            | ClientFrame::TaskReserve(_)) => {
                Box::pin(crate::tasks::handle::frame(self, hub, f)).await
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

    async fn register(&mut self, hub: &HubState, r: Register) {
        let rid = r.rid;
        let asked = r.client_id.unwrap_or_default();
        let reject = |code: &str, reason: String| {
            hub.refusals.info(
                self.addr,
                &format!("register {} ({code}): {reason}", loggable(&asked)),
            );
            ServerFrame::RegisterRejected(RegisterRejected {
                client_id: asked.clone(),
                reason,
                code: Some(code.to_string()),
                rid: rid.clone(),
            })
        };
        let id = match SessionId::parse(&asked) {
            Ok(id) => id,
            Err(e) if asked.is_empty() => {
                let _ = e;
                return self.reply(reject(
                    codes::INVALID_ID,
                    "register needs a clientId (letters, digits, '_' or '-', starting with a letter)".into(),
                ));
            }
            Err(e) => {
                return self.reply(reject(codes::INVALID_ID, format!("invalid clientId: {e}")));
            }
        };
        if let Some(held) = &self.id {
            if *held == id {
                // Registering twice under the same name is harmless: confirm again.
                let unread = hub.store.call({
                    let id = id.clone();
                    move |b| b.unread_count(id.as_str())
                });
                let unread = unread.await.ok();
                return self.reply(ServerFrame::Registered(Registered {
                    client_id: id.to_string(),
                    peers: others(hub, &id),
                    epoch: Some(hub.store.epoch().to_string()),
                    unread,
                    owner_secret: None,
                    owned: None,
                    rid,
                }));
            }
            return self.reply(reject(
                codes::ALREADY_REGISTERED,
                format!(
                    "this connection already holds {held}; open a new connection for another name"
                ),
            ));
        }
        if let Err(wait) = hub.limits.register(self.addr.ip()) {
            return self.reply(reject(
                codes::RATE_LIMITED,
                format!(
                    "too many registrations from your address (over {}/s); retry in {} ms",
                    hub.config.register_rate,
                    wait.as_millis().max(1)
                ),
            ));
        }
        let mut meta: Meta = r.meta.unwrap_or_default();
        let meta_len = serde_json::to_string(&meta).map(|s| s.len()).unwrap_or(0);
        if meta_len > hub.config.max_meta_bytes {
            return self.reply(reject(
                codes::TOO_LARGE,
                format!(
                    "meta is {meta_len} bytes; the limit is {}",
                    hub.config.max_meta_bytes
                ),
            ));
        }
        meta.insert("remoteAddress".into(), self.addr.ip().to_string().into());
        let now = now_ms();
        let presence = r.presence.unwrap_or(PresenceMode::Full);
        let peer = Peer {
            outbox: self.outbox.clone(),
            presence,
            addr: self.addr,
            connected_at: now,
            active: false,
            probe: self.probe.clone(),
        };
        // Claim first (a live holder is never disturbed, owner or not), then check ownership
        // and record the session in one trip to the store.
        if let Err(holder) = hub.router.claim(&id, peer) {
            // Someone who could never hold the name learns that now, not after the holder
            // leaves (the extra store trip is only paid on this refusal path).
            let owner = {
                let id = id.clone();
                hub.store.call(move |b| b.owner_hash(id.as_str())).await
            };
            if let Ok(Some(hash)) = owner
                && !r
                    .owner_secret
                    .as_deref()
                    .is_some_and(|s| secret_matches(&hash, s))
            {
                return self.reply(reject(
                    codes::NOT_OWNER,
                    not_owner_reason(&id, r.owner_secret.is_some()),
                ));
            }
            return self.reply(reject(
                codes::NAME_IN_USE,
                format!(
                    "{id} is held by a live connection from {} (registered {} ago); a name is never taken over. \
                     Pick another name, or retry once that session has ended",
                    holder.addr.ip(),
                    sessions::time::ago(holder.connected_at, now)
                ),
            ));
        }
        let meta_json = serde_json::to_string(&meta).unwrap_or_else(|_| "{}".into());
        let presented = r.owner_secret;
        let wants_secret = r.ownership == Some(true);
        let backlog = r.backlog == Some(true);
        let max_bytes = hub.config.max_page_bytes;
        let recorded = {
            let id = id.clone();
            hub.store
                .call(move |b| {
                    let owned = match b.owner_hash(id.as_str())? {
                        Some(hash) => match presented.as_deref() {
                            Some(secret) if secret_matches(&hash, secret) => true,
                            other => {
                                return Ok(Claim::NotOwner {
                                    presented: other.is_some(),
                                });
                            }
                        },
                        None => false,
                    };
                    // A store that cannot write (full disk, damaged file) must still let a
                    // session in to read its mail: what needs writing degrades, with a warning.
                    let unread = match b.session_registered(id.as_str(), &meta_json, now) {
                        Ok(unread) => unread,
                        Err(e) => {
                            tracing::warn!(%id, "session record not written ({e}): registering without it");
                            b.unread_count(id.as_str())?
                        }
                    };
                    let pending = if backlog && unread > 0 {
                        let page = b.inbox(id.as_str(), None, BACKLOG, max_bytes)?;
                        let marks: Vec<(u64, Option<i64>)> =
                            page.messages.iter().map(|m| (m.seq, Some(now))).collect();
                        if let Err(e) = b.mark_delivered(&marks) {
                            tracing::warn!(%id, "delivery of the backlog not recorded: {e}");
                        }
                        crate::tasks::envelopes(b, page.messages)
                    } else {
                        Vec::new()
                    };
                    // Last, so a secret is only ever handed out once the name is recorded: a
                    // client that keeps secrets gets one for a name nobody owns yet (and none
                    // when it cannot be recorded).
                    let minted = if !owned && wants_secret {
                        let secret = mint_secret();
                        match b.set_owner(id.as_str(), &hash_secret(&secret), now) {
                            Ok(()) => Some(secret),
                            Err(e) => {
                                tracing::warn!(%id, "owner secret not recorded ({e}): the name stays unowned");
                                None
                            }
                        }
                    } else {
                        None
                    };
                    Ok(Claim::Granted {
                        owned,
                        unread,
                        pending,
                        minted,
                    })
                })
                .await
        };
        let (owned, unread, pending, minted) = match recorded {
            Ok(Claim::Granted {
                owned,
                unread,
                pending,
                minted,
            }) => (owned, Some(unread), pending, minted),
            Ok(Claim::NotOwner { presented }) => {
                hub.router.release(&id, self.outbox.id());
                return self.reply(reject(codes::NOT_OWNER, not_owner_reason(&id, presented)));
            }
            Err(e) => {
                hub.router.release(&id, self.outbox.id());
                return self.store_error(e, rid);
            }
        };
        self.id = Some(id.clone());
        self.transient = r.transient == Some(true);
        // The whole list is the Node relay's contract (`presence: "full"`); delta clients need
        // it as the base their batches apply to; `none` clients asked not to be told.
        // (Not active yet, so the online list is exactly the others.)
        let peers = match presence {
            PresenceMode::None => Arc::from("[]"),
            _ => hub.router.online_json(),
        };
        let _ = self.outbox.push(frames::registered(&RegisteredOut {
            client_id: id.as_str(),
            peers_json: &peers,
            epoch: &hub.store.epoch(),
            unread,
            owner_secret: minted.as_deref(),
            owned: Some(owned || minted.is_some()),
            rid: rid.as_ref(),
        }));
        hub.feed
            .delivered(id.as_str(), pending.iter().map(|e| e.seq));
        for e in pending {
            let _ = self.outbox.push_json(&ServerFrame::Message(e));
        }
        hub.router.activate(&id, self.outbox.id());
        tracing::Span::current().record("session", tracing::field::display(&id));
        presence::announce_joined(&hub.router, &id);
        tracing::info!(%id, addr = %self.addr, "registered");
    }

    async fn message(&mut self, hub: &HubState, m: SendMessage) {
        let Some(from) = self.registered_id("sending messages", &m.rid) else {
            return;
        };
        let to = match m.to.as_deref() {
            None | Some("") => BROADCAST,
            Some(t) if t == BROADCAST => BROADCAST,
            Some(t) => match validate(t) {
                Ok(()) => t,
                Err(e) => {
                    return self.error(
                        codes::INVALID_ID,
                        format!("invalid recipient {t:?}: {e}"),
                        m.rid,
                    );
                }
            },
        };
        if m.content.len() > hub.config.max_content_bytes {
            return self.error(
                codes::TOO_LARGE,
                format!(
                    "content is {} bytes; the limit is {} — send a file path or commit instead",
                    m.content.len(),
                    hub.config.max_content_bytes
                ),
                m.rid,
            );
        }
        if let Some(k) = &m.key
            && (k.is_empty() || k.len() > MAX_KEY)
        {
            return self.error(
                codes::BAD_FRAME,
                format!("key must be 1 to {MAX_KEY} bytes, got {}", k.len()),
                m.rid,
            );
        }
        let append = Append {
            msg: NewMessage {
                from: Arc::from(from.as_str()),
                to: Arc::from(to),
                content: m.content,
                ts: now_ms(),
                key: m.key,
                delivered_at: None,
            },
            ack: AckTo {
                outbox: self.outbox.clone(),
                rid: m.rid.clone(),
            },
            charge: self.charge.take(),
        };
        if let Err(e) = hub.store.append(append).await {
            self.store_error(e, m.rid);
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
        let page = hub
            .store
            .call(move |b| listing::page(b, &router, &cursor, limit, max_bytes))
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
        let Some(id) = self.id.take() else { return };
        if hub.router.release(&id, self.outbox.id()) {
            presence::announce_left(&hub.router, &id);
            let now = now_ms();
            let sid = id.clone();
            let transient = self.transient;
            let max = hub.config.max_sessions;
            let router = hub.router.clone();
            if !hub.store.try_call(move |b| {
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
            tracing::info!(%id, addr = %self.addr, "disconnected");
        }
    }
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

/// What the store said about a claim.
enum Claim {
    /// The name is owned and the right secret was not presented.
    NotOwner {
        /// Whether some (wrong) secret was presented.
        presented: bool,
    },
    /// Recorded.
    Granted {
        owned: bool,
        unread: u64,
        pending: Vec<sessions::wire::Envelope>,
        minted: Option<String>,
    },
}

fn others(hub: &HubState, me: &SessionId) -> Vec<String> {
    let mut peers = hub.router.online();
    peers.retain(|p| p != me.as_str());
    peers
}

fn page_size(count: Option<u32>, hub: &HubState) -> usize {
    match count {
        None | Some(0) => DEFAULT_COUNT,
        Some(n) => (n as usize).min(hub.config.max_page),
    }
}
