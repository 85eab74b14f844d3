//! The accept loop: takes connections until the shutdown signal, caps how many are open
//! (see [`crate::limits::ConnCaps`]), and on shutdown tells every connection to close and
//! waits (bounded) for them to finish.

use std::{future::Future, sync::Arc};

use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tracing::{error, info, warn};

use crate::{HubState, connection, refusals::ConnRefusal};

/// Runs the accept loop until `shutdown` completes, then drains connections.
pub(crate) async fn run(
    listener: TcpListener,
    hub: Arc<HubState>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let slot = match hub.caps.admit() {
                        Ok(slot) => slot,
                        Err(full) => {
                            hub.refusals.connection(addr, ConnRefusal::MaxConnections, &full.to_string());
                            refuse_full(stream, &full.to_string());
                            continue;
                        }
                    };
                    next_id += 1;
                    // One span per connection: its log lines carry the peer, and the session
                    // name once it registers (see `dispatch`), so one grep follows a session.
                    let span = tracing::info_span!("conn", id = next_id, peer = %addr, session = tracing::field::Empty);
                    conns.spawn(tracing::Instrument::instrument(
                        connection::serve(stream, addr, next_id, hub.clone(), stop_rx.clone(), slot),
                        span,
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    error!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
    info!(open = conns.len(), "shutting down: closing connections");
    drop(listener);
    stop_tx.send_replace(true);
    let drained = tokio::time::timeout(hub.config.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            left = conns.len(),
            "connections did not close in time: aborting them"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

/// Answers a connection over a cap with an HTTP 503 (best effort, without waiting: the
/// socket buffer of a fresh connection always has room) and closes it.
fn refuse_full(stream: tokio::net::TcpStream, why: &str) {
    let body = format!("{why}\n");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
}
