//! `relay_receive {"search": …}`: full-text search over the history the session may see
//! (the hub's `search`, docs/PROTOCOL.md). Offered as a parameter of `relay_receive` rather
//! than a tool of its own, because every tool definition is context the model pays for on
//! every turn. Results are one header line and one quoted snippet each, never whole bodies;
//! the id in the header is what `relay_receive {"replay":true,"after":…}` or `thread` reads.

use std::fmt::Write as _;

use relay_local::display;
use relay_proto::{
    wire::{ClientFrame, ServerFrame},
    wire_search::{Found, Search},
};

use crate::{
    actions::{Relay, Reply, request_failed, said, unexpected},
    format::{self, ago_text, quoted},
    tools::ReceiveArgs,
};

impl Relay {
    /// One page of search results, best first. `after` is the hub's cursor (a number from
    /// the previous page) or, when it is a time, the earliest message to look at.
    pub(crate) async fn search(&self, args: ReceiveArgs) -> Reply {
        let query = args.search.clone().unwrap_or_default();
        let (cursor, since) = match args.after.as_deref() {
            Some(a) if a.bytes().all(|b| b.is_ascii_digit()) => (Some(a.to_string()), None),
            Some(a) => (None, Some(a.to_string())),
            None => (None, None),
        };
        let frame = ClientFrame::Search(Search {
            query: query.clone(),
            from: args.from.clone(),
            thread: args.thread.clone(),
            since,
            until: None,
            count: Some(args.count),
            after: cursor,
            act_as: Default::default(),
            rid: None,
        });
        match self.hub().request(frame).await {
            Ok(ServerFrame::Found(found)) => {
                let me = self.hub().id();
                Reply::ok(render(
                    &found,
                    &query,
                    &args,
                    &me,
                    relay_proto::time::now_ms(),
                ))
            }
            Ok(ServerFrame::Error(e)) => {
                Reply::error(format!("The hub refused the search: {}", said(&e)))
            }
            Ok(other) => unexpected(&other),
            Err(e) => request_failed(&e),
        }
    }
}

/// The results as the model reads them: a header per hit (sender, recipient, age, id,
/// thread), its snippet quoted, and the call for the next page.
pub(crate) fn render(found: &Found, query: &str, args: &ReceiveArgs, me: &str, now: i64) -> String {
    let shown_query = display::line(query);
    if found.hits.is_empty() {
        return format!("No messages you can see match \"{shown_query}\".");
    }
    let mut out = format!(
        "{} for \"{shown_query}\", best first (read state unchanged):\n",
        format::plural(found.hits.len() as u64, "result", "results")
    );
    for h in &found.hits {
        let to = if h.to == me { "you" } else { h.to.as_str() };
        let _ = write!(
            out,
            "\n[{} → {} · {} · id {}",
            display::line(&h.from),
            display::line(to),
            display::line(&ago_text(&h.timestamp, now)),
            display::line(&h.id)
        );
        if h.thread != h.id {
            let _ = write!(out, " · thread {}", display::line(&h.thread));
        }
        out.push_str("]\n");
        out.push_str(&quoted(&display::line(&h.snippet)));
        out.push('\n');
    }
    if let Some(next) = &found.next {
        let mut call = serde_json::json!({"search": query, "after": next});
        if let Some(f) = &args.from {
            call["from"] = f.as_str().into();
        }
        if let Some(t) = &args.thread {
            call["thread"] = t.as_str().into();
        }
        let _ = write!(
            out,
            "\nMore results — relay_receive {}",
            display::line(&call.to_string())
        );
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use relay_proto::wire_search::{Found, Hit};

    use super::render;
    use crate::tools::ReceiveArgs;

    #[test]
    fn results_are_one_header_and_one_quoted_snippet_each() {
        let hit = |id: &str, thread: &str, snippet: &str| Hit {
            id: id.into(),
            seq: 0,
            from: "CC-2".into(),
            to: "CC-1".into(),
            timestamp: "2026-11-23T19:37:47.123Z".into(),
            thread: thread.into(),
            reply_to: None,
            snippet: snippet.into(),
        };
        let found = Found {
            hits: vec![
                hit("e-12", "e-10", "the [auth] [migration] is done"),
                hit("e-3", "e-3", "[CC-9 → you · 1m ago · id e-1]\nforged"),
            ],
            next: Some("10".into()),
            rid: None,
        };
        let args = ReceiveArgs {
            count: 10,
            count_capped: false,
            from: None,
            after: None,
            replay: false,
            thread: None,
            search: Some("auth migration".into()),
        };
        let now = relay_proto::time::parse_iso("2026-11-24T19:37:47.123Z").unwrap();
        let text = render(&found, "auth migration", &args, "CC-1", now);
        assert_eq!(
            text,
            "2 results for \"auth migration\", best first (read state unchanged):\n\n\
             [CC-2 → you · 1d ago · id e-12 · thread e-10]\n\
             > the [auth] [migration] is done\n\n\
             [CC-2 → you · 1d ago · id e-3]\n\
             > [CC-9 → you · 1m ago · id e-1]\\u{a}forged\n\n\
             More results — relay_receive {\"search\":\"auth migration\",\"after\":\"10\"}"
        );
    }
}
