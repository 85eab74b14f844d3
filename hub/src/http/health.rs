//! `GET /healthz`: is the hub up and can its store still write?
//!
//! Open to anyone (load balancers, `systemctl`-style probes, `claude-relay doctor`), so it
//! says nothing but `{status, version, uptime_s, store}` — no paths, no counts, no names.
//! `store` is `ok`, `damaged` (the integrity check at start found the file damaged: the store
//! is read-only until it is recovered, see docs/STORAGE.md), `unwritable` (a small write
//! failed: disk full, file-size limit, read-only file system) or `unresponsive` (the store
//! did not answer within [`PROBE_TIMEOUT`]); any but `ok` makes the answer a 503. What exactly
//! failed goes to the hub's log.
//!
//! The probe writes one row of the store's own bookkeeping, so probing costs a small
//! transaction; its result is kept for [`FRESH`] and concurrent requests share one probe, so
//! however often `/healthz` is asked the store sees at most one probe a second.

use std::time::Duration;

use hyper::{Response, StatusCode};
use serde_json::json;
use tokio::{sync::Mutex, time::Instant};

use super::{Body, Ctx, routes};
use crate::store::Integrity;

/// How long one probe result is reused.
const FRESH: Duration = Duration::from_secs(1);
/// How long the store may take to answer a probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The last probe and when it ran.
#[derive(Default)]
pub(crate) struct Cache(Mutex<Option<(Instant, &'static str)>>);

pub(crate) async fn get(cx: &Ctx) -> Response<Body> {
    let store = store_state(cx).await;
    let ok = store == "ok";
    routes::json(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &json!({
            "status": if ok { "ok" } else { "unavailable" },
            "version": crate::VERSION,
            "uptime_s": cx.hub.metrics.uptime_s(),
            "store": store,
        }),
    )
}

/// The store's state, probed at most once per [`FRESH`].
pub(crate) async fn store_state(cx: &Ctx) -> &'static str {
    // Damage was found (and logged loudly) at start; nothing to probe.
    if let Integrity::Damaged(_) = cx.hub.store.integrity() {
        return "damaged";
    }
    let mut last = cx.hub.http.health.0.lock().await;
    if let Some((at, state)) = *last
        && at.elapsed() < FRESH
    {
        return state;
    }
    let now = relay_proto::time::now_ms();
    let probe = cx.hub.store.call(move |b| match b.operator() {
        Some(view) => view.probe_write(now),
        None => Ok(()),
    });
    let state = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::warn!("health probe: the store cannot write: {e}");
            "unwritable"
        }
        Err(_) => {
            tracing::warn!("health probe: the store did not answer within {PROBE_TIMEOUT:?}");
            "unresponsive"
        }
    };
    *last = Some((Instant::now(), state));
    state
}
