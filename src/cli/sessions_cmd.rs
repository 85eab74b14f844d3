//! `claude-relay sessions`: one table of every session this machine and the hub know —
//! NAME, PID, ALIVE (does its process run?), CONNECTED (is it connected to the hub?), CWD —
//! and `claude-relay sessions name [NAME]`, what the `claude-session` shell function runs.
//!
//! Listing also prunes ghosts from the registry (running entries whose process is gone). The
//! hub is asked with one `get_sessions` round trip, which adds the sessions of other
//! machines; when it cannot be reached the table is still printed, with `?` for CONNECTED
//! and a line saying so, because the local half of the answer is still true.
//!
//! `claude-relay sessions release NAME` frees an owned name: with the owner secret kept on
//! this machine it asks the hub (then deletes the secret here), or with `--local`, on the hub
//! host, it edits the hub's store directly (hub running or not: SQLite in WAL mode allows a
//! second writer to wait its turn). `claude-relay sessions forget NAME` removes an offline
//! session from the hub's list (and this machine's registry) the same two ways.
//!
//! The hub's list comes in pages (`get_sessions` with `limit`/`after`), read on one
//! connection until the last. Everything the hub sent is printed through
//! [`sessions::display`], so metadata holding escape sequences or newlines can neither drive
//! the terminal nor forge rows.
//!
//! Every hub connection presents the hub token (`--token-file`, `RELAY_TOKEN`,
//! `RELAY_TOKEN_FILE`) and, for `wss://`, trusts `--ca-cert` / `RELAY_CA_CERT` when given.

use std::{
    cmp::Ordering,
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, anyhow, bail};
use hub::store::{Backend, sqlite::SqliteBackend};
use mcp_bridge::{
    connect::{ClientAuth, ConnectError, connect_with, read_reply, request_once_with, send_frame},
    owner::OwnerStore,
};
use serde_json::{Value, json};
use sessions::{
    Entry, EntryState, Registry, RegistryFile, SessionId, display,
    identity::{short_host, short_hostname},
    liveness,
    wire::{
        ClientFrame, DEFAULT_URL, Forget, GetSessions, Release, ServerFrame, SessionView, codes,
    },
};

use super::hub_ping::describe_connect_error;

/// How long the hub may take to accept the connection, and then to answer.
const HUB_TIMEOUT: Duration = Duration::from_secs(3);
/// Sessions asked for per page (the hub's largest page).
const PAGE: u32 = 1000;
/// Most pages read (a million sessions): a hub that keeps answering `next` cannot keep the
/// command running forever.
const MAX_PAGES: usize = 1000;

/// Arguments of `claude-relay sessions`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SessionsArgs {
    #[command(subcommand)]
    action: Option<SessionsAction>,
    /// Only sessions connected to the hub (what `claude-peers` shows).
    #[arg(long)]
    connected: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    hub: HubConn,
}

