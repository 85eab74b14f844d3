//! `claude-relay tail [--session NAME] [--content] [--json]`: the hub's traffic, live, one line
//! per event — time, who → whom, kind, size, state — and the bodies only with `--content`.
//!
//! It follows the operator feed with a WebSocket `subscribe` frame (docs/PROTOCOL.md, "The
//! operator feed"), the same events the web console gets over server-sent events, and needs
//! the same right: the hub token (`--token-file`, `RELAY_TOKEN`, `RELAY_TOKEN_FILE`), or a
//! loopback connection to a hub without one (docs/SECURITY.md).
//!
//! Everything printed came from other clients through the hub (names are checked by the hub,
//! bodies are anything), so every string goes through `relay_local::display` first: no control
//! or bidi character reaches the terminal raw. `--json` writes each event as one JSON object
//! per line, with those characters as `\uXXXX` escapes (the same data once parsed).

use std::{io::Write, process::ExitCode, time::Duration};

use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;
use mcp_bridge::dial::{self, connect_with};
use relay_local::display;
use relay_proto::{
    SessionId,
    time::Iso,
    wire::{ClientFrame, ServerFrame},
    wire_feed::{FeedEvent, Subscribe},
};
use tokio_tungstenite::tungstenite::Message;

use super::{hub_ping::describe_connect_error, sessions_cmd::HubConn};

/// How long the hub may take to accept the connection and answer the subscription.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Arguments of `claude-relay tail`.
#[derive(Debug, clap::Args)]
pub(crate) struct TailArgs {
    /// Only events that concern this session: its sends, mail to it, broadcasts, its
    /// presence, its reads.
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,
    /// Also print each message's body (indented under its line).
    #[arg(long)]
    pub content: bool,
    /// One JSON object per event instead of text lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub hub: HubConn,
}

/// Runs `claude-relay tail` until the hub closes the connection or the user stops it.
pub(super) fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let only = args
        .session
        .as_deref()
        .map(|s| SessionId::parse(s.trim()).map_err(|e| anyhow!("--session {s:?}: {e}")))
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(follow(&args, only.as_ref()))
}

