//! `claude-relay approvals`: the approval inbox from a terminal (docs/SECURITY.md,
//! "Approvals").
//!
//! - `claude-relay approvals [--json] [--watch]`: the pending prompts (oldest first) and the
//!   latest verdicts; `--json` prints the hub's list (each with its `id`; bidi and C1
//!   controls written as `\uXXXX` escapes by `relay_local::display::json`); `--watch` then
//!   follows the hub's event stream and prints a line for each prompt filed or decided.
//! - `claude-relay approvals allow|deny ID [--message TEXT]`: a human's verdict — **only
//!   from an interactive terminal**: stdin must be a terminal and this process in its
//!   foreground process group (a background job, or a tool that merely redirected
//!   `</dev/tty`, is not the person at the keyboard), and the human confirms by typing the
//!   prompt's id back after seeing what it would run. Otherwise it refuses, sends nothing and
//!   exits 2.
//!
//! How it authenticates: as the hub's operator, over the hub's HTTP API
//! ([`super::operator_http`]) — the token as a Bearer header, or, on a hub without one, as a
//! loopback client with the hub's own origin and CSRF token. Answers exist only there: the
//! WebSocket protocol that bridges (and so agents' MCP tools) speak has no frame that answers
//! a prompt. What the TTY rule does not stop is said in docs/SECURITY.md.

use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
};

use anyhow::Context as _;
use http_body_util::BodyExt;
use relay_local::display;
use relay_proto::wire_approvals::{ApprovalState, ApprovalView};
use serde_json::{Value, json};

use super::{operator_http::Operator, sessions_cmd::HubConn};

/// Exit code of an answer refused: stdin not a terminal, not its foreground process group,
/// or the id not typed back.
const EXIT_REFUSED: u8 = 2;

/// Arguments of `claude-relay approvals`.
#[derive(Debug, clap::Args)]
pub(crate) struct ApprovalsArgs {
    #[command(subcommand)]
    action: Option<Action>,
    /// Print the list as JSON (the hub's objects, each with its `id`).
    #[arg(long)]
    json: bool,
    /// After the list, follow the inbox: one line per prompt filed or decided.
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    hub: HubConn,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Allow prompt ID (interactive terminal only).
    Allow(Verdict),
    /// Deny prompt ID (interactive terminal only).
    Deny(Verdict),
}

#[derive(Debug, clap::Args)]
struct Verdict {
    /// The prompt (`A-7`, or `7`).
    id: String,
    /// Told to the agent with the verdict.
    #[arg(long, value_name = "TEXT")]
    message: Option<String>,
}

/// Runs `claude-relay approvals`.
pub(super) fn run(args: ApprovalsArgs) -> anyhow::Result<ExitCode> {
    // Checked before anything else: a refused answer reaches nothing, not even the hub.
    if let Some(Action::Allow(_) | Action::Deny(_)) = &args.action {
        if !std::io::stdin().is_terminal() {
            return Ok(refuse(
                "answers are taken only from an interactive terminal, and stdin is not one \
                 (an agent's shell tool runs commands that way)",
            ));
        }
        if !in_foreground() {
            return Ok(refuse(
                "this process is not in the terminal's foreground process group (a \
                 background job, or a tool that only redirected its stdin from the terminal)",
            ));
        }
    }
    let op = Operator::new(&args.hub.relay_url, args.hub.auth())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match args.action {
            Some(Action::Allow(v)) => answer(&op, "allow", v).await,
            Some(Action::Deny(v)) => answer(&op, "deny", v).await,
            None => list(&op, args.json, args.watch).await,
        }
    })
}

/// Says why an answer was refused; the exit code for it.
fn refuse(why: &str) -> ExitCode {
    eprintln!(
        "claude-relay approvals: refused — {why}. Nothing was changed. Answer in the console, \
         or type the command yourself."
    );
    ExitCode::from(EXIT_REFUSED)
}

/// Whether this process is in the foreground process group of the terminal on stdin: the
/// one the keyboard talks to.
fn in_foreground() -> bool {
    // SAFETY: tcgetpgrp and getpgrp only read process state; fd 0 is checked to be a
    // terminal by the caller (tcgetpgrp returns -1 otherwise, which never equals a group).
    let (fg, mine) = unsafe { (libc::tcgetpgrp(0), libc::getpgrp()) };
    fg > 0 && fg == mine
}