/// How to reach the hub (shared by the commands that talk to it: `sessions`, `wait`).
#[derive(Debug, Clone, clap::Args)]
pub struct HubConn {
    /// The hub's URL (ws:// or wss://).
    #[arg(long, env = "RELAY_URL", default_value = DEFAULT_URL)]
    pub relay_url: String,
    /// File whose first line is the hub token (for hubs started with --token-file).
    /// Without it: RELAY_TOKEN, else the file named by RELAY_TOKEN_FILE.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// PEM certificate of the CA that signed the hub's wss:// certificate; only that CA is
    /// trusted. Without it: RELAY_CA_CERT, else the system's roots.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

impl HubConn {
    /// The token and CA to present: the flags, else `RELAY_TOKEN` / `RELAY_TOKEN_FILE` /
    /// `RELAY_CA_CERT`.
    pub fn auth(&self) -> ClientAuth {
        ClientAuth::resolve(self.token_file.as_deref(), self.ca_cert.as_deref(), |k| {
            std::env::var(k).ok()
        })
    }
}

/// Subcommands of `claude-relay sessions`.
#[derive(Debug, clap::Subcommand)]
enum SessionsAction {
    /// Name the next agent session started from this shell (what `claude-session` runs):
    /// validates NAME, records it for the current directory and prints it. Without NAME,
    /// reuses the name recorded for the current directory.
    Name {
        /// The session id: a letter, then up to 63 letters, digits, '_' or '-'.
        name: Option<String>,
    },
    /// Free an owned name so another machine can claim it. Uses the owner secret kept on this
    /// machine (~/.claude-relay/owners/NAME) and deletes it once the hub agrees. With --local,
    /// run on the hub's host by its operator: frees the name in the hub's store directly,
    /// without a secret (the hub may be running or not).
    Release(OnHub),
    /// Remove an offline session from the hub's list (with its ownership) and from this
    /// machine's registry. An owned name needs its owner secret on this machine
    /// (~/.claude-relay/owners/NAME); a name nobody owns can be forgotten by anyone. Mail
    /// waiting for it stays stored and goes to whoever claims the name next. With --local,
    /// on the hub's host: edit the hub's store directly, without a secret.
    Forget(OnHub),
}

/// A name to change on the hub: by asking it, or with `--local` in its store.
#[derive(Debug, clap::Args)]
struct OnHub {
    /// The session's name.
    name: String,
    /// Edit the hub's store on this machine instead of asking the hub.
    #[arg(long)]
    local: bool,
    /// The hub's data directory, for --local [default: ~/.claude-relay/hub].
    #[arg(long, env = "RELAY_DATA_DIR", value_name = "DIR", requires = "local")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    hub: HubConn,
}

/// Runs `claude-relay sessions`.
pub fn run(args: SessionsArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Some(SessionsAction::Name { name }) => name_session(name.as_deref()),
        Some(SessionsAction::Release(a)) if a.local => release_local(&a.name, a.data_dir),
        Some(SessionsAction::Release(a)) => release_remote(&a.name, &a.hub),
        Some(SessionsAction::Forget(a)) if a.local => forget_local(&a.name, a.data_dir),
        Some(SessionsAction::Forget(a)) => forget_remote(&a.name, &a.hub),
        None => list(&args),
    }
}

// ---------------------------------------------------------------------------------------
// sessions name

fn name_session(requested: Option<&str>) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let cwd_s = cwd.to_string_lossy().into_owned();
    let reg = Registry::open_default();
    let id = match requested {
        Some(raw) => SessionId::parse(raw.trim()).map_err(|e| {
            anyhow!(
                "{raw:?} is not a valid session id: {e}\n\
                 usage: claude-session NAME   (a letter, then up to 63 letters, digits, '_' or '-')"
            )
        })?,
        None => recorded_name(&reg.load()?, &cwd_s)?,
    };
    let host = short_hostname();
    let outcome = reg.update(|f| {
        if let Some(e) = f.sessions.get(id.as_str()).filter(|e| e.is_live()) {
            return Err(describe(e));
        }
        f.mark_named(id.as_str(), Some(cwd_s.clone()));
        if let Some(e) = f.sessions.get_mut(id.as_str()) {
            e.host = Some(host.clone());
        }
        Ok(())
    })?;
    if let Err(holder) = outcome {
        bail!(
            "{id} is in use by a running session ({holder}); pick another name, or end that session first"
        );
    }
    println!("{id}");
    eprintln!(
        "claude-relay: the next agent started from this shell will be {id} (in {}); start it with: claude",
        tilde(&cwd_s)
    );
    Ok(ExitCode::SUCCESS)
}