async fn follow(args: &TailArgs, only: Option<&SessionId>) -> anyhow::Result<ExitCode> {
    let url = &args.hub.relay_url;
    let auth = args.hub.auth();
    let mut ws = connect_with(url, &auth, CONNECT_TIMEOUT)
        .await
        .map_err(|e| anyhow!("{}", describe_connect_error(url, &e)))?;
    let subscribe = ClientFrame::Subscribe(Subscribe {
        content: args.content,
        ..Default::default()
    });
    dial::send_frame(&mut ws, &subscribe)
        .await
        .map_err(|e| anyhow!("{}", describe_connect_error(url, &e)))?;
    let mut out = std::io::stdout().lock();
    let mut subscribed = false;
    loop {
        let next = if subscribed {
            ws.next().await
        } else {
            tokio::time::timeout(CONNECT_TIMEOUT, ws.next())
                .await
                .map_err(|_| anyhow!("the hub at {url} did not answer the subscription"))?
        };
        let text = match next {
            None => bail!("the hub closed the connection"),
            Some(Err(e)) => bail!("connection to the hub lost: {e}"),
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                bail!("the hub closed the connection: {}", display::line(&why));
            }
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
        };
        let frame: ServerFrame = match serde_json::from_str(&text) {
            Ok(f) => f,
            // A frame this version does not know: not ours to print.
            Err(_) => continue,
        };
        match frame {
            ServerFrame::Subscribed(s) => {
                subscribed = true;
                // On stderr, so that `--json` output stays pure.
                eprintln!(
                    "following {} (epoch {}){}; Ctrl-C to stop",
                    display::line(url),
                    display::line(&s.epoch),
                    if s.content { ", with bodies" } else { "" }
                );
            }
            ServerFrame::Error(e) => bail!("the hub refused: {}", display::line(&e.message)),
            ServerFrame::Event(ev) => {
                if !concerns(&ev, only) {
                    continue;
                }
                let printed = if args.json {
                    let json = serde_json::to_string(&ev).expect("events serialize");
                    writeln!(out, "{}", display::json(&json))
                } else {
                    writeln!(out, "{}", render(&ev, args.content))
                };
                // The reader went away (`| head`): stop quietly.
                if printed.and_then(|()| out.flush()).is_err() {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            _ => {}
        }
    }
}

/// Whether `ev` concerns `only` (everything does when no session was given).
fn concerns(ev: &FeedEvent, only: Option<&SessionId>) -> bool {
    let Some(id) = only.map(SessionId::as_str) else {
        return true;
    };
    match ev {
        FeedEvent::Session(s) => s.id == id,
        FeedEvent::Message(m) => m.from == id || m.to == id || m.to == relay_proto::BROADCAST,
        FeedEvent::Delivered(d) => d.to == id,
        FeedEvent::Read(r) => r.by == id,
        FeedEvent::Task(t) => {
            t.by == id || t.from == id || t.to == id || t.holder.as_deref() == Some(id)
        }
        FeedEvent::Approval(a) => a.session == id,
        FeedEvent::Lagged(_) => true,
    }
}

/// One event as a text line (and, with `content`, the body indented under it).
fn render(ev: &FeedEvent, content: bool) -> String {
    let seqs = |s: &[u64]| {
        s.iter()
            .map(|n| format!("#{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match ev {
        FeedEvent::Session(s) => format!(
            "{}  {}  {}",
            Iso(s.ts),
            display::line(&s.id),
            if s.online { "online" } else { "offline" }
        ),
        FeedEvent::Message(m) => {
            let state = match m.recipients {
                Some(n) => format!("{} to {n}", m.state),
                None => m.state.clone(),
            };
            let mut line = format!(
                "{}  {} → {}  message  {} B  {}  #{}",
                Iso(m.ts),
                display::line(&m.from),
                display::line(&m.to),
                m.bytes,
                display::line(&state),
                m.seq
            );
            if content && let Some(body) = &m.content {
                for l in display::text(body).lines() {
                    line.push_str("\n    │ ");
                    line.push_str(l);
                }
            }
            line
        }
        FeedEvent::Delivered(d) => format!(
            "{}  → {}  delivered  {}",
            Iso(d.ts),
            display::line(&d.to),
            seqs(&d.seqs)
        ),
        FeedEvent::Read(r) => format!(
            "{}  {}  read  {}  ({} unread left)",
            Iso(r.ts),
            display::line(&r.by),
            seqs(&r.seqs),
            r.unread
        ),
        FeedEvent::Task(t) => format!(
            "{}  {} → {}  task {}  {} by {}  {}  {}",
            Iso(t.ts),
            display::line(&t.from),
            display::line(t.holder.as_deref().unwrap_or(&t.to)),
            display::line(&t.id),
            display::line(&t.action),
            display::line(&t.by),
            t.state,
            display::line(&t.title)
        ),
        FeedEvent::Approval(a) => format!(
            "{}  {}  approval {}  {}  {}: {}{}",
            Iso(a.decided.unwrap_or(a.created)),
            display::line(&a.session),
            display::line(&a.id),
            a.state.as_str(),
            display::line(&a.tool),
            display::line(&a.summary),
            a.by.as_deref()
                .map(|b| format!("  by {}", display::line(b)))
                .unwrap_or_default()
        ),
        FeedEvent::Lagged(l) => format!(
            "{}  … {} events missed: this tail fell behind",
            Iso(relay_proto::time::now_ms()),
            l.missed
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_proto::{
        wire_feed::{MessageEvent, SessionEvent, TaskMoved},
        wire_tasks::TaskState,
    };

    fn message(content: Option<&str>) -> FeedEvent {
        FeedEvent::Message(MessageEvent {
            seq: 4,
            from: "CC-1".into(),
            to: "all".into(),
            ts: 0,
            bytes: 11,
            state: "delivered".into(),
            recipients: Some(2),
            content: content.map(str::to_string),
        })
    }

    #[test]
    fn lines_show_route_kind_size_state_and_escaped_bodies() {
        assert_eq!(
            render(&message(None), false),
            "1970-01-01T00:00:00.000Z  CC-1 → all  message  11 B  delivered to 2  #4"
        );
        let with_body = render(&message(Some("hi\n\u{1b}[2Jthere")), true);
        assert!(
            with_body.ends_with("#4\n    │ hi\n    │ \\u{1b}[2Jthere"),
            "{with_body}"
        );
    }

    #[test]
    fn a_session_filter_keeps_what_concerns_it() {
        let cc2 = SessionId::parse("CC-2").unwrap();
        assert!(
            concerns(&message(None), Some(&cc2)),
            "broadcasts reach everyone"
        );
        let s = FeedEvent::Session(SessionEvent {
            id: "CC-1".into(),
            online: true,
            ts: 0,
        });
        assert!(!concerns(&s, Some(&cc2)));
        assert!(concerns(&s, None));
    }

    #[test]
    fn a_task_line_names_route_id_move_state_and_an_escaped_title() {
        let t = FeedEvent::Task(TaskMoved {
            id: "T-3".into(),
            state: TaskState::Working,
            action: "claim".into(),
            by: "CC-2".into(),
            from: "CC-1".into(),
            to: "any".into(),
            holder: Some("CC-2".into()),
            title: "Fix\u{1b}[2J the flaky test".into(),
            created: 0,
            ts: 0,
        });
        assert_eq!(
            render(&t, false),
            "1970-01-01T00:00:00.000Z  CC-1 → CC-2  task T-3  claim by CC-2  working  \
             Fix\\u{1b}[2J the flaky test"
        );
        let cc2 = SessionId::parse("CC-2").unwrap();
        let cc3 = SessionId::parse("CC-3").unwrap();
        assert!(concerns(&t, Some(&cc2)) && !concerns(&t, Some(&cc3)));
    }
}
