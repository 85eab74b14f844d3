//! Channel push: each new inbound message becomes a Claude Code channel event, so an idle
//! session hears its mail without anyone asking `relay_receive`.
//!
//! Claude Code starts a turn for the user, for an async `Stop` hook that exits 2, and for its
//! channels feature (≥ 2.1.80, research preview): a server that declares the experimental
//! capability [`CAPABILITY`] may send [`METHOD`] notifications, which the model sees as
//! `<channel source="claude-relay" from="CC-2" …>CC-2: text</channel>`. Ordinary MCP
//! notifications (logging, list_changed) reach the client but never start a turn. Without
//! `--dangerously-load-development-channels server:claude-relay` Claude Code ignores the
//! notification, and every other client (Codex, Gemini CLI) ignores an unknown notification,
//! so pushing is harmless where it is not understood; the tools work either way.
//!
//! Rules kept here:
//! - Both live mail and the backlog the hub pushes after `register` (`backlog: true`) are
//!   notified, oldest first, as they arrive. A push counts as *delivered* on the hub (it was
//!   handed to a live connection), never as read: the mail stays unread until the model calls
//!   `relay_receive`.
//! - No seq is notified twice in one bridge process, although the hub pushes the unread
//!   backlog again after every reconnect ([`Seen`], bounded by [`SEEN_MAX`]).
//! - The session's own sends are never notified.
//! - Nothing is sent before the client's `initialized` notification (the server starts
//!   [`pump`] from `on_initialized`; pushes that arrive earlier wait in the subscription).

use std::collections::BTreeSet;

use relay_proto::wire::Envelope;
use rmcp::{
    RoleServer,
    model::{CustomNotification, ServerNotification},
    service::Peer,
};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::{format, hub_client::HubClient};

/// The notification method Claude Code turns into a `<channel>` event.
pub(crate) const METHOD: &str = "notifications/claude/channel";
/// The experimental capability that tells Claude Code this server sends [`METHOD`].
pub(crate) const CAPABILITY: &str = "claude/channel";
/// Characters of a message body a channel event carries; longer bodies end with a pointer to
/// the `relay_receive` call that reads them whole. An event lands in the model's context
/// unasked, so it is kept as short as one message in a `relay_receive` page.
pub(crate) const CONTENT_CAP: usize = format::BODY_CAP;
/// Sequence numbers remembered to avoid notifying a message twice. Beyond this the smallest
/// are forgotten, and every seq at or below the largest forgotten one counts as seen — so the
/// memory stays bounded and "never twice" still holds (an old message that was never notified
/// and is older than 4096 notified ones is left to `relay_receive`).
pub(crate) const SEEN_MAX: usize = 4096;

/// The params of the channel event for `e`, exactly
/// `{"content": "<sender>: <text>", "meta": {"from", "message_id", "seq", "to", "ts"}}`
/// (plus `task_id` and `task_state` on mail about a task, and `reply_to` and `thread` on a
/// reply, so the model can answer in the same thread):
/// meta keys are identifiers and every value is a string (Claude Code drops anything else).
pub(crate) fn params(e: &Envelope) -> Value {
    let mut p = json!({
        "content": format::channel_content(e, CONTENT_CAP),
        "meta": {
            "from": e.from,
            "message_id": e.id,
            "seq": e.seq.to_string(),
            "to": e.to,
            "ts": e.timestamp,
        }
    });
    // Task mail: which task and its new state (see crate::tasks).
    if let Some(t) = &e.task {
        p["meta"]["task_id"] = json!(t.id);
        p["meta"]["task_state"] = json!(t.state.as_str());
    }
    if let Some(r) = &e.reply_to {
        p["meta"]["reply_to"] = json!(r);
    }
    if let Some(t) = &e.thread {
        p["meta"]["thread"] = json!(t);
    }
    p
}

/// The notification carrying [`params`].
pub(crate) fn notification(e: &Envelope) -> ServerNotification {
    ServerNotification::CustomNotification(CustomNotification::new(METHOD, Some(params(e))))
}

/// Which messages were already notified: a bounded set of seqs per hub store epoch.
///
/// Seqs are only unique within one store epoch (ids are `<epoch>-<seq>`); when the epoch
/// changes (the hub's history was reset) everything starts over.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    epoch: Option<String>,
    seqs: BTreeSet<u64>,
    /// Every seq at or below this counts as seen (the largest one evicted).
    floor: u64,
}

