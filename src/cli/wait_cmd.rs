//! `claude-relay wait`: the Stop-hook doorbell. Blocks until a session has unread relay
//! mail, then prints one line ("2 unread relay messages from CC-2 — call relay_receive") on
//! stderr and exits 2; exits 0 on timeout.
//!
//! Claude Code starts a turn for an idle session when an async `Stop` hook with
//! `asyncRewake` exits 2, showing the model what the hook wrote to stderr; exit 0 is silent.
//! `claude-relay hooks install` registers this command as such a hook, so an idle session
//! wakes up when mail arrives — whether or not Claude Code's channels are enabled.
//!
//! - **No polling**: one `watch` subscription on the hub; it answers with the unread count at
//!   once and pushes a `mail` doorbell for each new message. A doorbell is confirmed with
//!   another `watch` (which also gives the current count and senders), so mail that the
//!   session read in the meantime does not wake it.
//! - **One waiter per session**: Claude Code fires the Stop hook at every turn end and does
//!   not de-duplicate, so each `wait` holds `locks/wait-NAME.lock` (an OS file lock, released
//!   when the process ends, however it ends); a second `wait` for the same session exits 0 at
//!   once instead of piling up.
//! - **Which session**: `--session`, else `CLAUDE_RELAY_SESSION_ID`, else the hook's JSON on
//!   stdin (`session_id`, `cwd`) matched against the registry, where every bridge records the
//!   `CLAUDE_CODE_SESSION_ID` it was started with; else the name recorded for `cwd`. A hook
//!   call for a Claude Code session that does not use the relay exits 0 quietly.
//! - **Exit codes**: 2 only for "mail is waiting". 0 for everything else — timeout, another
//!   waiter, nothing to watch for this hook call, and problems (hub down, refused watch), whose
//!   reason goes to stderr. Problems must not exit non-zero: Claude Code feeds a failing
//!   `asyncRewake` Stop hook back to the model, which stops again, which fires the hook again —
//!   a wake loop that burns tokens for as long as the hub is down
//!   (anthropics/claude-plugins-official#5934). Only a manual call without any session to
//!   watch exits 1. A connection lost while waiting is redialled with backoff until the
//!   timeout.
//! - **A name the hub has never seen** (nothing ever registered under it: a typo, or a
//!   session named but not started yet) is said on stderr once, and the wait goes on — mail
//!   can be sent to a name before its session starts, and a hook must not fail on it.

use std::{
    fs::File,
    io::{IsTerminal, Read},
    process::ExitCode,
    sync::mpsc,
    time::Duration,
};

use anyhow::Context as _;
use mcp_bridge::{
    backoff::Backoff,
    dial::{self, ClientAuth, ConnectError},
};
use relay_local::{Registry, RegistryFile};
use relay_proto::{
    SessionId,
    wire::{Bare, ClientFrame, RequestId, ServerFrame, Watch, Watching},
};
use serde_json::Value;
use tokio::time::Instant;

use super::sessions_cmd::HubConn;

/// Exit code that wakes the Claude Code session (`asyncRewake`).
const EXIT_MAIL: u8 = 2;
/// Longest wait for the TCP connect and WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Quiet time after which an application `ping` checks the connection (and, unanswered for
/// as long again, declares it half-open).
const KEEPALIVE: Duration = Duration::from_secs(20);
/// How long the hook's JSON may take to arrive on stdin (Claude Code writes it at once).
const STDIN_WAIT: Duration = Duration::from_secs(2);
/// Most bytes of hook JSON read from stdin.
const STDIN_MAX: u64 = 1 << 20;
/// Reconnect backoff while waiting: first ceiling and cap.
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// Arguments of `claude-relay wait`.
#[derive(Debug, clap::Args)]
pub(crate) struct WaitArgs {
    /// The session to watch. Default: `CLAUDE_RELAY_SESSION_ID`, else the session of the
    /// Claude Code hook JSON on stdin (by `session_id`, else by `cwd`).
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// Give up after this many seconds and exit 0.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub timeout: u64,
    #[command(flatten)]
    pub hub: HubConn,
}

