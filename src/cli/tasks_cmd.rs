//! `claude-relay tasks`: the task board of a session, one task in full, and `checkout`, which
//! downloads a task's git bundle and recreates the sender's working state on this machine
//! (see docs/HANDOFF.md).
//!
//! Identity: the CLI holds no name. It reads as a session — `--session`, else
//! `CLAUDE_RELAY_SESSION_ID` — by presenting that session's owner secret
//! (`~/.claude-relay/owners/NAME`, which the session's bridge keeps on this machine); the hub
//! shows it only tasks that session is party to. `--all` is the hub operator's view of every
//! session's tasks, for whoever the hub takes as its operator — the same rule as the web
//! console and `claude-relay tail`: the hub token (`--token-file`, `RELAY_TOKEN`,
//! `RELAY_TOKEN_FILE`), or a loopback connection to a hub without one (docs/SECURITY.md,
//! "The operator").

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, anyhow, bail};
use data_encoding::BASE64;
use mcp_bridge::{
    dial::{self, HubSocket},
    owner::OwnerStore,
    tasks::{git_seam, text, upload::sha256_hex},
};
use relay_proto::{
    SessionId,
    time::{ago, now_ms, parse_iso},
    wire::{ClientFrame, ServerFrame, TaskBundle, TaskGet, TaskList},
    wire_tasks::{ActAs, TaskState, TaskView, parse_task_id, task_id},
};
use serde_json::json;

use super::sessions_cmd::HubConn;

/// How long the hub may take to accept the connection, and then to answer each request.
const HUB_TIMEOUT: Duration = Duration::from_secs(10);
/// Tasks on one board.
const BOARD: u32 = 100;

/// Who the CLI reads as (`tasks`, and `search`).
#[derive(Debug, Clone, clap::Args)]
pub(super) struct Reader {
    /// The session to read as [default: CLAUDE_RELAY_SESSION_ID]. Its owner secret must be
    /// on this machine (its bridge keeps it in ~/.claude-relay/owners/).
    #[arg(long, value_name = "ID")]
    session: Option<String>,
    #[command(flatten)]
    hub: HubConn,
}

/// Arguments of `claude-relay tasks`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct TasksArgs {
    #[command(subcommand)]
    action: Option<TasksAction>,
    /// Every session's tasks: the hub operator's view (needs the hub token, or a loopback
    /// connection to a hub without one — like the console and `tail`).
    #[arg(long)]
    all: bool,
    /// Only tasks in this state (default: every open state).
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    reader: Reader,
}

/// Subcommands of `claude-relay tasks`.
#[derive(Debug, clap::Subcommand)]
enum TasksAction {
    /// One task in full: brief, acceptance checks, git context, history.
    Show {
        /// Task id (T-42).
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        reader: Reader,
    },
    /// Download the task's git bundle and recreate the sender's working state here; prints
    /// where the work tree is.
    Checkout {
        /// Task id (T-42).
        id: String,
        /// Where to put the work tree [default: chosen by git next to the local clone].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        reader: Reader,
    },
}

/// Runs `claude-relay tasks`.
pub(super) fn run(args: TasksArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        match args.action {
            None => board(&args.reader, args.all, args.state.as_deref(), args.json).await,
            Some(TasksAction::Show { id, json, reader }) => show(&reader, &id, json).await,
            Some(TasksAction::Checkout { id, dir, reader }) => {
                checkout(&reader, &id, dir.as_deref()).await
            }
        }
    })
}

