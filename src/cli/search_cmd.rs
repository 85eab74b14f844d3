//! `claude-relay search QUERY`: full-text search, for people, over the history a session may
//! see — its own sends, direct mail to it and broadcasts, never other sessions' direct mail
//! (the hub's `search`, docs/PROTOCOL.md). One line per result, best first: id, age,
//! sender → recipient, thread, snippet; `--json` for scripts.
//!
//! Identity: as `claude-relay tasks`, the CLI holds no name; it searches as `--session` (else
//! `CLAUDE_RELAY_SESSION_ID`) by presenting that session's owner secret, which the session's
//! bridge keeps on this machine.

use std::process::ExitCode;

use anyhow::{Context, bail};
use relay_local::display;
use relay_proto::{
    time::{ago, now_ms, parse_iso},
    wire::{ClientFrame, ServerFrame},
    wire_search::{Found, Search},
};

use super::tasks_cmd::{Reader, request};

/// Arguments of `claude-relay search`.
#[derive(Debug, clap::Args)]
pub(crate) struct SearchArgs {
    /// The words to find (all of them; a trailing * matches a prefix).
    #[arg(required = true, value_name = "QUERY")]
    query: Vec<String>,
    /// Only messages from this session.
    #[arg(long, value_name = "ID")]
    from: Option<String>,
    /// Only messages of this thread (a message id).
    #[arg(long, value_name = "ID")]
    thread: Option<String>,
    /// Only messages stored at or after this ISO-8601 time.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only messages stored before this ISO-8601 time.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Results per page (the hub caps it at 50).
    #[arg(long, default_value_t = 20)]
    count: u32,
    /// The page after this cursor (printed under a full page).
    #[arg(long, value_name = "CURSOR")]
    after: Option<String>,
    /// Machine-readable output (the hub's `found` frame).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    reader: Reader,
}

/// Runs `claude-relay search`.
pub(super) fn run(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(search(args))
}

async fn search(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let (_, act_as) = args.reader.act_as()?;
    let mut ws = args.reader.connect().await?;
    let frame = ClientFrame::Search(Search {
        query: args.query.join(" "),
        from: args.from,
        thread: args.thread,
        since: args.since,
        until: args.until,
        count: Some(args.count.max(1)),
        after: args.after,
        act_as,
        rid: None,
    });
    let found = match request(&mut ws, &frame).await? {
        ServerFrame::Found(f) => f,
        other => bail!("unexpected reply from the hub: {other:?}"),
    };
    if args.json {
        println!("{}", serde_json::to_string(&found)?);
    } else {
        print!("{}", lines(&found, now_ms()));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per hit, best first, then the cursor of the next page if there is one. Every
/// field that came from the hub is made safe for a terminal.
fn lines(found: &Found, now: i64) -> String {
    if found.hits.is_empty() {
        return "No matching messages.\n".into();
    }
    let mut out = String::new();
    for h in &found.hits {
        let age = parse_iso(&h.timestamp).map_or_else(|| h.timestamp.clone(), |t| ago(t, now));
        let thread = if h.thread == h.id {
            String::new()
        } else {
            format!(" (thread {})", display::line(&h.thread))
        };
        out.push_str(&format!(
            "{}  {age:>4}  {} → {}{thread}  {}\n",
            display::line(&h.id),
            display::line(&h.from),
            display::line(&h.to),
            display::line(&h.snippet)
        ));
    }
    if let Some(next) = &found.next {
        out.push_str(&format!("More: --after {}\n", display::line(next)));
    }
    out
}

#[cfg(test)]
mod tests {
    use relay_proto::wire_search::{Found, Hit};

    #[test]
    fn one_safe_line_per_hit() {
        let found = Found {
            hits: vec![Hit {
                id: "e-12".into(),
                seq: 12,
                from: "CC-2".into(),
                to: "all".into(),
                timestamp: "2026-11-23T19:37:47.123Z".into(),
                thread: "e-10".into(),
                reply_to: Some("e-10".into()),
                snippet: "the [auth]\n[migration]\u{1b}[2J".into(),
            }],
            next: Some("20".into()),
            rid: None,
        };
        let now = relay_proto::time::parse_iso("2026-11-23T19:40:47.123Z").unwrap();
        assert_eq!(
            super::lines(&found, now),
            "e-12    3m  CC-2 → all (thread e-10)  the [auth]\\u{a}[migration]\\u{1b}[2J\nMore: --after 20\n"
        );
    }
}
