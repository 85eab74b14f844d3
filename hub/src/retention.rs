//! The background pruner: applies the retention policy in small slices through the store
//! actor, so routing never waits behind a long delete.

use std::{sync::Arc, time::Duration};

use sessions::time::now_ms;
use tracing::{info, warn};

use crate::HubState;

/// Messages deleted per slice; the actor serves other requests between slices.
pub const SLICE: usize = 500;

/// Runs forever (the hub aborts it on shutdown).
pub async fn run(hub: Arc<HubState>) {
    let policy = hub.config.retention;
    let mut tick = tokio::time::interval(policy.every);
    loop {
        tick.tick().await;
        let (mut expired, mut evicted) = (0, 0);
        loop {
            let now = now_ms();
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
    }
}
