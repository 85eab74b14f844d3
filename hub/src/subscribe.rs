//! The `subscribe` frame: the operator feed on a WebSocket (what `claude-relay tail` uses; the
//! console uses the same events over server-sent events). See docs/PROTOCOL.md, "The operator
//! feed", and docs/SECURITY.md for who may subscribe.
//!
//! A subscription forwards each feed event as an `event` frame into the connection's own
//! bounded outbox, from a task that ends with the connection. A subscriber too slow to read
//! is closed like any slow reader (outbox overflow) — the hub never waits for it.

use relay_proto::wire::{ServerFrame, codes};
use relay_proto::wire_feed::{Subscribe, Subscribed};

use crate::{HubState, dispatch::ConnSession};

/// Handles `subscribe` for `session`'s connection: only the operator's (see
/// [`crate::operator`]).
pub(crate) async fn handle(session: &mut ConnSession, hub: &HubState, s: Subscribe) {
    if let Err(denied) = session.operator {
        return session.error(
            codes::UNAUTHORIZED,
            format!("the feed is the hub operator's: {}", denied.why()),
            s.rid,
        );
    }
    if session.subscribed {
        return session.error(
            codes::BAD_FRAME,
            "this connection already follows the feed",
            s.rid,
        );
    }
    let mut sub = match hub.feed.subscribe(s.content) {
        Ok(sub) => sub,
        Err(full) => return session.error(codes::UNAVAILABLE, full.to_string(), s.rid),
    };
    session.subscribed = true;
    let outbox = session.outbox.clone();
    let _ = outbox.push_json(&ServerFrame::Subscribed(Subscribed {
        content: s.content,
        epoch: hub.store.epoch().to_string(),
        rid: s.rid,
    }));
    tracing::info!(content = s.content, "feed subscriber");
    let mut closed = outbox.closed_signal();
    tokio::spawn(tracing::Instrument::in_current_span(async move {
        loop {
            let ev = tokio::select! {
                _ = closed.wait_for(|c| *c) => break,
                ev = sub.next() => ev,
            };
            let Some(ev) = ev else { break };
            if outbox.push_json(&ServerFrame::Event(ev)).is_err() {
                break;
            }
        }
    }));
}