impl Reader {
    /// The session and its owner secret.
    pub(super) fn act_as(&self) -> anyhow::Result<(SessionId, ActAs)> {
        let raw = self
            .session
            .clone()
            .or_else(|| std::env::var("CLAUDE_RELAY_SESSION_ID").ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                anyhow!("which session? Pass --session ID or set CLAUDE_RELAY_SESSION_ID")
            })?;
        let id = SessionId::parse(&raw).map_err(|e| anyhow!("{raw:?} is not a session id: {e}"))?;
        let owners = OwnerStore::default_dir();
        let secret = owners.load(id.as_str())?.ok_or_else(|| {
            anyhow!(
                "there is no owner secret for {id} on this machine ({}); read as a session \
                 whose bridge ran here",
                owners
                    .path(id.as_str())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )
        })?;
        Ok((
            id.clone(),
            ActAs {
                client_id: Some(id.to_string()),
                owner_secret: Some(secret),
            },
        ))
    }

    pub(super) async fn connect(&self) -> anyhow::Result<HubSocket> {
        let url = &self.hub.relay_url;
        dial::connect_with(url, &self.hub.auth(), HUB_TIMEOUT)
            .await
            .with_context(|| {
                format!("cannot reach the hub at {url} (is `claude-relay hub` running?)")
            })
    }
}

/// Sends `frame` and returns the hub's reply (pushes skipped); an `error` becomes an error.
pub(super) async fn request(
    ws: &mut HubSocket,
    frame: &ClientFrame,
) -> anyhow::Result<ServerFrame> {
    dial::send_frame(ws, frame).await?;
    match dial::read_reply(ws, HUB_TIMEOUT).await? {
        ServerFrame::Error(e) => bail!("the hub refused: {}", e.message),
        other => Ok(other),
    }
}

