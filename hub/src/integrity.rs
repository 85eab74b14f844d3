//! Notices the store being wiped or replaced under a running hub (someone deleted the data
//! directory). The store is reopened with a new epoch and every connection is closed, so
//! clients reconnect, see the new epoch on `registered`, and tell their users that history
//! was reset — instead of the hub writing on into a deleted file and losing it all later.

use std::{sync::Arc, time::Duration};

use tracing::warn;

use crate::HubState;

/// How often the store file is checked.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Runs forever (the hub aborts it on shutdown).
pub(crate) async fn run(hub: Arc<HubState>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match hub.store.call(|b| b.verify()).await {
            Ok(false) => {}
            Ok(true) => {
                warn!(epoch = %hub.store.epoch(), "store was reset: closing all connections");
                hub.router
                    .close_all(1012, "hub history was reset (store wiped); reconnect");
            }
            Err(e) => warn!("store check failed: {e}"),
        }
    }
}