/// Runs `claude-relay wait`.
pub(super) fn run(args: WaitArgs) -> anyhow::Result<ExitCode> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let from_hook = || {
        if args.session.is_some() || env("CLAUDE_RELAY_SESSION_ID").is_some() {
            return None;
        }
        read_hook_json()
    };
    let hook = from_hook();
    let registry = Registry::open_default().load().unwrap_or_else(|e| {
        tracing::warn!("session registry unreadable: {e}");
        RegistryFile::default()
    });
    let session = match resolve_session(args.session.as_deref(), env, hook.as_ref(), &registry) {
        Ok(s) => s,
        Err(why) => {
            eprintln!("claude-relay wait: {why}");
            // A hook call for a Claude Code session that does not use the relay: nothing to
            // watch, and nothing worth a message in the session either.
            return Ok(ExitCode::from(if hook.is_some() { 0 } else { 1 }));
        }
    };
    tracing::info!("session {} (from {})", session.id, session.source);

    let _lock = match take_lock(session.id.as_str()) {
        Lock::Held(f) => Some(f),
        Lock::Busy => {
            tracing::info!(
                "another wait already watches {}; leaving it to it",
                session.id
            );
            return Ok(ExitCode::SUCCESS);
        }
        Lock::Unavailable(e) => {
            tracing::warn!("cannot take the wait lock ({e}); waiting without it");
            None
        }
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let secret = owner_secret(session.id.as_str());
    let timeout = Duration::from_secs(args.timeout);
    let auth = args.hub.auth();
    let outcome = runtime.block_on(wait(
        &args.hub.relay_url,
        &auth,
        &session.id,
        secret,
        timeout,
    ));
    Ok(match outcome {
        Outcome::Mail(line) => {
            eprintln!("{}", relay_local::display::line(&line));
            ExitCode::from(EXIT_MAIL)
        }
        Outcome::TimedOut => ExitCode::SUCCESS,
        Outcome::Problem(why) => {
            // Never non-zero here: see "Exit codes" above (a failing rewake hook loops).
            eprintln!("claude-relay wait: {}", relay_local::display::line(&why));
            ExitCode::SUCCESS
        }
    })
}

/// The session to watch and where its name came from.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Session {
    pub(super) id: SessionId,
    pub(super) source: String,
}

/// `--session`, else `CLAUDE_RELAY_SESSION_ID`, else the hook JSON's `session_id` (or
/// `CLAUDE_CODE_SESSION_ID`) looked up in the registry, else the name recorded for its `cwd`.
pub(super) fn resolve_session(
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
    hook: Option<&Value>,
    registry: &RegistryFile,
) -> Result<Session, String> {
    let parse = |raw: &str, source: &str| {
        SessionId::parse(raw.trim())
            .map(|id| Session {
                id,
                source: source.to_string(),
            })
            .map_err(|e| format!("{source}={raw:?} is not a valid session id: {e}"))
    };
    if let Some(s) = flag.filter(|s| !s.trim().is_empty()) {
        return parse(s, "--session");
    }
    if let Some(s) = env("CLAUDE_RELAY_SESSION_ID") {
        return parse(&s, "CLAUDE_RELAY_SESSION_ID");
    }
    let field = |k: &str| {
        hook.and_then(|h| h.get(k))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let claude_session = field("session_id").or_else(|| env("CLAUDE_CODE_SESSION_ID"));
    if let Some(cs) = &claude_session
        && let Some((name, _)) = registry.find_by_claude_session(cs)
    {
        return parse(
            name,
            &format!("the registry entry of Claude Code session {cs}"),
        );
    }
    if let Some(cwd) = field("cwd")
        && let Some(name) = registry.name_for_cwd(&cwd)
    {
        return parse(name, &format!("the name recorded for {cwd}"));
    }
    Err(match (claude_session, hook) {
        (Some(cs), _) => format!(
            "no relay session is recorded for Claude Code session {cs} (its bridge records it \
             when it starts); pass --session ID"
        ),
        (None, Some(_)) => {
            "the hook JSON on stdin names no session the registry knows; pass --session ID"
                .to_string()
        }
        (None, None) => "which session? Pass --session ID or set CLAUDE_RELAY_SESSION_ID (or \
                         run it as a Claude Code hook, which passes its session on stdin)"
            .to_string(),
    })
}

/// The hook's JSON object on stdin, if stdin is not a terminal and a JSON object arrives in
/// time. Never blocks for long: the read runs on its own thread and is abandoned after
/// [`STDIN_WAIT`] (it cannot keep the process alive: the process ends when `main` returns).
pub(super) fn read_hook_json() -> Option<Value> {
    if std::io::stdin().is_terminal() {
        return None;
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let read = std::io::stdin().take(STDIN_MAX).read_to_end(&mut buf);
        let _ = tx.send(read.map(|_| buf));
    });
    let bytes = rx.recv_timeout(STDIN_WAIT).ok()?.ok()?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) => Some(v),
        Ok(_) => None,
        Err(e) if !bytes.iter().all(u8::is_ascii_whitespace) => {
            tracing::warn!("stdin is not hook JSON ({e}); ignoring it");
            None
        }
        Err(_) => None,
    }
}

enum Lock {
    /// We hold it until the file is dropped (or the process ends).
    Held(File),
    /// Another `wait` holds it.
    Busy,
    /// The lock file cannot be opened or locked.
    Unavailable(String),
}

