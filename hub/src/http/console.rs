//! The web console: one page, its stylesheet and script (embedded in the binary: no build
//! step, nothing fetched from elsewhere, works offline), and the two reads its script makes —
//! the state to start from (`/api/state`: the hub, its sessions, the recent message flow and
//! the task board) and one message body when the viewer opens it
//! (`/api/message?seq=N`). Live changes arrive on the event stream (`/api/feed`, see
//! [`super::sse`]).
//!
//! Everything a session reports about itself (its name, cwd, host, client) and every body
//! is attacker-controlled: the script renders all of it with `textContent`, never as HTML,
//! and the page's CSP allows no inline script at all.

use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};

use super::{Body, Ctx, auth::Who, health, routes};
use crate::store::{SessionRecord, StoreError, message_id, operator::Traffic, tasks::TaskRow};

/// The page.
pub(crate) const PAGE: &str = include_str!("../../assets/console.html");
/// Its stylesheet.
pub(crate) const CSS: &str = include_str!("../../assets/console.css");
/// Its script.
pub(crate) const JS: &str = include_str!("../../assets/console.js");

/// Messages the flow starts with.
pub(super) const FLOW_MESSAGES: usize = 200;
/// Sessions the console lists (online first, then the most recently seen).
pub(super) const MAX_SESSIONS: usize = 500;
/// Open tasks on the board (newest first).
pub(super) const BOARD_OPEN: usize = 200;
/// Finished tasks on the board (the most recent).
pub(super) const BOARD_FINISHED: usize = 50;
/// Longest metadata string passed on (cwd, host, …), in characters.
const MAX_FIELD: usize = 256;

/// What `/api/state` reads from the store in one call.
struct Read {
    sessions: Vec<SessionRecord>,
    unread: Vec<u64>,
    traffic: Vec<Traffic>,
    tasks: Option<Vec<TaskRow>>,
}

/// `GET /api/state`: the hub, its sessions, the recent flow, the task board.
pub(crate) async fn state(cx: &Ctx, who: &Who) -> Response<Body> {
    let store = health::store_state(cx).await;
    let online = cx.hub.router.online();
    let read = cx
        .hub
        .store
        .call(move |b| {
            // Online first (each is one indexed read; they are bounded by the connection
            // cap), then the most recently seen.
            let mut sessions = Vec::with_capacity(MAX_SESSIONS);
            for id in &online {
                if let Some(s) = b.session(id)? {
                    sessions.push(s);
                }
            }
            sessions.sort_by_key(|s| std::cmp::Reverse(s.last_seen));
            for s in b.sessions_by_recency(None, MAX_SESSIONS)? {
                if sessions.len() >= MAX_SESSIONS {
                    break;
                }
                if !online.contains(&s.id) {
                    sessions.push(s);
                }
            }
            let tasks = b
                .tasks()
                .map(|t| t.board(BOARD_OPEN, BOARD_FINISHED))
                .transpose()?;
            let Some(view) = b.operator() else {
                return Ok(Read {
                    sessions,
                    unread: Vec::new(),
                    traffic: Vec::new(),
                    tasks,
                });
            };
            let ids: Vec<String> = sessions.iter().map(|s| s.id.clone()).collect();
            let unread = view.unread_counts(&ids)?;
            let traffic = view.traffic(FLOW_MESSAGES)?;
            Ok(Read {
                sessions,
                unread,
                traffic,
                tasks,
            })
        })
        .await;
    // A store that cannot be read (a damaged file, one that did not answer) still gets the
    // page: the hub's own state, empty lists, and why they are empty.
    let (
        Read {
            sessions: records,
            unread,
            traffic,
            tasks,
        },
        unreadable,
    ) = match read {
        Ok(v) => (v, None),
        Err(e) => {
            tracing::warn!("console: store read failed: {e}");
            let empty = Read {
                sessions: Vec::new(),
                unread: Vec::new(),
                traffic: Vec::new(),
                tasks: None,
            };
            (empty, Some(e.to_string()))
        }
    };
    let epoch = cx.hub.store.epoch();
    let mut sessions: Vec<Value> = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let online = cx.hub.router.connected_at(&r.id);
            session_json(
                &r.id,
                &r.meta,
                online,
                r.last_seen,
                r.connected_at,
                unread.get(i),
            )
        })
        .collect();
    // Online first (a session may have left while the store was read); the sort is stable,
    // so each group stays most-recent first.
    sessions.sort_by_key(|s| !s["online"].as_bool().unwrap_or(false));
    let messages: Vec<Value> = traffic.iter().map(|t| traffic_json(&epoch, t)).collect();
    routes::json(
        StatusCode::OK,
        &json!({
            "hub": {
                "version": crate::VERSION,
                "uptimeS": cx.hub.metrics.uptime_s(),
                "epoch": &*epoch,
                "store": store,
                "tls": cx.tls,
                "auth": cx.hub.config.token.is_some(),
                "viewer": who.how.how(),
                "online": cx.hub.router.online().len(),
                "subscribers": cx.hub.feed.subscribers(),
            },
            "sessions": sessions,
            "messages": messages,
            // Null for a store that keeps no tasks.
            "tasks": tasks.map(|t| t.iter().map(task_json).collect::<Vec<_>>()),
            "csrf": who.csrf(cx),
            "unreadable": unreadable,
        }),
    )
}

