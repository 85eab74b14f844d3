//! `search`: full-text search over the history the asker may see (docs/PROTOCOL.md,
//! "search"). Who may use it: a registered session, or a connection naming an owned session
//! with its owner secret (as the task frames allow); either searches its own sends, direct
//! mail to it and broadcasts — the same rows `get_history` shows it; what it reveals is at
//! most a snippet of those. The query is checked here (size, words, ids, times, cursor); the index
//! thread ranks and pages (`store/sqlite/search.rs`), never the store thread.

use relay_proto::{
    id::validate,
    time::{iso, parse_iso},
    wire::{ServerFrame, codes},
    wire_search::{Found, Hit, MAX_QUERY_BYTES, Search},
};

use super::{ConnSession, page_size};
use crate::{
    HubState,
    store::{
        message_id, parse_message_id,
        search::{MAX_OFFSET, SearchQuery},
    },
};

/// Most results in one `found` page (each carries at most a short snippet, so a page stays
/// a few tens of kilobytes).
pub(crate) const SEARCH_PAGE_MAX: usize = 50;

impl ConnSession {
    pub(super) async fn search(&mut self, hub: &HubState, q: Search) {
        let rid = q.rid.clone();
        let viewer = match crate::tasks::handle::reader(self, hub, &q.act_as).await {
            Ok(viewer) => viewer,
            Err((code, why)) => return self.error(code, why, rid),
        };
        // None exactly when the hub was started with --no-search-index.
        let Some(index) = &hub.search else {
            return self.error(
                codes::UNAVAILABLE,
                "this hub keeps no search index (it was started with --no-search-index)"
                    .to_string(),
                rid,
            );
        };
        let query = match parse(hub, q) {
            Ok(query) => query,
            Err((code, why)) => return self.error(code, why, rid),
        };
        let (offset, count) = (query.offset, query.count);
        let page = index.search(viewer.as_str(), query).await;
        let page = match page {
            Ok(page) => page,
            Err(e) => return self.store_error(e, rid),
        };
        let epoch = hub.store.epoch();
        let next = offset + count;
        self.reply(ServerFrame::Found(Found {
            next: (page.more && next <= MAX_OFFSET).then(|| next.to_string()),
            hits: page
                .hits
                .into_iter()
                .map(|h| Hit {
                    id: message_id(&epoch, h.seq),
                    seq: h.seq,
                    from: h.from.to_string(),
                    to: h.to.to_string(),
                    timestamp: iso(h.ts),
                    thread: message_id(&epoch, h.reply.map_or(h.seq, |r| r.thread)),
                    reply_to: h.reply.map(|r| message_id(&epoch, r.to)),
                    snippet: h.snippet,
                })
                .collect(),
            rid,
        }));
    }
}

/// The store query for `q`, or the error code and words for the asker.
fn parse(hub: &HubState, q: Search) -> Result<SearchQuery, (&'static str, String)> {
    let bad = |why: String| (codes::BAD_FRAME, why);
    if q.query.len() > MAX_QUERY_BYTES {
        return Err((
            codes::TOO_LARGE,
            format!(
                "query is {} bytes; at most {MAX_QUERY_BYTES} are searched",
                q.query.len()
            ),
        ));
    }
    let (expr, phrase) = SearchQuery::terms(&q.query).map_err(bad)?;
    let from = match q.from.filter(|f| !f.is_empty()) {
        Some(f) => match validate(&f) {
            Ok(()) => Some(f),
            Err(e) => return Err((codes::INVALID_ID, format!("invalid from {f:?}: {e}"))),
        },
        None => None,
    };
    let epoch = hub.store.epoch();
    let thread = match q.thread.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(parse_message_id(&epoch, t).ok_or_else(|| {
            bad(format!(
                "thread {:?} is not a message id of this hub (ids look like {epoch}-42)",
                t.chars().take(80).collect::<String>()
            ))
        })?),
    };
    let time = |field: &str, v: Option<String>| match v.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => parse_iso(&v).map(Some).ok_or_else(|| {
            bad(format!(
                "{field} {:?} is not an ISO-8601 time (like 2026-11-23T19:37:47Z)",
                v.chars().take(80).collect::<String>()
            ))
        }),
    };
    let since = time("since", q.since)?;
    let until = time("until", q.until)?;
    let offset = match q.after.as_deref().filter(|a| !a.is_empty()) {
        None => 0,
        Some(a) => match a.parse::<usize>() {
            Ok(n) if n <= MAX_OFFSET => n,
            _ => {
                return Err(bad(
                    "after is not a cursor from this hub: pass the `next` of the previous \
                     page, or leave it out for the first page"
                        .into(),
                ));
            }
        },
    };
    Ok(SearchQuery {
        expr,
        phrase,
        from,
        thread,
        since,
        until,
        offset,
        count: page_size(q.count, hub).min(SEARCH_PAGE_MAX),
    })
}