impl Seen {
    /// True the first time `e` is offered (and remembers it); false for a repeat.
    pub(crate) fn first_time(&mut self, e: &Envelope) -> bool {
        let epoch =
            e.id.strip_suffix(&format!("-{}", e.seq))
                .unwrap_or_default();
        if self.epoch.as_deref() != Some(epoch) {
            *self = Self {
                epoch: Some(epoch.to_string()),
                ..Self::default()
            };
        }
        if e.seq == 0 {
            // A hub that sends no seq cannot be de-duplicated; notify rather than drop.
            return true;
        }
        if e.seq <= self.floor || !self.seqs.insert(e.seq) {
            return false;
        }
        while self.seqs.len() > SEEN_MAX {
            if let Some(smallest) = self.seqs.pop_first() {
                self.floor = self.floor.max(smallest);
            }
        }
        true
    }

    /// How many seqs are remembered (at most [`SEEN_MAX`]).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seqs.len()
    }
}

/// Forwards pushed mail from `pushes` to the client as channel events until the client goes
/// away (a failed send means the transport closed) or the hub client is dropped.
pub(crate) async fn pump(
    hub: HubClient,
    mut pushes: broadcast::Receiver<Envelope>,
    peer: Peer<RoleServer>,
) {
    let mut seen = Seen::default();
    loop {
        let e = match pushes.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                // The mail is safe on the hub; only the event is lost. relay_receive and the
                // Stop hook still find it.
                tracing::warn!("channel push fell behind; {n} messages were not announced");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        if e.from == hub.id() || !seen.first_time(&e) {
            continue;
        }
        if let Err(err) = peer.send_notification(notification(&e)).await {
            tracing::info!("channel push stopped: {err}");
            break;
        }
        tracing::debug!("channel event for {} from {}", e.id, e.from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(epoch: &str, seq: u64, content: &str) -> Envelope {
        Envelope {
            id: format!("{epoch}-{seq}"),
            from: "CC-2".into(),
            to: "CC-1".into(),
            content: content.into(),
            timestamp: "2026-11-23T19:37:47.123Z".into(),
            seq,
            task: None,
            reply_to: None,
            thread: None,
        }
    }

    #[test]
    fn params_are_exactly_content_and_string_meta() {
        let p = params(&env("ab12", 42, "tests pass"));
        assert_eq!(
            p,
            json!({
                "content": "CC-2: tests pass",
                "meta": {"from": "CC-2", "message_id": "ab12-42", "seq": "42", "to": "CC-1",
                         "ts": "2026-11-23T19:37:47.123Z"}
            })
        );
        for (k, v) in p["meta"].as_object().unwrap() {
            assert!(
                k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{k}"
            );
            assert!(v.is_string(), "{k}: {v}");
        }
        let mut reply = env("ab12", 43, "yes");
        reply.reply_to = Some("ab12-42".into());
        reply.thread = Some("ab12-7".into());
        let meta = &params(&reply)["meta"];
        assert_eq!(
            (&meta["reply_to"], &meta["thread"]),
            (&json!("ab12-42"), &json!("ab12-7"))
        );
        let long = params(&env("ab12", 42, &"x".repeat(CONTENT_CAP + 1)));
        let c = long["content"].as_str().unwrap();
        assert!(
            c.contains(r#"relay_receive {"replay":true,"after":"ab12-41""#),
            "{c}"
        );
    }

    #[test]
    fn a_seq_is_seen_once_per_epoch_and_memory_is_bounded() {
        let mut seen = Seen::default();
        assert!(seen.first_time(&env("a", 5, "")));
        assert!(!seen.first_time(&env("a", 5, "")));
        assert!(
            seen.first_time(&env("a", 3, "")),
            "older backlog is still new"
        );
        // A store reset starts over.
        assert!(seen.first_time(&env("b", 5, "")));
        for seq in 10..10 + SEEN_MAX as u64 + 50 {
            assert!(seen.first_time(&env("b", seq, "")));
        }
        assert_eq!(seen.len(), SEEN_MAX);
        for seq in 10..10 + SEEN_MAX as u64 + 50 {
            assert!(!seen.first_time(&env("b", seq, "")), "{seq} twice");
        }
        assert!(!seen.first_time(&env("b", 5, "")));
    }
}
