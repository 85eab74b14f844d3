//! The approval inbox: permission prompts of agents on every machine, answered only by a
//! human (docs/PROTOCOL.md, "Approvals"; docs/SECURITY.md, "Approvals").
//!
//! - **Filing** (`approval_file`, [`frames`]): a hook process or a bridge files a prompt for
//!   a session and waits on the same connection for its verdict.
//! - **Answering**: only [`decide`], called by the operator's HTTP endpoint
//!   (`POST /api/approvals/ID`, `crate::http::approvals`), by the expiry sweep ([`run`]) and
//!   by a filer closing its own prompt. No client frame reaches it with `allowed` or
//!   `denied`: the WebSocket protocol every bridge speaks cannot answer a prompt.
//! - **Telling**: a prompt that leaves `pending` is pushed to the connection that filed it
//!   (`approval_verdict`) and published on the operator feed (`approval` events, which the
//!   console shows live).
//!
//! State: the prompts and their audit trail live in the store (one owner, the store actor);
//! this module keeps only who waits for which prompt and when each expires, in one
//! [`Approvals`] map under one lock (held for map work only).
//!
//! Bounds: [`PER_SESSION`] pending prompts per session and filing connection,
//! [`HUB_PENDING`] per hub, [`PER_CONNECTION`] filed per connection, filing at
//! [`FILE_RATE`] per connection, [`KEEP_DECIDED`] decided prompts kept (for at most
//! [`DECIDED_MAX_AGE_MS`]), and the size caps of `relay_proto::wire_approvals` on every
//! string kept.

pub(crate) mod frames;
mod summary;

pub(crate) use summary::one_line;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use relay_proto::{
    time::now_ms,
    wire::ServerFrame,
    wire_approvals::{ApprovalState, ApprovalVerdict},
};
use tokio::time::Instant;

use crate::{
    HubState,
    feed::Feed,
    outbound::Outbox,
    store::{
        StoreError,
        approvals::{ApprovalRow, Decided, Decision},
    },
};

/// Most pending prompts of one session.
pub(crate) const PER_SESSION: usize = 16;
/// Most pending prompts on the hub.
pub(crate) const HUB_PENDING: usize = 1024;
/// Most prompts one connection may have filed and still wait for.
pub(crate) const PER_CONNECTION: usize = 32;
/// Pending prompts a listing returns (oldest first).
pub(crate) const LIST_PENDING: usize = 200;
/// Decided prompts a listing returns (newest first).
pub(crate) const LIST_RECENT: usize = 50;
/// Decided prompts kept (the newest; older ones are pruned with their trails by the
/// retention pass, `crate::retention`; docs/STORAGE.md, "Approvals").
pub(crate) const KEEP_DECIDED: usize = 10_000;
/// Decided prompts older than this (ms) are pruned too: 30 days.
pub(crate) const DECIDED_MAX_AGE_MS: i64 = 30 * 86_400_000;
/// Prompts one connection may file per second (sustained), and in a burst: a hook files
/// one, a bridge one per dialog; a connection filing faster is refused (`rate_limited`).
pub(crate) const FILE_RATE: f64 = 1.0;
/// See [`FILE_RATE`].
pub(crate) const FILE_BURST: f64 = 32.0;
/// How often the expiry sweep looks for prompts past their time.
const SWEEP: Duration = Duration::from_secs(1);

/// Who waits for which prompt, and when each expires.
#[derive(Clone, Default)]
pub(crate) struct Approvals {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// Prompt number → the connection that filed it, and the prompt's deadline.
    waiters: HashMap<u64, (Outbox, Instant)>,
    /// (deadline, prompt number) of every prompt still waited for: the same entries as
    /// `waiters`, so both are bounded by the pending caps.
    deadlines: BTreeSet<(Instant, u64)>,
}

impl Inner {
    /// Nobody waits for prompt `n` any more; its filer, if still there.
    fn forget(&mut self, n: u64) -> Option<Outbox> {
        let (outbox, deadline) = self.waiters.remove(&n)?;
        self.deadlines.remove(&(deadline, n));
        Some(outbox)
    }
}

impl Approvals {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `outbox` waits for prompt `n`, which expires at `deadline`.
    fn wait(&self, n: u64, outbox: Outbox, deadline: Instant) {
        let mut inner = self.lock();
        inner.waiters.insert(n, (outbox, deadline));
        inner.deadlines.insert((deadline, n));
    }

    /// Whether someone still waits for prompt `n`.
    pub(crate) fn is_waited(&self, n: u64) -> bool {
        self.lock().waiters.contains_key(&n)
    }

    /// Prompts past their deadline (taken off the list).
    fn due(&self, now: Instant) -> Vec<u64> {
        let mut inner = self.lock();
        let mut due = Vec::new();
        while let Some(&(at, n)) = inner.deadlines.first() {
            if at > now {
                break;
            }
            inner.deadlines.pop_first();
            due.push(n);
        }
        due
    }

