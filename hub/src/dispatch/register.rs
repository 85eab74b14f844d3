//! `register`, step by step: read the name ([`claimable`]), confirm a repeat
//! ([`ConnSession::register_again`]), admit the request ([`admit`]: meta size, then the rate:
//! over it, wait for the turn when it comes within `limits::REGISTER_HOLD`), claim
//! the name in the router ([`ConnSession::claim`]: a live holder is never disturbed), record it
//! in one trip to the store ([`record_claim`]: ownership, the session row, the backlog, a new owner
//! secret), undo the claim if the store says no, and welcome the session
//! ([`ConnSession::welcome`]: `registered`, the backlog, then presence). docs/PROTOCOL.md,
//! "register".

use std::{net::SocketAddr, time::Duration};

use relay_proto::{
    SessionId,
    time::now_ms,
    wire::{
        Envelope, Meta, PresenceMode, Register, RegisterRejected, Registered, RequestId,
        ServerFrame, codes,
    },
};

use super::{BACKLOG, ConnSession, not_owner_reason, retry_ms};
use crate::presence::PROBE_TIMEOUT;

/// Beyond the probe time, how long the owner's claim waits for a silent holder's connection
/// to be torn down (its heartbeat fires at the deadline; the release follows at once).
const OWNER_WAIT_MARGIN: Duration = Duration::from_millis(500);
use crate::{
    HubState,
    auth::{hash_secret, mint_secret, secret_matches},
    frames::{self, RegisteredOut},
    outbound::to_frame,
    refusals::loggable,
    router::Peer,
    store::{Backend, StoreError},
};

/// What a `register` asked for, to word (and log) its refusal.
struct Asked<'a> {
    hub: &'a HubState,
    addr: SocketAddr,
    name: String,
    rid: Option<RequestId>,
}

impl Asked<'_> {
    /// A `register_rejected` for this request, logged as a refusal.
    fn refuse(&self, code: &str, reason: String) -> ServerFrame {
        self.hub.refusals.info(
            self.addr,
            &format!("register {} ({code}): {reason}", loggable(&self.name)),
        );
        ServerFrame::RegisterRejected(RegisterRejected {
            client_id: self.name.clone(),
            reason,
            code: Some(code.to_string()),
            rid: self.rid.clone(),
        })
    }
}

/// What the store is asked to record for a claim (moved into the store actor).
struct Record {
    id: SessionId,
    meta_json: String,
    presented: Option<String>,
    wants_secret: bool,
    backlog: bool,
    max_bytes: usize,
    now: i64,
}

/// What the store said about a claim.
enum Claim {
    /// The name is owned and the right secret was not presented.
    NotOwner {
        /// Whether some (wrong) secret was presented.
        presented: bool,
    },
    /// Recorded.
    Granted(Granted),
}

/// A claim the store recorded.
struct Granted {
    owned: bool,
    unread: u64,
    pending: Vec<Envelope>,
    minted: Option<String>,
}

impl ConnSession {
    pub(super) async fn register(&mut self, hub: &HubState, r: Register) {
        let asked = Asked {
            hub,
            addr: self.addr,
            name: r.client_id.clone().unwrap_or_default(),
            rid: r.rid.clone(),
        };
        let id = match claimable(&asked.name) {
            Ok(id) => id,
            Err(why) => return self.reply(asked.refuse(codes::INVALID_ID, why)),
        };
        if let Some(held) = self.id.clone() {
            return self.register_again(hub, &asked, held, id).await;
        }
        let meta = match admit(hub, self.addr, r.meta) {
            Ok((meta, hold)) => {
                // Over the address's rate but within `REGISTER_HOLD` of its turn: wait for
                // it here rather than refuse (the token is already taken). The frame's bytes
                // stop counting against the hub's frame budget while it waits (nobody waits
                // holding budget: `crate::budget`), and a connection the hub closed
                // meanwhile (a store reset, a dead writer) claims nothing. The reader does not
                // poll the socket meanwhile: a client that hangs up is noticed after the
                // wait, and a shutdown waits for it (both at most `REGISTER_HOLD`).
                if !hold.is_zero() {
                    self.charge = None;
                    let mut closed = self.outbox.closed_signal();
                    tokio::select! {
                        () = tokio::time::sleep(hold) => {}
                        _ = closed.wait_for(|c| *c) => return,
                    }
                }
                meta
            }
            Err((code, why)) => return self.reply(asked.refuse(code, why)),
        };
        let now = now_ms();
        let presence = r.presence.unwrap_or(PresenceMode::Full);
        if let Err(refusal) = self
            .claim(hub, &asked, &id, presence, now, r.owner_secret.as_deref())
            .await
        {
            return self.reply(refusal);
        }
        let record = Record {
            id: id.clone(),
            meta_json: serde_json::to_string(&meta).unwrap_or_else(|_| "{}".into()),
            presented: r.owner_secret,
            wants_secret: r.ownership == Some(true),
            backlog: r.backlog == Some(true),
            max_bytes: hub.config.max_page_bytes,
            now,
        };
        // Deferred: a storm of registrations shares one commit (`Request::Deferred`).
        let granted = match hub
            .store
            .call_deferred(move |b| record_claim(b, record))
            .await
        {
            Ok(Claim::Granted(granted)) => granted,
            Ok(Claim::NotOwner { presented }) => {
                hub.router.release(&id, self.outbox.id());
                return self
                    .reply(asked.refuse(codes::NOT_OWNER, not_owner_reason(&id, presented)));
            }
            Err(e) => {
                hub.router.release(&id, self.outbox.id());
                return self.store_error(e, asked.rid);
            }
        };
        self.transient = r.transient == Some(true);
        self.welcome(hub, id, presence, granted, asked.rid);
    }

