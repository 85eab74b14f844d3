//! Claiming our name on a fresh connection, in named steps: present the owner secret we hold
//! ([`owner_secret`]), send `register`, read its answer ([`read_answer`]), then either keep
//! what the hub granted ([`accept`]) or decide what a refusal means ([`refused`]): the next
//! number for an auto-numbered id, else a reason for the tools, and a retry with backoff.

use futures_util::StreamExt;
use relay_proto::wire::{
    ClientFrame, PresenceMode, Register, RegisterRejected, Registered, RequestId, ServerFrame,
    codes,
};
use tokio_tungstenite::tungstenite::Message;

use super::{
    Inner,
    link::{Ended, Sink, Stream, write_text},
};
use crate::dial;

/// The `rid` of `register` frames (replies to it are read before normal traffic starts).
const REGISTER_RID: &str = "register";

/// What this bridge could present as the owner secret of a name.
enum Held {
    /// No owner store (this client keeps no secrets).
    NoStore,
    /// The store has no file for the name.
    Nothing(std::path::PathBuf),
    /// The secret from this file.
    File(std::path::PathBuf),
    /// The secret minted on an earlier connection, not saved yet.
    Memory,
    /// The file exists but could not be read.
    Unreadable(String),
}

/// The hub's answer to `register`.
enum Answer {
    Granted(Registered),
    Refused(RegisterRejected),
}

/// Claims our name, moving to the next number on `name_in_use` or `not_owner` when the
/// identity allows it. A minted owner secret is saved before the name is used.
pub(super) async fn register(
    inner: &Inner,
    sink: &mut Sink,
    stream: &mut Stream,
) -> Result<(), Ended> {
    loop {
        let id = inner.lock().ident.id.clone();
        let (secret, held) = owner_secret(inner, &id).await;
        let text = serde_json::to_string(&register_frame(inner, &id, secret)).unwrap_or_default();
        write_text(sink, text, inner.timeouts.request).await?;
        match read_answer(inner, stream, &id).await? {
            Answer::Granted(r) => return accept(inner, &id, r).await,
            Answer::Refused(r) => {
                let taken = matches!(
                    r.code.as_deref(),
                    Some(codes::NAME_IN_USE | codes::NOT_OWNER)
                );
                match taken.then(|| next_number(inner)).flatten() {
                    Some(next) => tracing::info!("{id} is taken; trying {next}"),
                    None => return Err(Ended::Rejected(refusal_text(inner, &id, &r, &held))),
                }
            }
        }
    }
}

fn register_frame(inner: &Inner, id: &str, owner_secret: Option<String>) -> ClientFrame {
    ClientFrame::Register(Register {
        client_id: Some(id.to_string()),
        meta: Some(inner.lock().meta.clone()),
        presence: Some(PresenceMode::None),
        // Keep owner secrets: a first claim makes the name ours.
        ownership: inner.owners.is_some().then_some(true),
        owner_secret,
        // Unread mail is pushed right after `registered` (and again after a reconnect),
        // so the channel push announces what arrived while the session was away.
        backlog: Some(true),
        transient: inner.transient.then_some(true),
        rid: Some(RequestId::Str(REGISTER_RID.into())),
        ..Default::default()
    })
}