async fn board(
    reader: &Reader,
    all: bool,
    state: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let state = state
        .map(|s| TaskState::parse(s).ok_or_else(|| anyhow!("unknown state {s:?}")))
        .transpose()?;
    let mut frame = TaskList {
        state,
        count: Some(BOARD),
        ..Default::default()
    };
    let who = if all {
        // The hub decides whether this connection is its operator (the token it presents).
        frame.all = true;
        "every session".to_string()
    } else {
        let (id, act_as) = reader.act_as()?;
        frame.act_as = act_as;
        id.to_string()
    };
    let mut ws = reader.connect().await?;
    let reply = request(&mut ws, &ClientFrame::TaskList(frame)).await;
    let _ = ws.close(None).await;
    let ServerFrame::Tasks(page) = reply? else {
        bail!("unexpected reply from the hub");
    };
    if json {
        println!("{}", json!({"tasks": page.tasks, "more": page.more}));
        return Ok(ExitCode::SUCCESS);
    }
    if page.tasks.is_empty() {
        println!(
            "no {} tasks for {who}",
            state.map_or("open", TaskState::as_str)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", board_table(&page.tasks, now_ms()))?;
    if page.more {
        writeln!(
            out,
            "(only the newest {BOARD} are shown; filter with --state)"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The board: ID, STATE, FROM → HOLDER (the addressee in parentheses while nobody holds
/// it), AGE (since the last change), TITLE.
fn board_table(tasks: &[TaskView], now: i64) -> String {
    let rows: Vec<[String; 5]> = tasks
        .iter()
        .map(|t| {
            let holder = t.holder.clone().unwrap_or_else(|| format!("({})", t.to));
            [
                t.id.clone(),
                t.state.to_string(),
                format!("{} → {holder}", t.from),
                parse_iso(&t.updated).map_or_else(|| "?".into(), |ms| ago(ms, now)),
                t.title.clone(),
            ]
        })
        .collect();
    let head = ["ID", "STATE", "FROM → HOLDER", "AGE", "TITLE"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([head[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..4).map(width).collect();
    let fmt = |r: [&str; 5]| {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate().take(4) {
            line.push_str(cell);
            line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
        }
        line.push_str(r[4]);
        line
    };
    let mut lines = vec![fmt(head)];
    for r in &rows {
        lines.push(fmt([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    lines.join("\n")
}

fn task_arg(id: &str) -> anyhow::Result<String> {
    parse_task_id(id)
        .map(task_id)
        .ok_or_else(|| anyhow!("{id:?} is not a task id (they look like T-42)"))
}

async fn fetch_task(reader: &Reader, ws: &mut HubSocket, id: &str) -> anyhow::Result<TaskView> {
    let (_, act_as) = reader.act_as()?;
    let frame = ClientFrame::TaskGet(TaskGet {
        id: id.to_string(),
        history: Some(50),
        act_as,
        ..Default::default()
    });
    match request(ws, &frame).await? {
        ServerFrame::Task(r) => Ok(r.task),
        _ => bail!("unexpected reply from the hub to task_get"),
    }
}

async fn show(reader: &Reader, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let id = task_arg(id)?;
    let (me, _) = reader.act_as()?;
    let mut ws = reader.connect().await?;
    let task = fetch_task(reader, &mut ws, &id).await;
    let _ = ws.close(None).await;
    let task = task?;
    if json {
        println!("{}", json!({ "task": task }));
    } else {
        println!("{}", text::detail(&task, me.as_str(), now_ms()));
    }
    Ok(ExitCode::SUCCESS)
}

/// Downloads the bundle of `id`, checking its size and SHA-256.
async fn download(reader: &Reader, ws: &mut HubSocket, id: &str) -> anyhow::Result<Vec<u8>> {
    let (_, act_as) = reader.act_as()?;
    let mut bytes: Vec<u8> = Vec::new();
    loop {
        let frame = ClientFrame::TaskBundle(TaskBundle {
            id: id.to_string(),
            offset: bytes.len() as u64,
            act_as: act_as.clone(),
            rid: None,
        });
        let ServerFrame::Bundle(piece) = request(ws, &frame).await? else {
            bail!("unexpected reply from the hub to task_bundle");
        };
        if piece.total > hub::DEFAULT_MAX_BUNDLE_BYTES.max(1 << 30) {
            bail!("the hub announces a {}-byte bundle; refusing", piece.total);
        }
        let data = BASE64
            .decode(piece.data.as_bytes())
            .context("the hub sent a bundle chunk that is not base64")?;
        if data.is_empty() && (bytes.len() as u64) < piece.total {
            bail!(
                "the hub's bundle ended at {} of {} bytes",
                bytes.len(),
                piece.total
            );
        }
        bytes.extend_from_slice(&data);
        if bytes.len() as u64 >= piece.total {
            if bytes.len() as u64 != piece.total || sha256_hex(&bytes) != piece.sha256 {
                bail!(
                    "the downloaded bundle does not match its size and SHA-256; nothing was applied"
                );
            }
            return Ok(bytes);
        }
    }
}

async fn checkout(reader: &Reader, id: &str, dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let id = task_arg(id)?;
    let mut ws = reader.connect().await?;
    let task = fetch_task(reader, &mut ws, &id).await?;
    let Some(git) = task.git.clone() else {
        let _ = ws.close(None).await;
        bail!(
            "{id} carries no git context (its creator handed it over with git: false, or outside a git work tree)"
        );
    };
    let bundle = if task.bundle.is_some() {
        let bytes = download(reader, &mut ws, &id).await?;
        eprintln!(
            "claude-relay: downloaded the bundle of {id} ({})",
            text::size(bytes.len() as u64)
        );
        Some(bytes)
    } else {
        None
    };
    let _ = ws.close(None).await;
    let made = git_seam::checkout(&id, &git, bundle, dir).await;
    match made {
        Ok((path, summary)) => {
            println!("{}", path.display());
            eprintln!("claude-relay: {id} is checked out: {summary}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => bail!("checkout of {id} failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_lines_up() {
        let t = |id: &str, holder: Option<&str>, title: &str| -> TaskView {
            serde_json::from_value(json!({
                "id": id, "from": "CC-1", "to": "any", "holder": holder, "title": title,
                "state": if holder.is_some() { "working" } else { "submitted" },
                "created": "2026-01-01T00:00:00.000Z", "updated": "2026-01-01T00:00:00.000Z"
            }))
            .unwrap()
        };
        let now = 1_767_225_600_000 + 3 * 60_000;
        let table = board_table(
            &[
                t("T-10", Some("CC-22"), "Fix parser"),
                t("T-9", None, "Docs"),
            ],
            now,
        );
        assert_eq!(
            table,
            "ID    STATE      FROM → HOLDER  AGE  TITLE\n\
             T-10  working    CC-1 → CC-22   3m   Fix parser\n\
             T-9   submitted  CC-1 → (any)   3m   Docs"
        );
    }
}