    /// Prompt `n` left `pending`: tell its filer (once) and the feed.
    pub(crate) fn announce(&self, feed: &Feed, row: &ApprovalRow) {
        let waiter = self.lock().forget(row.n);
        let view = row.view.clone();
        if let Some(outbox) = waiter {
            let _ = outbox.push_json(&ServerFrame::ApprovalVerdict(ApprovalVerdict {
                approval: view.clone(),
            }));
        }
        feed.approval(view);
    }
}

/// Moves prompt `n` out of `pending` (the one way any prompt is decided; see the module
/// header), then tells its filer and the feed. A prompt decided already keeps its verdict.
pub(crate) async fn decide(
    hub: &HubState,
    n: u64,
    decision: Decision,
) -> Result<Decided, StoreError> {
    let done = hub
        .store
        .call(move |b| match b.approvals() {
            Some(a) => a.decide(n, &decision),
            None => Ok(Decided::NotFound),
        })
        .await?;
    if let Decided::Done(row) = &done {
        tracing::info!(
            id = %row.view.id,
            session = %row.view.session,
            state = row.view.state.as_str(),
            by = row.view.by.as_deref().unwrap_or(""),
            from = row.view.from.as_deref().unwrap_or(""),
            "approval decided"
        );
        hub.approvals.announce(&hub.feed, row);
    }
    Ok(done)
}

/// Closes, without waiting, the prompts a connection filed and still waits for (it ended:
/// nobody is left to act on a verdict). Runs on the store thread.
pub(crate) fn filer_left(hub: &HubState, filed: Vec<u64>, who: String) {
    if filed.is_empty() {
        return;
    }
    let approvals = hub.approvals.clone();
    let feed = hub.feed.clone();
    let queued = hub.store.try_call(move |b| {
        let Some(store) = b.approvals() else { return };
        for n in filed {
            let d = Decision {
                state: ApprovalState::Closed,
                by: who.clone(),
                from: None,
                message: Some("its filer went away (answered locally, or gave up)".into()),
                at: now_ms(),
            };
            match store.decide(n, &d) {
                Ok(Decided::Done(row)) => approvals.announce(&feed, &row),
                Ok(_) => {
                    approvals.lock().forget(n);
                }
                Err(e) => tracing::warn!("approval {n} not closed: {e}"),
            }
        }
    });
    if !queued {
        tracing::warn!(
            "store queue full: approvals of a closed connection stay pending until they expire"
        );
    }
}

/// The expiry sweep: every [`SWEEP`], prompts past their deadline become `expired`. Runs for
/// the hub's life (started and stopped by `Hub::serve`).
pub(crate) async fn run(hub: Arc<HubState>) {
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for n in hub.approvals.due(Instant::now()) {
            let d = Decision {
                state: ApprovalState::Expired,
                by: "hub".into(),
                from: None,
                message: Some("nobody answered in time".into()),
                at: now_ms(),
            };
            match decide(&hub, n, d).await {
                Ok(Decided::Done(_)) => {}
                Ok(_) => {
                    hub.approvals.lock().forget(n);
                }
                Err(e) => tracing::warn!("approval {n} not expired: {e}"),
            }
        }
    }
}

/// At start: prompts left pending by an earlier run are closed (their filers' connections
/// ended with that run).
pub(crate) fn close_stale(backend: &mut dyn crate::store::Backend) {
    if let Some(a) = backend.approvals() {
        match a.close_all_pending(now_ms()) {
            Ok(0) => {}
            Ok(n) => tracing::info!("{n} approval(s) left pending by the last run closed"),
            Err(e) => tracing::warn!("stale approvals not closed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_proto::wire_approvals::{ApprovalSource, ApprovalView, approval_id};

    fn row(n: u64, state: ApprovalState) -> ApprovalRow {
        ApprovalRow {
            n,
            view: ApprovalView {
                id: approval_id(n),
                session: "CC-1".into(),
                host: None,
                cwd: None,
                tool: "Bash".into(),
                summary: "ls".into(),
                preview: "{}".into(),
                truncated: false,
                input_chars: Some(2),
                source: ApprovalSource::Hook,
                request_id: None,
                state,
                created: 0,
                expires: 0,
                decided: Some(1),
                by: Some("hub".into()),
                from: None,
                message: None,
            },
        }
    }

    #[tokio::test]
    async fn a_decided_prompt_leaves_no_waiter_nor_deadline_and_its_filer_is_told_once() {
        let a = Approvals::default();
        let feed = Feed::default();
        let (outbox, mut rx) = crate::outbound::outbox(1, 16, 1 << 20);
        let now = Instant::now();
        a.wait(1, outbox.clone(), now + Duration::from_secs(60));
        a.wait(2, outbox, now + Duration::from_secs(1));
        a.announce(&feed, &row(1, ApprovalState::Allowed));
        a.announce(&feed, &row(1, ApprovalState::Allowed));
        assert!(
            rx.try_recv()
                .is_some_and(|f| f.contains("approval_verdict"))
        );
        assert!(rx.try_recv().is_none(), "told once");
        assert!(!a.is_waited(1));
        assert_eq!(a.due(now + Duration::from_secs(3600)), vec![2]);
        assert_eq!(a.lock().deadlines.len(), 0);
    }
}