/// The most recently used name for `cwd` that no running session holds.
fn recorded_name(file: &RegistryFile, cwd: &str) -> anyhow::Result<SessionId> {
    let names = file.names_for_cwd(cwd);
    let free = names
        .iter()
        .find(|n| !file.sessions[**n].is_live())
        .and_then(|n| SessionId::parse(n).ok());
    match (free, names.is_empty()) {
        (Some(id), _) => Ok(id),
        (None, true) => bail!(
            "no session name is recorded for {}\nusage: claude-session NAME   (then start claude from this shell)",
            tilde(cwd)
        ),
        (None, false) => bail!(
            "every name recorded for {} is held by a running session ({}); name a new one: claude-session NAME",
            tilde(cwd),
            names.join(", ")
        ),
    }
}

fn describe(e: &Entry) -> String {
    let pid = e
        .process()
        .map(|p| format!("pid {}", p.pid))
        .unwrap_or_else(|| "pid ?".into());
    match e.cwd.as_deref() {
        Some(cwd) => format!("{pid} in {}", tilde(cwd)),
        None => pid,
    }
}

// ---------------------------------------------------------------------------------------
// sessions release

fn parse_name(raw: &str) -> anyhow::Result<SessionId> {
    SessionId::parse(raw.trim()).map_err(|e| anyhow!("{raw:?} is not a valid session id: {e}"))
}

/// One request to the hub on a small runtime of its own: the reply, or why there was none
/// (the outer error: the runtime could not start).
fn ask_once(
    conn: &HubConn,
    frame: &ClientFrame,
) -> anyhow::Result<Result<ServerFrame, ConnectError>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(rt.block_on(request_once_with(
        &conn.relay_url,
        &conn.auth(),
        frame,
        HUB_TIMEOUT,
    )))
}

/// Deletes the owner secret of `id` kept here (it means nothing once the hub let the name
/// go), saying so on stderr.
fn drop_secret(owners: &OwnerStore, id: &SessionId, path: &Path) {
    match owners.remove(id.as_str()) {
        Ok(_) => eprintln!(
            "claude-relay: deleted the owner secret {} (it no longer means anything)",
            path.display()
        ),
        Err(e) => eprintln!("claude-relay: {e}; delete it by hand"),
    }
}

/// Asks the hub to free `name` with the owner secret kept here; deletes it on success.
fn release_remote(raw: &str, conn: &HubConn) -> anyhow::Result<ExitCode> {
    let id = parse_name(raw)?;
    let owners = OwnerStore::default_dir();
    let path = owners.path(id.as_str())?;
    let Some(secret) = owners.load(id.as_str())? else {
        bail!(
            "there is no owner secret for {id} on this machine ({} does not exist), so it \
             cannot be released from here. Run this on the machine that claimed {id}, or on \
             the hub's host: claude-relay sessions release {id} --local",
            path.display()
        );
    };
    let frame = ClientFrame::Release(Release {
        client_id: id.to_string(),
        owner_secret: secret,
        token: None,
        rid: None,
    });
    let url = &conn.relay_url;
    match ask_once(conn, &frame)? {
        Ok(ServerFrame::Released(_)) => {
            println!("released {id}: any machine can claim it now");
            drop_secret(&owners, &id, &path);
            Ok(ExitCode::SUCCESS)
        }
        Ok(ServerFrame::Error(e)) if e.code.as_deref() == Some(codes::NOT_OWNER) => bail!(
            "the hub refused: the owner secret in {} is not {id}'s ({}). The name was probably \
             released and claimed again elsewhere; the secret here is stale. To free it anyway, \
             run on the hub's host: claude-relay sessions release {id} --local",
            path.display(),
            display::line(&e.message)
        ),
        Ok(ServerFrame::Error(e)) if e.code.as_deref() == Some(codes::UNAUTHORIZED) => bail!(
            "the hub at {url} needs its token ({}): give --token-file FILE, or set RELAY_TOKEN \
             or RELAY_TOKEN_FILE. Nothing was released",
            display::line(&e.message)
        ),
        Ok(ServerFrame::Error(e)) => {
            bail!(
                "the hub at {url} refused to release {id}: {}",
                display::line(&e.message)
            )
        }
        Ok(other) => bail!(
            "the hub at {url} answered release with an unexpected frame ({}). Nothing changed \
             here",
            frame_type(&other)
        ),
        Err(e) => bail!(
            "{}. Nothing was released and the owner secret in {} is kept. Start the hub (or fix \
             the connection) and retry, or on the hub's host run: claude-relay sessions release \
             {id} --local",
            display::line(&describe_connect_error(url, &e)),
            path.display()
        ),
    }
}