/// Reads until the answer to `register` (within the request timeout). Frames before it are
/// dispatched as usual; an `error` for the register request ends the attempt.
async fn read_answer(inner: &Inner, stream: &mut Stream, id: &str) -> Result<Answer, Ended> {
    let limit = inner.timeouts.request;
    let read = async {
        while let Some(msg) = stream.next().await {
            let text = match msg {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(e) => return Err(Ended::Failed(format!("connection error: {e}"))),
            };
            match serde_json::from_str::<ServerFrame>(&text) {
                Ok(ServerFrame::Registered(r)) => return Ok(Answer::Granted(r)),
                Ok(ServerFrame::RegisterRejected(r)) => return Ok(Answer::Refused(r)),
                Ok(ServerFrame::Error(e)) if e.rid == Some(RequestId::Str(REGISTER_RID.into())) => {
                    return Err(if e.code.as_deref() == Some(codes::UNAUTHORIZED) {
                        Ended::Refused(format!(
                            "the hub at {} requires a token and {}: set {} or {} in this MCP \
                             server's env",
                            inner.url,
                            inner.auth.token_origin(),
                            dial::RELAY_TOKEN_ENV,
                            dial::RELAY_TOKEN_FILE_ENV
                        ))
                    } else {
                        Ended::Failed(format!(
                            "the hub refused to register {id}: {}",
                            relay_local::display::line(&e.message)
                        ))
                    });
                }
                _ => inner.dispatch(&text),
            }
        }
        Err(Ended::Failed(
            "the hub closed the connection during registration".to_string(),
        ))
    };
    match tokio::time::timeout(limit, read).await {
        Err(_) => Err(Ended::Failed(format!(
            "the hub did not answer register within {} s",
            limit.as_secs()
        ))),
        Ok(r) => r,
    }
}

/// Keeps what the hub granted: only the name asked for (auto-numbering happens by asking for
/// the next number), its owner secret saved before the name is used, then the epoch, the
/// unread count and the backlog still to come.
async fn accept(inner: &Inner, id: &str, r: Registered) -> Result<(), Ended> {
    if r.client_id != id || relay_proto::id::validate(&r.client_id).is_err() {
        return Err(Ended::Rejected(format!(
            "the server at {} answered register {id} with the name \"{}\", not the one asked \
             for; not using it (is RELAY_URL a claude-relay hub?)",
            inner.url,
            relay_local::display::line(&r.client_id.chars().take(80).collect::<String>())
        )));
    }
    // Before the name is used: a secret the hub sends exactly once.
    keep_owner_secret(inner, &r.client_id, r.owner_secret.clone()).await;
    {
        let mut s = inner.lock();
        // From now on the name is ours; a reconnect must come home to the same one.
        s.ident.base = None;
        s.granted = Some(r.client_id.clone());
        if let Some(epoch) = &r.epoch {
            s.observe_epoch(epoch);
        }
        if let Some(n) = r.unread {
            s.unread = Some(n);
            // The hub pushes up to BACKLOG_MAX of them right after `registered`.
            s.backlog_left = n.min(relay_proto::wire::BACKLOG_MAX);
        }
    }
    tracing::info!("registered as {} at {}", r.client_id, inner.url);
    Ok(())
}

/// After `name_in_use` or `not_owner`: the next numbered name to try, if this identity
/// auto-numbers (only until its first registration).
fn next_number(inner: &Inner) -> Option<String> {
    let mut s = inner.lock();
    let base = s.ident.base.clone()?;
    let next = s.ident.number.max(1) + 1;
    if next > relay_local::identity::MAX_NUMBER {
        return None;
    }
    let id = relay_local::identity::numbered(&base, next).ok()?;
    s.ident.number = next;
    s.ident.id = id.to_string();
    Some(s.ident.id.clone())
}

/// Why the hub refused our name, for the tools and the log.
fn refusal_text(inner: &Inner, id: &str, r: &RegisterRejected, held: &Held) -> String {
    match r.code.as_deref() {
        Some(codes::NAME_IN_USE) => format!("the name {id} is held by another live connection"),
        Some(codes::NOT_OWNER) => not_owner_text(id, held),
        Some(codes::UNAUTHORIZED) => format!(
            "the hub at {} refused this bridge's token ({}); check {} / {}",
            inner.url,
            inner.auth.token_origin(),
            dial::RELAY_TOKEN_ENV,
            dial::RELAY_TOKEN_FILE_ENV
        ),
        _ => format!(
            "the hub rejected the name {id}: {}",
            relay_local::display::line(&r.reason)
        ),
    }
}