/// `GET /api/message?seq=N`: one message with its body.
pub(crate) async fn message(cx: &Ctx, query: Option<&str>) -> Response<Body> {
    let Some(seq) = query
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("seq="))
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return routes::text(StatusCode::BAD_REQUEST, "give ?seq=N\n");
    };
    let found = cx
        .hub
        .store
        .call(move |b| match b.operator() {
            Some(view) => view.message(seq),
            None => Ok(None),
        })
        .await;
    match found {
        Ok(Some(m)) => {
            let epoch = cx.hub.store.epoch();
            routes::json(
                StatusCode::OK,
                &json!({
                    "seq": m.seq,
                    "id": message_id(&epoch, m.seq),
                    "from": &*m.from,
                    "to": &*m.to,
                    "ts": m.ts,
                    "content": m.content,
                }),
            )
        }
        Ok(None) => routes::text(StatusCode::NOT_FOUND, "no such message (expired?)\n"),
        Err(e) => store_error(e),
    }
}

fn store_error(e: StoreError) -> Response<Body> {
    tracing::warn!("console: store read failed: {e}");
    routes::text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the hub's store did not answer\n",
    )
}

/// One session as the console shows it: selected metadata, each string bounded.
fn session_json(
    id: &str,
    meta: &Map<String, Value>,
    online_since: Option<i64>,
    last_seen: i64,
    connected_at: Option<i64>,
    unread: Option<&u64>,
) -> Value {
    let field = |k: &str| -> Value {
        match meta.get(k) {
            Some(Value::String(s)) => Value::String(s.chars().take(MAX_FIELD).collect()),
            Some(Value::Number(n)) => Value::Number(n.clone()),
            _ => Value::Null,
        }
    };
    let client = match meta.get("client") {
        Some(Value::Object(c)) => json!({
            "name": c.get("name").and_then(Value::as_str).map(|s| s.chars().take(64).collect::<String>()),
            "version": c.get("version").and_then(Value::as_str).map(|s| s.chars().take(32).collect::<String>()),
        }),
        _ => Value::Null,
    };
    json!({
        "id": id,
        "online": online_since.is_some(),
        "lastSeen": if online_since.is_some() { relay_proto::time::now_ms() } else { last_seen },
        "connectedAt": online_since.or(connected_at),
        "unread": unread,
        "host": field("host"),
        "cwd": field("cwd"),
        "pid": field("pid"),
        "source": field("source"),
        "bridgeVersion": field("version"),
        "claudeCode": meta.contains_key("claudeSessionId"),
        "client": client,
        "addr": field("remoteAddress"),
    })
}

/// One task of the board: what a row shows (the same fields as a feed `task` event).
fn task_json(t: &TaskRow) -> Value {
    json!({
        "id": t.id(),
        "state": t.state,
        "from": t.from,
        "to": t.to,
        "holder": t.holder,
        "title": t.title,
        "created": t.created,
        "updated": t.updated,
    })
}

/// One message of the flow.
fn traffic_json(epoch: &str, t: &Traffic) -> Value {
    let state = if t.read_at.is_some() {
        "read"
    } else if t.delivered_at.is_some() {
        "delivered"
    } else {
        "stored"
    };
    json!({
        "seq": t.seq,
        "id": message_id(epoch, t.seq),
        "from": t.from,
        "to": t.to,
        "ts": t.ts,
        "bytes": t.bytes,
        "state": state,
        "readBy": t.read_by,
    })
}