/// Shows prompt `id` (its line, then its input preview) and asks the human at the terminal
/// to type its id back; true when they did (`A-7` or `7`).
fn confirmed(id: &str, behavior: &str, shown: &ApprovalView) -> anyhow::Result<bool> {
    let mut err = std::io::stderr().lock();
    writeln!(err, "{}", line(shown, relay_proto::time::now_ms()))?;
    // The whole preview (bounded by the hub, MAX_PREVIEW), not only the summary line.
    writeln!(err, "input: {}", display::text(&shown.preview))?;
    write!(err, "Type {id} to {behavior} it (anything else cancels): ")?;
    err.flush()?;
    drop(err);
    let mut typed = String::new();
    std::io::stdin()
        .read_line(&mut typed)
        .context("reading the confirmation from the terminal")?;
    let want = relay_proto::wire_approvals::parse_approval_id(id);
    Ok(want.is_some() && relay_proto::wire_approvals::parse_approval_id(typed.trim()) == want)
}

/// Fails with what the hub said for a non-2xx answer.
fn check(status: u16, body: &str, what: &str) -> anyhow::Result<()> {
    match status {
        200..=299 => Ok(()),
        401 => anyhow::bail!(
            "{what}: the hub wants its token (--token-file, RELAY_TOKEN or RELAY_TOKEN_FILE): {}",
            display::line(body.trim())
        ),
        _ => anyhow::bail!(
            "{what}: the hub answered {status}: {}",
            display::line(body.trim())
        ),
    }
}