/// The owner secret to present for `id`: one minted earlier and not saved yet, else the
/// owner file (read on the blocking pool).
async fn owner_secret(inner: &Inner, id: &str) -> (Option<String>, Held) {
    if let Some((name, secret)) = &inner.lock().owner.unsaved
        && name == id
    {
        return (Some(secret.clone()), Held::Memory);
    }
    let Some(store) = inner.owners.clone() else {
        return (None, Held::NoStore);
    };
    let name = id.to_string();
    let loaded = tokio::task::spawn_blocking(move || (store.path(&name), store.load(&name))).await;
    match loaded {
        Ok((Ok(path), Ok(Some(secret)))) => (Some(secret), Held::File(path)),
        Ok((Ok(path), Ok(None))) => (None, Held::Nothing(path)),
        Ok((_, Err(e))) => {
            tracing::warn!("{e}");
            (None, Held::Unreadable(e.to_string()))
        }
        Ok((Err(e), _)) => (None, Held::Unreadable(e.to_string())),
        Err(e) => (None, Held::Unreadable(e.to_string())),
    }
}

/// Saves the owner secret of `id` — one the hub just minted, or one kept in memory because
/// saving failed before. On failure the secret stays in memory and a warning goes to stderr
/// and to every tool result. A transient name keeps it in memory only (module doc of
/// `hub_client`).
async fn keep_owner_secret(inner: &Inner, id: &str, minted: Option<String>) {
    if inner.transient {
        if let Some(secret) = minted {
            inner.lock().owner.unsaved = Some((id.to_string(), secret));
        }
        return;
    }
    let secret = match minted {
        Some(s) => s,
        None => match &inner.lock().owner.unsaved {
            Some((name, s)) if name == id => s.clone(),
            _ => return,
        },
    };
    let Some(store) = inner.owners.clone() else {
        return;
    };
    let (name, value) = (id.to_string(), secret.clone());
    let saved = tokio::task::spawn_blocking(move || store.save(&name, &value))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let mut s = inner.lock();
    match saved {
        Ok(path) => {
            tracing::info!("owner secret for {id} saved in {}", path.display());
            s.owner.unsaved = None;
            s.owner.warning = None;
        }
        Err(e) => {
            let warning = format!(
                "WARNING: the hub made {id} an owned name, but its owner secret could not be \
                 saved ({e}). This bridge keeps it in memory and retries on every reconnect; \
                 if it exits first, {id} cannot be claimed again until the hub operator runs \
                 `claude-relay sessions release {id} --local` on the hub host. Make the \
                 owners directory writable to fix this."
            );
            tracing::error!("{warning}");
            s.owner.unsaved = Some((id.to_string(), secret));
            s.owner.warning = Some(warning);
        }
    }
}

/// Why an owned name was refused, and how to move it here.
fn not_owner_text(id: &str, held: &Held) -> String {
    let how = format!(
        "To use {id} here, copy ~/.claude-relay/owners/{id} from the machine that claimed it \
         into this machine's owners directory (mode 0600), or run `claude-relay sessions \
         release {id}` there; or pick another name"
    );
    match held {
        Held::Nothing(path) => format!(
            "the name {id} is owned by a session elsewhere (another machine or \
             CLAUDE_RELAY_HOME) and there is no owner secret for it here ({}). {how}",
            path.display()
        ),
        Held::File(path) => format!(
            "the name {id} is owned, and the owner secret in {} is not its current one (it was \
             released and claimed again elsewhere?). {how}",
            path.display()
        ),
        Held::Memory => format!(
            "the name {id} is owned, and the hub refused the owner secret this bridge kept in \
             memory (the name was released and claimed again elsewhere?). {how}"
        ),
        Held::Unreadable(e) => {
            format!("the name {id} is owned, and its owner secret could not be read: {e}")
        }
        Held::NoStore => format!("the name {id} is owned and this client keeps no owner secrets"),
    }
}