// ---------------------------------------------------------------------------------------
// sessions forget

/// Asks the hub to forget `name` (presenting the owner secret kept here, if any); then
/// removes the secret and this machine's registry entry.
fn forget_remote(raw: &str, conn: &HubConn) -> anyhow::Result<ExitCode> {
    let id = parse_name(raw)?;
    let owners = OwnerStore::default_dir();
    let path = owners.path(id.as_str())?;
    let secret = owners.load(id.as_str())?;
    let frame = ClientFrame::Forget(Forget {
        client_id: id.to_string(),
        owner_secret: secret.clone(),
        token: None,
        rid: None,
    });
    let url = &conn.relay_url;
    let hub_knew = match ask_once(conn, &frame)? {
        Ok(ServerFrame::Forgotten(_)) => true,
        Ok(ServerFrame::Error(e)) if e.code.as_deref() == Some(codes::NOT_FOUND) => false,
        Ok(ServerFrame::Error(e)) if e.code.as_deref() == Some(codes::NAME_IN_USE) => bail!(
            "{id} is online (the hub says: {}); only an offline session can be forgotten. End \
             that session first. Nothing was forgotten",
            display::line(&e.message)
        ),
        Ok(ServerFrame::Error(e)) if e.code.as_deref() == Some(codes::NOT_OWNER) => {
            let why = match &secret {
                Some(_) => format!(
                    "the owner secret in {} is not {id}'s (stale: the name was released and \
                     claimed again elsewhere?)",
                    path.display()
                ),
                None => format!(
                    "{id} is owned and there is no owner secret for it on this machine ({} does \
                     not exist)",
                    path.display()
                ),
            };
            bail!(
                "the hub refused: {why}. Run this on the machine that claimed {id}, or on the \
                 hub's host: claude-relay sessions forget {id} --local. Nothing was forgotten"
            )
        }
        Ok(ServerFrame::Error(e)) if e.code.as_deref() == Some(codes::UNAUTHORIZED) => bail!(
            "the hub at {url} needs its token ({}): give --token-file FILE, or set RELAY_TOKEN \
             or RELAY_TOKEN_FILE. Nothing was forgotten",
            display::line(&e.message)
        ),
        Ok(ServerFrame::Error(e)) => bail!(
            "the hub at {url} refused to forget {id}: {}",
            display::line(&e.message)
        ),
        Ok(other) => bail!(
            "the hub at {url} answered forget with an unexpected frame ({}). Nothing changed \
             here",
            frame_type(&other)
        ),
        Err(e) => bail!(
            "{}. Nothing was forgotten. Start the hub (or fix the connection) and retry, or on \
             the hub's host run: claude-relay sessions forget {id} --local",
            display::line(&describe_connect_error(url, &e))
        ),
    };
    if secret.is_some() && hub_knew {
        drop_secret(&owners, &id, &path);
    }
    let local = forget_in_registry(&id)?;
    match (hub_knew, local) {
        (true, _) => println!(
            "forgot {id}: the hub no longer lists it{}",
            local_note(local)
        ),
        (false, true) => println!(
            "the hub at {url} knows no session {id}; removed it from this machine's registry"
        ),
        (false, false) => {
            bail!("neither the hub at {url} nor this machine's registry knows a session {id}")
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn local_note(removed: bool) -> &'static str {
    if removed {
        " (removed from this machine's registry too)"
    } else {
        ""
    }
}

/// Removes `id` from this machine's registry unless a live session holds it there. Returns
/// whether an entry went.
fn forget_in_registry(id: &SessionId) -> anyhow::Result<bool> {
    let reg = Registry::open_default();
    let outcome = reg.update(|f| match f.sessions.get(id.as_str()) {
        Some(e) if e.is_live() => Err(describe(e)),
        Some(_) => Ok(f.sessions.remove(id.as_str()).is_some()),
        None => Ok(false),
    })?;
    match outcome {
        Ok(removed) => Ok(removed),
        Err(holder) => {
            eprintln!(
                "claude-relay: {id} runs on this machine ({holder}); its registry entry is kept"
            );
            Ok(false)
        }
    }
}

/// Forgets `name` in the hub's store on this machine (the operator's way; no secret needed).
fn forget_local(raw: &str, data_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let id = parse_name(raw)?;
    let (mut store, dir, db) = open_local_store(data_dir)?;
    let had = store
        .forget_session(id.as_str())
        .with_context(|| format!("cannot update the hub store in {}", dir.display()))?;
    let local = forget_in_registry(&id)?;
    if had {
        println!(
            "forgot {id} in the hub store {}{} (if it is online right now, it is listed again \
             when it reconnects)",
            db.display(),
            local_note(local)
        );
    } else {
        println!(
            "the hub store {} knows no session {id}; nothing to forget there{}",
            db.display(),
            local_note(local)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A frame's `type`, for messages about unexpected replies.
fn frame_type(f: &ServerFrame) -> String {
    serde_json::to_value(f)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The hub's store on this machine, for the operator's `--local` edits (hub running or not:
/// SQLite in WAL mode lets a second writer wait its turn): the store, its directory and its
/// database file.
fn open_local_store(
    data_dir: Option<PathBuf>,
) -> anyhow::Result<(SqliteBackend, PathBuf, PathBuf)> {
    let dir = data_dir.unwrap_or_else(sessions::paths::hub_data_dir);
    let db = dir.join(hub::store::sqlite::DB_FILE);
    if !db.exists() {
        bail!(
            "there is no hub store at {}: run this on the hub's host, with --data-dir DIR if the \
             hub was started with --data-dir or RELAY_DATA_DIR",
            db.display()
        );
    }
    let store = SqliteBackend::open(&dir, hub::SyncMode::Normal)
        .with_context(|| format!("cannot open the hub store in {}", dir.display()))?;
    Ok((store, dir, db))
}

/// Frees `name` in the hub's store on this machine (the operator's way; no secret needed).
fn release_local(raw: &str, data_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let id = parse_name(raw)?;
    let (mut store, dir, db) = open_local_store(data_dir)?;
    let had_owner = store
        .release_owner(id.as_str())
        .with_context(|| format!("cannot update the hub store in {}", dir.display()))?;
    if had_owner {
        println!(
            "released {id} in the hub store {}: any machine can claim it now (a session holding \
             it right now keeps it until it disconnects)",
            db.display()
        );
    } else {
        println!(
            "{id} has no owner in the hub store {}; nothing to release",
            db.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------
// sessions (list)

/// What the hub said (or why it could not).
enum HubAnswer {
    /// Every session the hub listed, and whether the list is cut short (over [`MAX_PAGES`]).
    Reachable(BTreeMap<String, SessionView>, bool),
    Unreachable(String),
}

/// One line of the table.
#[derive(Debug, Default)]
struct Row {
    name: String,
    pid: Option<u64>,
    /// `None`: unknown here (named but not started, or another machine).
    alive: Option<bool>,
    /// `None`: the hub could not be asked.
    connected: Option<bool>,
    cwd: Option<String>,
    host: Option<String>,
    /// Registry state; `None` for sessions only the hub knows.
    state: Option<EntryState>,
    last_seen: Option<String>,
}

fn list(args: &SessionsArgs) -> anyhow::Result<ExitCode> {
    let reg = Registry::open_default();
    let mut notes = Vec::new();
    let (file, pruned) = match reg.update(|f| {
        let pruned = f.prune_ghosts();
        (f.clone(), pruned)
    }) {
        Ok(v) => v,
        Err(e) => {
            notes.push(format!("could not update the registry ({e}); not pruned"));
            (reg.load().unwrap_or_default(), Vec::new())
        }
    };
    let hub = ask_hub(&args.hub)?;
    let local_host = short_hostname();
    let mut rows = merge(&file, &hub, &local_host);
    if args.connected {
        rows.retain(|r| match &hub {
            HubAnswer::Reachable(..) => r.connected == Some(true),
            // Unknown: show what runs here, marked `?`.
            HubAnswer::Unreachable(_) => r.alive == Some(true),
        });
    }

    if args.json {
        let text = serde_json::to_string_pretty(&to_json(args, &hub, &pruned, &rows, &file))?;
        println!("{}", display::json(&text));
        return Ok(ExitCode::SUCCESS);
    }

    print!("{}", table(&rows, &local_host));
    if rows.is_empty() {
        notes.push(if args.connected {
            "no sessions are connected".into()
        } else {
            "no sessions yet; name one with: claude-session NAME".into()
        });
    }
    if !pruned.is_empty() {
        notes.push(format!(
            "pruned {} ghost session{} whose process is gone: {}",
            pruned.len(),
            if pruned.len() == 1 { "" } else { "s" },
            pruned.join(", ")
        ));
    }
    for (name, u) in &file.unreadable {
        notes.push(format!(
            "registry entry {name} is unreadable by this version ({}); it is kept as it is",
            u.reason
        ));
    }
    match &hub {
        HubAnswer::Unreachable(why) => notes.push(format!(
            "the hub at {} is unreachable ({why}); CONNECTED shows ?",
            args.hub.relay_url
        )),
        HubAnswer::Reachable(listed, true) => notes.push(format!(
            "the hub's list was cut short after {} sessions",
            listed.len()
        )),
        HubAnswer::Reachable(..) => {}
    }
    for n in notes {
        println!("{}", display::line(&n));
    }
    Ok(ExitCode::SUCCESS)
}

/// The hub's whole session list, page by page on one connection, on a small runtime of its
/// own.
fn ask_hub(conn: &HubConn) -> anyhow::Result<HubAnswer> {
    let url = conn.relay_url.as_str();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let answer = match rt.block_on(all_pages(url, &conn.auth())) {
        Ok(Listed::Sessions(all, cut)) => HubAnswer::Reachable(all, cut),
        Ok(Listed::Refused(e)) if e.code.as_deref() == Some(codes::UNAUTHORIZED) => {
            HubAnswer::Unreachable(
                "it requires a token: give --token-file FILE, or set RELAY_TOKEN or \
                 RELAY_TOKEN_FILE"
                    .into(),
            )
        }
        Ok(Listed::Refused(e)) => {
            HubAnswer::Unreachable(format!("it answered with an error: {}", e.message))
        }
        Ok(Listed::Unexpected(ty)) => HubAnswer::Unreachable(format!(
            "it answered get_sessions with an unexpected frame ({ty})"
        )),
        Err(ConnectError::Unreachable { source, hint, .. }) => {
            HubAnswer::Unreachable(format!("{source}{hint}"))
        }
        Err(ConnectError::Timeout(_, t)) => {
            HubAnswer::Unreachable(format!("no answer within {t:?}"))
        }
        Err(e) => HubAnswer::Unreachable(e.to_string()),
    };
    Ok(answer)
}

/// What paging through `get_sessions` produced.
enum Listed {
    /// Every session, and whether [`MAX_PAGES`] cut the list short.
    Sessions(BTreeMap<String, SessionView>, bool),
    Refused(sessions::wire::ErrorFrame),
    Unexpected(String),
}

/// Reads every page of `get_sessions` (following `next`; a hub without paging answers in
/// one) on one connection.
async fn all_pages(url: &str, auth: &ClientAuth) -> Result<Listed, ConnectError> {
    let mut ws = connect_with(url, auth, HUB_TIMEOUT).await?;
    let mut all = BTreeMap::new();
    let mut after: Option<String> = None;
    let mut listed = None;
    for _ in 0..MAX_PAGES {
        let frame = ClientFrame::GetSessions(GetSessions {
            limit: Some(PAGE),
            after: after.take(),
            rid: None,
        });
        send_frame(&mut ws, &frame).await?;
        let reply = read_reply(&mut ws, HUB_TIMEOUT).await?;
        match reply {
            ServerFrame::Sessions(page) => {
                all.extend(page.sessions);
                match page.next {
                    Some(next) => after = Some(next),
                    None => {
                        listed = Some(Listed::Sessions(std::mem::take(&mut all), false));
                        break;
                    }
                }
            }
            ServerFrame::Error(e) => {
                listed = Some(Listed::Refused(e));
                break;
            }
            other => {
                listed = Some(Listed::Unexpected(frame_type(&other)));
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
    Ok(listed.unwrap_or(Listed::Sessions(all, true)))
}

/// Local registry rows, joined by name with what the hub knows (which adds other machines).
fn merge(file: &RegistryFile, hub: &HubAnswer, local_host: &str) -> Vec<Row> {
    let is_local = |host: Option<&str>| host.is_none_or(|h| short_host(h) == local_host);
    let mut rows: BTreeMap<String, Row> = file
        .sessions
        .iter()
        .map(|(name, e)| {
            let alive = match e.state {
                EntryState::Named => None,
                EntryState::Running => Some(e.is_live()),
                EntryState::Ended => Some(false),
            };
            let row = Row {
                name: name.clone(),
                pid: e.process().map(|p| u64::from(p.pid)),
                alive: alive.filter(|_| e.process().is_some()),
                connected: matches!(hub, HubAnswer::Reachable(..)).then_some(false),
                cwd: e.cwd.clone(),
                host: e.host.clone(),
                state: Some(e.state),
                last_seen: None,
            };
            (name.clone(), row)
        })
        .collect();
    if let HubAnswer::Reachable(hub_sessions, _) = hub {
        for (name, view) in hub_sessions {
            let meta_str = |k: &str| view.meta.get(k).and_then(Value::as_str).map(str::to_string);
            let meta_pid = view.meta.get("pid").and_then(Value::as_u64);
            let meta_host = meta_str("host");
            let row = rows.entry(name.clone()).or_insert_with(|| Row {
                name: name.clone(),
                ..Row::default()
            });
            row.connected = Some(view.online);
            row.last_seen = view.last_seen.clone();
            // The hub's view wins when the name now lives on another machine, or when the
            // registry knows nothing about it.
            let elsewhere = view.online
                && row.alive != Some(true)
                && meta_host.as_deref().is_some_and(|h| !is_local(Some(h)));
            if row.state.is_none() || elsewhere {
                row.pid = meta_pid.or(row.pid);
                row.cwd = meta_str("cwd").or(row.cwd.take());
                row.host = meta_host.clone().or(row.host.take());
                row.alive = match (meta_pid, is_local(meta_host.as_deref())) {
                    (Some(pid), true) => Some(
                        u32::try_from(pid)
                            .ok()
                            .and_then(liveness::stamp)
                            .is_some_and(|s| liveness::is_alive(&s)),
                    ),
                    _ => None,
                };
            }
        }
    }
    let mut rows: Vec<Row> = rows.into_values().collect();
    rows.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    rows
}

fn yes_no(v: Option<bool>, unknown: &str) -> String {
    match v {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => unknown.into(),
    }
}

/// The aligned table (header always printed). CWD is last and unpadded; a session on
/// another machine shows `host:cwd`. Every cell is made safe ([`display::line`]): one row
/// per session, and nothing reaches the terminal raw.
fn table(rows: &[Row], local_host: &str) -> String {
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            let cwd = r.cwd.as_deref().map(tilde).unwrap_or_else(|| "-".into());
            let cwd = match r.host.as_deref().map(short_host) {
                Some(h) if h != local_host => format!("{h}:{cwd}"),
                _ => cwd,
            };
            let cwd = display::line(&cwd).into_owned();
            [
                display::line(&r.name).into_owned(),
                r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                yes_no(r.alive, "-"),
                yes_no(r.connected, "?"),
                cwd,
            ]
        })
        .collect();
    let header = ["NAME", "PID", "ALIVE", "CONNECTED", "CWD"].map(String::from);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&cells) {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&cells) {
        for (w, c) in widths.iter().zip(row) {
            out.push_str(c);
            out.push_str(&" ".repeat(w - c.chars().count() + 2));
        }
        out.push_str(&row[4]);
        out.push('\n');
    }
    out
}

fn to_json(
    args: &SessionsArgs,
    hub: &HubAnswer,
    pruned: &[String],
    rows: &[Row],
    file: &RegistryFile,
) -> Value {
    let (reachable, error, cut) = match hub {
        HubAnswer::Reachable(_, cut) => (true, None, *cut),
        HubAnswer::Unreachable(why) => (false, Some(why.clone()), false),
    };
    json!({
        "hub": { "url": args.hub.relay_url, "reachable": reachable, "error": error, "cutShort": cut },
        "pruned": pruned,
        "unreadableRegistryEntries": file.unreadable.iter().map(|(name, u)| json!({
            "name": name, "reason": u.reason,
        })).collect::<Vec<_>>(),
        "sessions": rows.iter().map(|r| json!({
            "name": r.name,
            "pid": r.pid,
            "alive": r.alive,
            "connected": r.connected,
            "cwd": r.cwd,
            "host": r.host,
            "state": r.state,
            "lastSeen": r.last_seen,
        })).collect::<Vec<_>>(),
    })
}

/// `/home/me/src/x` → `~/src/x` when under this user's home directory.
fn tilde(path: &str) -> String {
    let Some(home) = std::env::home_dir() else {
        return path.to_string();
    };
    let home = home.to_string_lossy();
    let home = home.trim_end_matches('/');
    if home.is_empty() {
        return path.to_string();
    }
    match Path::new(path).strip_prefix(home) {
        Ok(rest) if rest.as_os_str().is_empty() => "~".into(),
        Ok(rest) => format!("~/{}", rest.display()),
        Err(_) => path.to_string(),
    }
}

/// Orders `CC-2` before `CC-10`: digit runs compare as numbers, the rest case-insensitively.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, run)) if *d == digit => run.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, ra), (db, rb)) in ca.iter().zip(&cb) {
        let ord = if *da && *db {
            let (ta, tb) = (ra.trim_start_matches('0'), rb.trim_start_matches('0'));
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
        } else {
            ra.to_lowercase().cmp(&rb.to_lowercase())
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["CC-10", "cc-3", "CC-2", "CODEX", "CODEX2", "CC-1", "alpha"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            ["alpha", "CC-1", "CC-2", "cc-3", "CC-10", "CODEX", "CODEX2"]
        );
    }

    #[test]
    fn table_is_aligned() {
        let rows = vec![
            Row {
                name: "CC-1".into(),
                pid: Some(4711),
                alive: Some(true),
                connected: Some(true),
                cwd: Some("/srv/app".into()),
                ..Row::default()
            },
            Row {
                name: "REMOTE-LONG-NAME".into(),
                connected: None,
                cwd: Some("/w".into()),
                host: Some("devbox.example.com".into()),
                ..Row::default()
            },
        ];
        let t = table(&rows, "laptop");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "NAME              PID   ALIVE  CONNECTED  CWD");
        assert_eq!(
            lines[1],
            "CC-1              4711  yes    yes        /srv/app"
        );
        assert_eq!(
            lines[2],
            "REMOTE-LONG-NAME  -     -      ?          devbox:/w"
        );
    }
}