/// Takes `locks/wait-NAME.lock` without blocking.
fn take_lock(name: &str) -> Lock {
    let dir = relay_local::paths::locks_dir();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return Lock::Unavailable(format!("{}: {e}", dir.display()));
    }
    let path = dir.join(format!("wait-{name}.lock"));
    let file = match File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => return Lock::Unavailable(format!("{}: {e}", path.display())),
    };
    match file.try_lock() {
        Ok(()) => Lock::Held(file),
        Err(std::fs::TryLockError::WouldBlock) => Lock::Busy,
        Err(std::fs::TryLockError::Error(e)) => {
            Lock::Unavailable(format!("{}: {e}", path.display()))
        }
    }
}

/// The owner secret the bridge keeps for `name` (`~/.claude-relay/owners/NAME`, first line),
/// if there is one: watching an owned name needs it.
pub(super) fn owner_secret(name: &str) -> Option<String> {
    match mcp_bridge::owner::OwnerStore::default_dir().load(name) {
        Ok(secret) => secret,
        Err(e) => {
            tracing::warn!("owner secret for {name} unreadable: {e}");
            None
        }
    }
}

/// How a wait ended.
#[derive(Debug)]
enum Outcome {
    /// Mail is waiting: the line for the model.
    Mail(String),
    /// The timeout passed with no unread mail.
    TimedOut,
    /// Something is wrong (said on stderr; exit 0 so a hook never loops).
    Problem(String),
}

/// How one connection ended.
enum Ended {
    Done(Outcome),
    /// The connection failed or dropped; `watched` if the watch had been in place.
    Lost {
        why: String,
        watched: bool,
    },
}