async fn list(op: &Operator, as_json: bool, watch: bool) -> anyhow::Result<ExitCode> {
    // Following starts before the list is read, so nothing filed in between is missed.
    let feed = if watch {
        let resp = op
            .send("GET", "/api/feed", &[("accept", "text/event-stream")], None)
            .await?;
        if !resp.status().is_success() {
            anyhow::bail!("following the inbox: the hub answered {}", resp.status());
        }
        Some(resp)
    } else {
        None
    };
    let r = op.call("GET", "/api/approvals", &[], None).await?;
    check(r.status, &r.body, "listing approvals")?;
    let v: Value = serde_json::from_str(&r.body).context("the hub's list is not JSON")?;
    let items: Vec<ApprovalView> = serde_json::from_value(v["approvals"].clone())
        .context("the hub's list has an unexpected shape")?;
    let now = v["now"].as_i64().unwrap_or_else(relay_proto::time::now_ms);
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", display::json(&json!(items).to_string()))?;
    } else {
        write!(out, "{}", table(&items, now))?;
    }
    out.flush()?;
    drop(out);
    if let Some(feed) = feed {
        follow(feed, as_json).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The list as people read it: pending first, then the latest verdicts.
fn table(items: &[ApprovalView], now: i64) -> String {
    let pending: Vec<&ApprovalView> = items
        .iter()
        .filter(|a| a.state == ApprovalState::Pending)
        .collect();
    let mut s = String::new();
    if pending.is_empty() {
        s.push_str("No permission prompt is waiting.\n");
    } else {
        s.push_str(&format!(
            "{} waiting (answer: claude-relay approvals allow|deny ID):\n",
            pending.len()
        ));
        for a in pending {
            s.push_str(&format!("  {}\n", line(a, now)));
        }
    }
    let done: Vec<&ApprovalView> = items
        .iter()
        .filter(|a| a.state != ApprovalState::Pending)
        .take(10)
        .collect();
    if !done.is_empty() {
        s.push_str("Recent:\n");
        for a in done {
            s.push_str(&format!("  {}\n", line(a, now)));
        }
    }
    s
}

/// One prompt on one line (every field sanitised: they come from agents).
fn line(a: &ApprovalView, now: i64) -> String {
    let age = (now - a.created).max(0) / 1000;
    let place = match (&a.host, &a.cwd) {
        (Some(h), Some(c)) => format!("{h}:{c}"),
        (Some(h), None) => h.clone(),
        (None, Some(c)) => c.clone(),
        (None, None) => String::new(),
    };
    let mut l = format!(
        "{:<6} {:<8} {:>5}s  {}  {}  {}: {}",
        a.id,
        a.state.as_str(),
        age,
        display::line(&a.session),
        display::line(&place),
        display::line(&a.tool),
        display::line(&a.summary),
    );
    if let Some(cut) = cut_note(a) {
        l.push_str(&format!("  [{cut}]"));
    }
    if let Some(by) = &a.by {
        l.push_str(&format!("  — by {}", display::line(by)));
    }
    l
}

/// Says that the preview is not the whole input (the console says the same next to Allow).
fn cut_note(a: &ApprovalView) -> Option<String> {
    if !a.truncated {
        return None;
    }
    let shown = a.preview.chars().count();
    Some(match a.input_chars {
        Some(all) => format!("input cut: {shown} of {all} characters"),
        None => format!("input cut: {shown} characters, cut by the agent's client"),
    })
}

/// Follows the `/api/feed` answer `resp` and prints each `approval` event.
async fn follow(resp: hyper::Response<hyper::body::Incoming>, as_json: bool) -> anyhow::Result<()> {
    let mut body = resp.into_body();
    let mut buf = String::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the hub's event stream broke")?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        buf.push_str(&String::from_utf8_lossy(data));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if !event.lines().any(|l| l == "event: approval") {
                continue;
            }
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let Ok(a) = serde_json::from_str::<ApprovalView>(data) else {
                continue;
            };
            let mut out = std::io::stdout().lock();
            if as_json {
                writeln!(out, "{}", display::json(&json!(a).to_string()))?;
            } else {
                writeln!(out, "{}", line(&a, relay_proto::time::now_ms()))?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

async fn answer(op: &Operator, behavior: &str, v: Verdict) -> anyhow::Result<ExitCode> {
    let id = relay_proto::wire_approvals::parse_approval_id(&v.id)
        .map(relay_proto::wire_approvals::approval_id)
        .with_context(|| format!("{:?} is not an approval id (A-7)", v.id))?;
    let mut headers: Vec<(&str, String)> = vec![("content-type", "application/json".into())];
    if !op.has_token() {
        // A hub without a token: its loopback operator's CSRF token and its own origin.
        let r = op.call("GET", "/api/approvals", &[], None).await?;
        check(r.status, &r.body, "asking the hub")?;
        let v: Value = serde_json::from_str(&r.body).context("the hub's list is not JSON")?;
        if let Some(csrf) = v["csrf"].as_str() {
            headers.push(("x-relay-csrf", csrf.to_string()));
        }
        headers.push(("origin", op.origin.clone()));
    }
    // What would run, then the human types the id back: an answer needs the person at the
    // keyboard, not only a terminal on stdin.
    let r = op
        .call("GET", &format!("/api/approvals/{id}"), &[], None)
        .await?;
    check(r.status, &r.body, &format!("reading {id}"))?;
    let shown: Value = serde_json::from_str(&r.body).context("the hub's answer is not JSON")?;
    let shown: ApprovalView = serde_json::from_value(shown["approval"].clone())
        .context("the hub's prompt has an unexpected shape")?;
    if !confirmed(&id, behavior, &shown)? {
        eprintln!("claude-relay approvals: not confirmed; nothing was changed.");
        return Ok(ExitCode::from(EXIT_REFUSED));
    }
    let body = json!({"behavior": behavior, "message": v.message}).to_string();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = op
        .call(
            "POST",
            &format!("/api/approvals/{id}"),
            &headers,
            Some(body),
        )
        .await?;
    if r.status == 409 {
        let now: Value = serde_json::from_str(&r.body).unwrap_or_default();
        eprintln!(
            "{id} was decided already: {} (the first answer wins; nothing changed)",
            display::line(now["approval"]["state"].as_str().unwrap_or("?"))
        );
        return Ok(ExitCode::from(1));
    }
    check(r.status, &r.body, &format!("answering {id}"))?;
    println!(
        "{id}: {}",
        if behavior == "allow" {
            "allowed"
        } else {
            "denied"
        }
    );
    Ok(ExitCode::SUCCESS)
}
