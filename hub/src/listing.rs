//! Pages of `get_sessions`: which sessions go into one `sessions` reply, in what order, and
//! where the next page starts.
//!
//! The session table can hold many thousands of sessions (up to
//! [`HubConfig::max_sessions`](crate::HubConfig::max_sessions) plus the ones online), each with
//! up to 4 KiB of metadata, so it is never sent whole: a page holds at most `limit` sessions
//! ([`PAGE_MAX`] by default and at most) and stops before `max_bytes` of JSON (the hub's page
//! budget), so no reply can outgrow what clients accept (16 MiB). A client that asks without
//! `limit`/`after` — the Node relay's — gets the first page: the sessions that matter most.
//!
//! Order: online sessions first, by id; then offline ones, most recently seen first (ties by
//! id, descending). The cursor (`next`, passed back as `after`) is opaque to clients: `on:<id>` while in
//! the online part, `off:<last seen ms>:<id>` after it. A session that comes online or goes
//! offline between two pages may be missed or seen twice by that reader — a listing is a
//! snapshot of something that moves.

use std::collections::{BTreeMap, HashSet};

use relay_proto::{
    SessionId,
    time::{iso, now_ms},
    wire::SessionView,
};

use crate::{
    router::Router,
    store::{Backend, SessionRecord, StoreError},
};

/// Default and largest number of sessions in one page.
pub(crate) const PAGE_MAX: usize = 1000;
/// Rows read from the store per step of the offline part.
const BATCH: usize = 256;
/// Bytes of a session in a reply besides its id and metadata, at most:
/// `"":{"online":false,"lastSeen":"…","connectedAt":"…",…},`.
const ENTRY_FIXED: usize = 112;

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cursor {
    /// The first page.
    Start,
    /// After this online session.
    Online(String),
    /// After this offline session (last seen, id).
    Offline(i64, String),
}

impl Cursor {
    /// Reads a client's `after`; `None` for something that is not a cursor this hub made.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        if let Some(id) = s.strip_prefix("on:") {
            return Some(Self::Online(id.to_string()));
        }
        let rest = s.strip_prefix("off:")?;
        let (seen, id) = rest.split_once(':')?;
        Some(Self::Offline(seen.parse().ok()?, id.to_string()))
    }

    /// The text sent as `next`.
    pub(crate) fn encode(&self) -> Option<String> {
        match self {
            Self::Start => None,
            Self::Online(id) => Some(format!("on:{id}")),
            Self::Offline(seen, id) => Some(format!("off:{seen}:{id}")),
        }
    }
}

/// One page of sessions.
#[derive(Debug, Default)]
pub(crate) struct Page {
    /// The sessions, by id.
    pub sessions: BTreeMap<String, SessionView>,
    /// Sessions known in all.
    pub total: u64,
    /// Sessions online now.
    pub online: u64,
    /// Where the next page starts, when there is one.
    pub next: Option<String>,
}

/// Builds the page after `cursor` (runs on the store thread; `router` says who is online).
pub(crate) fn page(
    store: &mut dyn Backend,
    router: &Router,
    cursor: &Cursor,
    limit: usize,
    max_bytes: usize,
    reader: Option<&SessionId>,
) -> Result<Page, StoreError> {
    let now = now_ms();
    // A first page is a read of the whole list: it turns a stale delta reader's batches
    // back on (`Router::online_listed`); a later page continues a read already made.
    let online = match cursor {
        Cursor::Start => router.online_listed(reader),
        _ => router.online(),
    };
    let mut page = Page {
        total: store.session_count()?,
        online: online.len() as u64,
        ..Page::default()
    };
    let mut filler = Filler {
        page: &mut page,
        limit,
        max_bytes,
        bytes: 0,
        last: Cursor::Start,
    };
    let mut offline_after: Option<(i64, String)> = None;
    match cursor {
        Cursor::Start | Cursor::Online(_) => {
            let start = match cursor {
                Cursor::Online(id) => online.partition_point(|o| o.as_str() <= id.as_str()),
                _ => 0,
            };
            for id in &online[start..] {
                // Online but not recorded (only while its registration is in flight): skip.
                let Some(rec) = store.session(id)? else {
                    continue;
                };
                let len = ENTRY_FIXED + id.len() + rec.meta_bytes;
                let view = view(rec, router.connected_at(id), now);
                if !filler.take(id.clone(), view, len, Cursor::Online(id.clone())) {
                    return Ok(filler.done(true));
                }
            }
        }
        Cursor::Offline(seen, id) => offline_after = Some((*seen, id.clone())),
    }
    let listed: HashSet<&str> = online.iter().map(String::as_str).collect();
    loop {
        let rows = store
            .sessions_by_recency(offline_after.as_ref().map(|(s, i)| (*s, i.as_str())), BATCH)?;
        let exhausted = rows.len() < BATCH;
        for rec in rows {
            offline_after = Some((rec.last_seen, rec.id.clone()));
            // Online ones were listed first (from the same snapshot).
            if listed.contains(rec.id.as_str()) {
                continue;
            }
            let at = Cursor::Offline(rec.last_seen, rec.id.clone());
            let id = rec.id.clone();
            let len = ENTRY_FIXED + id.len() + rec.meta_bytes;
            if !filler.take(id, view(rec, None, now), len, at) {
                return Ok(filler.done(true));
            }
        }
        if exhausted {
            return Ok(filler.done(false));
        }
    }
}

/// Adds sessions to a page until its count or byte budget is reached.
struct Filler<'a> {
    page: &'a mut Page,
    limit: usize,
    max_bytes: usize,
    bytes: usize,
    last: Cursor,
}

impl Filler<'_> {
    /// Adds one session of `len` reply bytes; false (adding nothing) when the page is full,
    /// so there is more. The page always holds at least one session.
    fn take(&mut self, id: String, view: SessionView, len: usize, at: Cursor) -> bool {
        if self.page.sessions.len() >= self.limit {
            return false;
        }
        if !self.page.sessions.is_empty() && self.bytes + len > self.max_bytes {
            return false;
        }
        self.bytes += len;
        self.page.sessions.insert(id, view);
        self.last = at;
        true
    }

    fn done(self, more: bool) -> Page {
        if more {
            self.page.next = self.last.encode();
        }
        std::mem::take(self.page)
    }
}

/// How a client sees a session record (online ones: last seen now, connected since their
/// current registration).
fn view(rec: SessionRecord, online_since: Option<i64>, now: i64) -> SessionView {
    SessionView {
        online: online_since.is_some(),
        last_seen: Some(iso(if online_since.is_some() {
            now
        } else {
            rec.last_seen
        })),
        connected_at: online_since.or(rec.connected_at).map(iso),
        meta: rec.meta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_text_is_refused() {
        for c in [
            Cursor::Online("CC-1".into()),
            Cursor::Offline(1_795_462_667_123, "laptop-3f2a".into()),
        ] {
            assert_eq!(Cursor::parse(&c.encode().unwrap()), Some(c));
        }
        assert_eq!(Cursor::Start.encode(), None);
        for bad in ["", "CC-1", "off:x:CC-1", "off:12", "on"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