/// Watches `id` until mail, the deadline, or a problem; redials a lost connection with
/// backoff as long as the deadline allows. The very first connection failing is a problem:
/// the hub is down, and saying so beats waiting an hour in silence.
async fn wait(
    url: &str,
    auth: &ClientAuth,
    id: &SessionId,
    secret: Option<String>,
    timeout: Duration,
) -> Outcome {
    let deadline = Instant::now() + timeout;
    let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_CAP);
    let mut ever_watched = false;
    loop {
        match watch_once(url, auth, id, secret.clone(), deadline).await {
            Ended::Done(outcome) => return outcome,
            Ended::Lost { why, watched } => {
                ever_watched |= watched;
                if !ever_watched {
                    return Outcome::Problem(format!(
                        "cannot watch {id}: {why} (is `claude-relay hub` running?)"
                    ));
                }
                if watched {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::info!("hub connection lost ({why}); redialling in {delay:?}");
                if Instant::now() + delay >= deadline {
                    return Outcome::Problem(format!(
                        "lost the hub connection while watching {id} ({why}) and could not get \
                         it back before the timeout"
                    ));
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One connection: `watch`, then wait for a doorbell that a fresh `watch` confirms.
///
/// Liveness: after [`KEEPALIVE`] without a text frame an application `ping` goes out; if the
/// next [`KEEPALIVE`] brings nothing either, the connection is half-open and is dropped.
async fn watch_once(
    url: &str,
    auth: &ClientAuth,
    id: &SessionId,
    secret: Option<String>,
    deadline: Instant,
) -> Ended {
    let lost = |why: String, watched: bool| Ended::Lost { why, watched };
    let limit = CONNECT_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
    let mut ws = match dial::connect_with(url, auth, limit.max(Duration::from_millis(100))).await {
        Ok(ws) => ws,
        Err(e) => return lost(e.to_string(), false),
    };
    let mut rid = 0i64;
    let mut watch_frame = || {
        rid += 1;
        ClientFrame::Watch(Watch {
            client_id: id.to_string(),
            owner_secret: secret.clone(),
            token: None,
            rid: Some(RequestId::Int(rid)),
        })
    };
    if let Err(e) = dial::send_frame(&mut ws, &watch_frame()).await {
        return lost(e.to_string(), false);
    }
    let mut watched = false;
    let mut ping_out = false;
    let ended = loop {
        let now = Instant::now();
        if now >= deadline {
            break Ended::Done(Outcome::TimedOut);
        }
        let step = KEEPALIVE.min(deadline - now);
        let frame = match dial::read_until(&mut ws, step, Some).await {
            Ok(f) => f,
            Err(ConnectError::Timeout(..)) if Instant::now() >= deadline => {
                break Ended::Done(Outcome::TimedOut);
            }
            Err(ConnectError::Timeout(..)) if ping_out => {
                break lost(
                    format!("no answer from the hub for {} s", 2 * KEEPALIVE.as_secs()),
                    watched,
                );
            }
            Err(ConnectError::Timeout(..)) => {
                ping_out = true;
                let ping = ClientFrame::Ping(Bare::default());
                if let Err(e) = dial::send_frame(&mut ws, &ping).await {
                    break lost(e.to_string(), watched);
                }
                continue;
            }
            Err(ConnectError::BadFrame(e)) => {
                tracing::warn!("ignoring an unreadable frame from the hub: {e}");
                continue;
            }
            Err(e) => break lost(e.to_string(), watched),
        };
        ping_out = false;
        match frame {
            ServerFrame::Watching(w) if w.unread > 0 => break Ended::Done(Outcome::Mail(line(&w))),
            ServerFrame::Watching(w) => {
                if !watched {
                    tracing::info!("watching {}: no unread mail; waiting", w.client_id);
                    if w.known == Some(false) {
                        eprintln!(
                            "claude-relay wait: the hub at {url} has never seen a session named \
                             {id} (nothing ever registered under that name); waiting for mail to \
                             it anyway — check the name if that is not what you meant"
                        );
                    }
                }
                watched = true;
            }
            ServerFrame::Mail(m) => {
                tracing::info!("mail for {} from {} (seq {})", m.client_id, m.from, m.seq);
                // Confirm (and count) with a fresh watch: the session may have read it.
                if let Err(e) = dial::send_frame(&mut ws, &watch_frame()).await {
                    break lost(e.to_string(), watched);
                }
            }
            ServerFrame::Error(e) if e.rid.is_some() => {
                let code = e.code.as_deref().unwrap_or("error");
                break Ended::Done(Outcome::Problem(format!(
                    "the hub refused to watch {id} ({code}): {}",
                    e.message
                )));
            }
            other => tracing::debug!("ignoring {other:?}"),
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
    ended
}

/// "2 unread relay messages from CC-2, CC-3 — call relay_receive".
fn line(w: &Watching) -> String {
    let what = if w.unread == 1 {
        "1 unread relay message".to_string()
    } else {
        format!("{} unread relay messages", w.unread)
    };
    let from = if w.from.is_empty() {
        String::new()
    } else {
        format!(" from {}", w.from.join(", "))
    };
    format!("{what}{from} — call relay_receive")
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_local::EntryUpdate;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn registry() -> RegistryFile {
        let mut r = RegistryFile::default();
        r.mark_running(
            "CC-7",
            EntryUpdate {
                cwd: Some("/work/a".into()),
                claude_session_id: Some("uuid-7".into()),
                ..Default::default()
            },
        );
        r.mark_named("CC-8", Some("/work/b".into()));
        r
    }

    #[test]
    fn session_precedence() {
        let reg = registry();
        let env = |k: &str| (k == "CLAUDE_RELAY_SESSION_ID").then(|| "CC-2".to_string());
        let hook = json!({"session_id": "uuid-7", "cwd": "/work/b"});
        let got = |flag, env: &dyn Fn(&str) -> Option<String>, hook| {
            resolve_session(flag, env, hook, &reg).map(|s| s.id.to_string())
        };
        assert_eq!(got(Some("CC-1"), &env, Some(&hook)), Ok("CC-1".into()));
        assert_eq!(got(None, &env, Some(&hook)), Ok("CC-2".into()));
        assert_eq!(got(None, &no_env, Some(&hook)), Ok("CC-7".into()));
        let by_cwd = json!({"session_id": "unknown", "cwd": "/work/b"});
        assert_eq!(got(None, &no_env, Some(&by_cwd)), Ok("CC-8".into()));
        let nothing = json!({"session_id": "unknown", "cwd": "/elsewhere"});
        let e = got(None, &no_env, Some(&nothing)).unwrap_err();
        assert!(e.contains("unknown"), "{e}");
        assert!(got(None, &no_env, None).unwrap_err().contains("--session"));
        assert!(
            got(Some("9bad"), &no_env, None)
                .unwrap_err()
                .contains("--session=\"9bad\" is not a valid session id")
        );
    }

    #[test]
    fn doorbell_line() {
        let w = |unread, from: &[&str]| Watching {
            client_id: "CC-1".into(),
            unread,
            from: from.iter().map(|s| s.to_string()).collect(),
            known: Some(true),
            rid: None,
        };
        assert_eq!(
            line(&w(2, &["CC-2"])),
            "2 unread relay messages from CC-2 — call relay_receive"
        );
        assert_eq!(
            line(&w(1, &["CC-2"])),
            "1 unread relay message from CC-2 — call relay_receive"
        );
        assert_eq!(
            line(&w(3, &["CC-2", "CC-3"])),
            "3 unread relay messages from CC-2, CC-3 — call relay_receive"
        );
        assert_eq!(
            line(&w(1, &[])),
            "1 unread relay message — call relay_receive"
        );
    }
}