    /// A `register` on a connection that already holds a name: the same name is confirmed
    /// again (harmless); another one is refused.
    async fn register_again(
        &self,
        hub: &HubState,
        asked: &Asked<'_>,
        held: SessionId,
        id: SessionId,
    ) {
        if held != id {
            return self.reply(asked.refuse(
                codes::ALREADY_REGISTERED,
                format!(
                    "this connection already holds {held}; open a new connection for another name"
                ),
            ));
        }
        let unread = {
            let id = id.clone();
            hub.store
                .call(move |b| b.unread_count(id.as_str()))
                .await
                .ok()
        };
        // The whole list, whatever the presence mode: for a stale delta client, a read that
        // turns its batches back on (`Router::online_listed`).
        let mut peers = hub.router.online_listed(Some(&id));
        peers.retain(|p| p != id.as_str());
        self.reply(ServerFrame::Registered(Registered {
            client_id: id.to_string(),
            peers,
            peers_total: None,
            epoch: Some(hub.store.epoch().to_string()),
            unread,
            owner_secret: None,
            owned: None,
            rid: asked.rid.clone(),
        }));
    }

    /// Claims `id` in the router (not yet deliverable). A live holder is never disturbed; the
    /// refusal says who holds it, or — paying a store trip only on this path — that the name
    /// is owned and the secret presented is not its own.
    ///
    /// The owner of a held name (its secret presented) is usually the holder itself coming
    /// back over a new link while the old one is half-open (a tunnel that died without a
    /// FIN). The holder was just probed; a dead one does not answer within the probe time and
    /// its heartbeat drops it, releasing the name — so the owner's claim waits that long
    /// instead of being refused "in use" and retried with backoff (docs/PROTOCOL.md,
    /// "register"). A live holder answers and keeps the name.
    async fn claim(
        &self,
        hub: &HubState,
        asked: &Asked<'_>,
        id: &SessionId,
        presence: PresenceMode,
        now: i64,
        presented: Option<&str>,
    ) -> Result<(), ServerFrame> {
        let peer = || Peer {
            outbox: self.outbox.clone(),
            presence,
            addr: self.addr,
            connected_at: now,
            active: false,
            probe: self.probe.clone(),
            presence_from: 0,
            stale: false,
        };
        let Err(mut holder) = hub.router.claim(id, peer()) else {
            return Ok(());
        };
        let owner = {
            let id = id.clone();
            hub.store.call(move |b| b.owner_hash(id.as_str())).await
        };
        match owner {
            Ok(Some(hash)) if !presented.is_some_and(|s| secret_matches(&hash, s)) => {
                return Err(
                    asked.refuse(codes::NOT_OWNER, not_owner_reason(id, presented.is_some()))
                );
            }
            Ok(Some(_)) => {
                // The owner: wait for the probed holder to answer or be dropped.
                let deadline = tokio::time::Instant::now()
                    + PROBE_TIMEOUT.min(hub.config.heartbeat_interval)
                    + OWNER_WAIT_MARGIN;
                loop {
                    let released = hub.router.released();
                    tokio::pin!(released);
                    released.as_mut().enable();
                    match hub.router.claim(id, peer()) {
                        Ok(()) => {
                            tracing::info!(%id, addr = %self.addr, "the owner reclaimed a name whose holder did not answer");
                            return Ok(());
                        }
                        Err(h) => holder = h,
                    }
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        break;
                    }
                }
            }
            _ => {}
        }
        Err(asked.refuse(
            codes::NAME_IN_USE,
            format!(
                "{id} is held by a live connection from {} (registered {} ago); a name is never \
                 taken over. Pick another name, or retry once that session has ended",
                holder.addr.ip(),
                relay_proto::time::ago(holder.connected_at, now)
            ),
        ))
    }

    /// The session is in: `registered` (the other sessions, unless it asked for no presence;
    /// its owner secret if one was minted), then its backlog, then it becomes deliverable and
    /// the others are told.
    fn welcome(
        &mut self,
        hub: &HubState,
        id: SessionId,
        presence: PresenceMode,
        granted: Granted,
        rid: Option<RequestId>,
    ) {
        self.id = Some(id.clone());
        // The whole list is the Node relay's contract (`presence: "full"`); delta clients get
        // its first page and the count (the base their batches apply to; the rest is
        // `get_sessions`), so a storm of N joins costs O(N) bytes of replies, not O(N²), and a
        // delta client given only the first page is sent no batches until it reads the rest
        // (`Peer::stale`); `none` clients asked not to be told. The router reads the list,
        // queues these frames and makes the session deliverable under one lock.
        hub.feed
            .delivered(id.as_str(), granted.pending.iter().map(|e| e.seq));
        let backlog: Vec<_> = granted
            .pending
            .into_iter()
            .map(|e| to_frame(&ServerFrame::Message(e)))
            .collect();
        let epoch = hub.store.epoch();
        let outbox = &self.outbox;
        hub.router.welcome(
            &id,
            outbox.id(),
            presence,
            hub.config.delta_peers_page,
            |peers, peers_total| {
                let _ = outbox.push(frames::registered(&RegisteredOut {
                    client_id: id.as_str(),
                    peers_json: &peers,
                    peers_total,
                    epoch: &epoch,
                    unread: Some(granted.unread),
                    owner_secret: granted.minted.as_deref(),
                    owned: Some(granted.owned || granted.minted.is_some()),
                    rid: rid.as_ref(),
                }));
                for frame in backlog {
                    let _ = outbox.push(frame);
                }
            },
        );
        tracing::Span::current().record("session", tracing::field::display(&id));
        hub.router.announce(&id, true);
        super::session_line(hub, &id, self.addr, "registered");
    }
}

