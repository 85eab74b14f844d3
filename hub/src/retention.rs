//! The background pruner: applies the retention policy in small slices through the store
//! actor, so routing never waits behind a long delete. Ages are measured against an
//! [`ExpiryClock`], so a jump of the wall clock expires nothing early (see [`crate::clock`]).

use std::{sync::Arc, time::Duration};

use tracing::{info, warn};

use crate::{
    HubState,
    approvals::{DECIDED_MAX_AGE_MS, KEEP_DECIDED},
    clock::{ExpiryClock, SystemClock},
};

/// Messages deleted per slice; the actor serves other requests between slices.
pub(crate) const SLICE: usize = 500;

/// Runs forever (the hub aborts it on shutdown).
pub(crate) async fn run(hub: Arc<HubState>) {
    let policy = hub.config.retention;
    let mut clock = ExpiryClock::new(SystemClock);
    let mut tick = tokio::time::interval(policy.every);
    loop {
        tick.tick().await;
        let (mut expired, mut evicted) = (0, 0);
        let now = clock.now();
        loop {
            match hub.store.call(move |b| b.prune(&policy, now, SLICE)).await {
                Ok(r) => {
                    expired += r.expired;
                    evicted += r.evicted;
                    if !r.more {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => {
                    warn!("retention pass failed: {e}");
                    break;
                }
            }
        }
        if expired + evicted > 0 {
            info!(expired, evicted, "retention pass");
        }
        prune_approvals(&hub, now).await;
    }
}

/// Deletes decided approvals beyond [`KEEP_DECIDED`] or older than [`DECIDED_MAX_AGE_MS`]
/// (with their trails), [`SLICE`] at a time.
async fn prune_approvals(hub: &HubState, now: i64) {
    let before = now - DECIDED_MAX_AGE_MS;
    let mut pruned = 0;
    loop {
        let r = hub
            .store
            .call(move |b| match b.approvals() {
                Some(a) => a.prune(KEEP_DECIDED, before, SLICE),
                None => Ok(0),
            })
            .await;
        match r {
            Ok(n) => {
                pruned += n;
                if n < SLICE {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => {
                warn!("approval retention failed: {e}");
                break;
            }
        }
    }
    if pruned > 0 {
        info!(pruned, "approvals pruned");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        clock::{Clock, tests::ManualClock},
        config::{Retention, SyncMode},
        store::{Backend, NewMessage, sqlite::SqliteBackend},
    };

    const DAY: i64 = 86_400_000;

    fn policy() -> Retention {
        Retention {
            max_age: Duration::from_secs(30 * 86_400),
            max_bytes: u64::MAX,
            every: Duration::from_secs(600),
        }
    }

    /// Stores one unread message to B, stamped by `clock` as the hub stamps messages.
    fn stamp(b: &mut SqliteBackend, clock: &ManualClock, content: &str) {
        let m = NewMessage {
            from: Arc::from("A"),
            to: Arc::from("B"),
            content: content.into(),
            ts: clock.wall_ms(),
            key: None,
            delivered_at: None,
            reply: None,
        };
        b.append(&[&m], &[]).unwrap();
    }

    fn prune_all(b: &mut SqliteBackend, now: i64) -> u64 {
        let mut expired = 0;
        loop {
            let r = b.prune(&policy(), now, SLICE).unwrap();
            expired += r.expired;
            if !r.more {
                return expired;
            }
        }
    }

    fn unread(b: &mut SqliteBackend) -> Vec<String> {
        let page = b.inbox("B", None, 100, usize::MAX).unwrap();
        page.messages.into_iter().map(|m| m.content).collect()
    }

    #[test]
    fn a_wall_clock_jumping_forward_expires_no_recent_mail() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = SqliteBackend::open(dir.path(), SyncMode::Normal).unwrap();
        let clock = ManualClock::at(100 * DAY);
        let mut expiry = ExpiryClock::new(clock.clone());
        expiry.now();
        stamp(&mut b, &clock, "recent");
        // A minute later the wall clock leaps 60 days ahead (a bad NTP server, a VM resumed
        // with a wrong clock): the mail is a minute old, not two months.
        clock.pass(60_000);
        clock.jump(60 * DAY);
        assert_eq!(prune_all(&mut b, expiry.now()), 0);
        assert_eq!(unread(&mut b), ["recent"]);
        // Real time passing still ages it: 30 real days later it goes.
        clock.pass(30 * DAY);
        assert_eq!(prune_all(&mut b, expiry.now()), 1);
    }

    #[test]
    fn mail_stamped_while_the_clock_was_behind_is_not_expired_when_it_is_set_right() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = SqliteBackend::open(dir.path(), SyncMode::Normal).unwrap();
        let clock = ManualClock::at(100 * DAY);
        stamp(&mut b, &clock, "before the jump");
        // The wall clock steps 60 days back; two messages are stamped with the wrong time.
        clock.jump(-60 * DAY);
        stamp(&mut b, &clock, "stamped 60 days early, 1");
        clock.pass(60_000);
        stamp(&mut b, &clock, "stamped 60 days early, 2");
        // The clock is set right and the hub restarts (a fresh expiry clock trusts it): the
        // early stamps look 60 days old, but they are newer than mail that is not old.
        clock.jump(60 * DAY);
        clock.pass(DAY);
        let mut expiry = ExpiryClock::new(clock.clone());
        assert_eq!(prune_all(&mut b, expiry.now()), 0);
        assert_eq!(unread(&mut b).len(), 3);
        // When the mail stored before them expires, they go with it: they are as old.
        clock.pass(30 * DAY);
        assert_eq!(prune_all(&mut b, expiry.now()), 3);
    }
}
