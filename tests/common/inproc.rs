//! A hub served inside the test's own process, as mini-redis's `tests/server.rs` does:
//! [`hub::Hub`] on a `127.0.0.1:0` listener, stopped through a shutdown handle. For the
//! protocol, limits and hostile-input tests, where the process is not the point: no binary to
//! spawn, no stderr to parse, any [`HubConfig`] field can be set, and the hub's timers run on
//! the test's own runtime — so a test whose subject is a timeout can pause tokio's clock and
//! let it jump (see [`InProcHub::advance`]).
//!
//! Paused time and the store: the store actor runs on its own OS thread, which tokio cannot
//! see. With the clock paused, an idle runtime jumps to its next timer even while a store
//! reply is on its way, so a timeout could fire "early". Tests therefore pause only after
//! their setup, move the clock themselves (`tokio::time::advance`), and wait for the effects
//! inside [`hold_clock`], which keeps the clock from jumping until they arrive.

use std::{net::SocketAddr, path::Path};

use hub::HubConfig;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use super::hub::WAIT;

/// A running in-process hub. Shut down (bounded) by [`InProcHub::stop`]; dropping it without
/// stopping sends the shutdown signal too.
pub(crate) struct InProcHub {
    /// `ws://127.0.0.1:PORT`.
    pub url: String,
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), hub::HubError>>>,
}

impl InProcHub {
    /// A hub with default settings, its data directory under `dir`.
    pub(crate) async fn start(dir: &Path) -> InProcHub {
        Self::start_with(dir, |_| {}).await
    }

    /// A hub whose configuration `configure` adjusts first.
    pub(crate) async fn start_with(
        dir: &Path,
        configure: impl FnOnce(&mut HubConfig),
    ) -> InProcHub {
        let mut config = HubConfig::new(dir.join("hub-data"));
        configure(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener address");
        // A hub stopped a moment ago on this directory has closed its lock file, but a child
        // process another test forked in that moment holds a copy of the descriptor (and so
        // the lock) until it execs: wait for that, never for anything else.
        let hub = crate::common::eventually("the data directory's lock", WAIT, async || {
            match hub::Hub::open(config.clone()) {
                Ok(hub) => Ok(hub),
                Err(e @ hub::HubError::Store(hub::StoreError::Locked { .. })) => Err(e.to_string()),
                Err(e) => panic!("open the hub's store: {e}"),
            }
        })
        .await;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(hub.serve(listener, async {
            let _ = stopped.await;
        }));
        InProcHub {
            url: format!("ws://{addr}"),
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Shuts the hub down (close frame 1001 to every client, store flushed) and waits for it.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("the hub stopped in time")
                .expect("the hub task")
                .expect("the hub served");
        }
    }
}

/// Runs `fut` with tokio's paused clock held still: while it runs, a blocking task keeps the
/// runtime from jumping to its next timer (tokio never auto-advances while a `spawn_blocking`
/// task is running), so `fut` waits for real work — the store thread's included — in real
/// time. If `fut` is not done within [`WAIT`] of real time the test fails (the clock is never
/// let go meanwhile). Without a paused clock it is `fut` under that bound.
pub(crate) async fn hold_clock<T>(fut: impl Future<Output = T>) -> T {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let mut holder = tokio::task::spawn_blocking(move || {
        matches!(
            wait.recv_timeout(WAIT),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        )
    });
    tokio::select! {
        biased;
        out = fut => {
            drop(done);
            let _ = holder.await;
            out
        }
        timed_out = &mut holder => {
            assert!(!timed_out.expect("the clock holder"), "not done within {WAIT:?} (real time, clock held)");
            unreachable!("the holder ends early only once `fut` is done")
        }
    }
}

impl Drop for InProcHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