/// The name asked for, if it is one a session may hold.
fn claimable(asked: &str) -> Result<SessionId, String> {
    if asked.is_empty() {
        return Err(
            "register needs a clientId (letters, digits, '_' or '-', starting with a letter)"
                .into(),
        );
    }
    SessionId::parse(asked).map_err(|e| format!("invalid clientId: {e}"))
}

/// Admits a registration from `addr`: within its address's registration rate, with metadata
/// under the hub's limit. Returns the metadata with the remote address added.
fn admit(
    hub: &HubState,
    addr: SocketAddr,
    meta: Option<Meta>,
) -> Result<(Meta, Duration), (&'static str, String)> {
    let mut meta = meta.unwrap_or_default();
    let meta_len = serde_json::to_string(&meta).map(|s| s.len()).unwrap_or(0);
    if meta_len > hub.config.max_meta_bytes {
        return Err((
            codes::TOO_LARGE,
            format!(
                "meta is {meta_len} bytes; the limit is {}",
                hub.config.max_meta_bytes
            ),
        ));
    }
    // Last, so that a request refused for its meta takes no turn.
    let hold = match hub.limits.register(addr.ip()) {
        Ok(hold) => hold,
        Err(wait) => {
            return Err((
                codes::RATE_LIMITED,
                format!(
                    "too many registrations from your address (over {}/s); retry in {} ms",
                    hub.config.register_rate,
                    retry_ms(wait)
                ),
            ));
        }
    };
    meta.insert("remoteAddress".into(), addr.ip().to_string().into());
    Ok((meta, hold))
}

/// On the store actor, in one trip: checks ownership, records the session, takes its backlog
/// (marked delivered) and, last, mints an owner secret for a client that keeps them and a
/// name nobody owns — so a secret is only ever handed out once the name is recorded. The
/// session row and the marks may wait for a commit shared with other registrations
/// (`StoreHandle::call_deferred`); a minted secret is committed before it is returned.
fn record_claim(b: &mut dyn Backend, r: Record) -> Result<Claim, StoreError> {
    let id = r.id.as_str();
    let owned = match b.owner_hash(id)? {
        Some(hash) => match r.presented.as_deref() {
            Some(secret) if secret_matches(&hash, secret) => true,
            other => {
                return Ok(Claim::NotOwner {
                    presented: other.is_some(),
                });
            }
        },
        None => false,
    };
    // A store that cannot write (full disk, damaged file) must still let a session in to read
    // its mail: what needs writing degrades, with a warning.
    let unread = match b.session_registered(id, &r.meta_json, r.now) {
        Ok(unread) => unread,
        Err(e) => {
            tracing::warn!(%id, "session record not written ({e}): registering without it");
            b.unread_count(id)?
        }
    };
    let pending = if r.backlog && unread > 0 {
        let page = b.inbox(id, None, BACKLOG, r.max_bytes)?;
        let marks: Vec<(u64, Option<i64>)> =
            page.messages.iter().map(|m| (m.seq, Some(r.now))).collect();
        if let Err(e) = b.mark_delivered(&marks) {
            tracing::warn!(%id, "delivery of the backlog not recorded: {e}");
        }
        crate::tasks::envelopes(b, page.messages)
    } else {
        Vec::new()
    };
    let minted = if !owned && r.wants_secret {
        let secret = mint_secret();
        // Committed before the secret is handed out, deferred call or not.
        match b
            .set_owner(id, &hash_secret(&secret), r.now)
            .and_then(|()| b.settle())
        {
            Ok(()) => Some(secret),
            Err(e) => {
                tracing::warn!(%id, "owner secret not recorded ({e}): the name stays unowned");
                None
            }
        }
    } else {
        None
    };
    Ok(Claim::Granted(Granted {
        owned,
        unread,
        pending,
        minted,
    }))
}
