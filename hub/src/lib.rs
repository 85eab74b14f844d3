//! The claude-relay hub: a WebSocket server that routes JSON messages between named agent
//! sessions, keeps a durable mailbox for each, and knows who is online.
//!
//! A frame travels one way: socket → [`parse`] → [`dispatch`] → the store actor
//! ([`store`], which commits it) → the [`router`] (which pushes it to live recipients and
//! acks the sender) → each recipient's bounded [`outbound`] queue → socket. Presence and
//! heartbeats live in [`presence`]; the accept loop in [`accept`]; one connection's
//! reader/writer pair in [`connection`]. What bounds a connection: caps and rates in
//! [`limits`], write deadlines in [`progress`], the hub-wide inbound frame budget in
//! [`budget`]; refusals are logged through [`refusals`]. The store's data directory (its
//! lock and file modes) is [`store::datadir`]; time, and what it is not trusted for, is
//! [`clock`]. The same port serves HTTP ([`http`]: `/healthz`, `/metrics` from [`metrics`],
//! and the web console, which follows the operator [`feed`]); who the operator is, for the
//! console, `subscribe` and the every-session task view alike, is decided in [`operator`].
//!
//! ```no_run
//! # async fn run() -> Result<(), hub::HubError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let config = hub::HubConfig::new("/tmp/relay-data");
//! hub::serve(listener, config, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod accept;
mod approvals;
mod auth;
mod batching;
mod budget;
mod clock;
mod config;
mod connection;
mod dispatch;
mod error;
mod feed;
mod frames;
mod http;
mod integrity;
mod limits;
mod listing;
mod log_budget;
mod metrics;
mod operator;
mod outbound;
mod parse;
mod presence;
mod progress;
mod refusals;
mod retention;
mod router;
mod store;
mod subscribe;
mod tasks;
mod tls;

use std::{future::Future, sync::Arc};

pub use config::{HubConfig, MIN_OUTBOUND_FRAMES, Retention, SyncMode};

/// The hub's version, reported in `pong` (docs/PROTOCOL.md) so `claude-relay doctor` can
/// tell a hub still running an older binary. The workspace shares one version, so this is
/// also the version of the `claude-relay` binary the hub was built into.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub use config::DEFAULT_FEED_SUBSCRIBERS;
pub use error::HubError;
use router::Router;
use store::{Backend, StoreHandle, sqlite::SqliteBackend};
pub use store::{LocalStore, StoreError};
pub use tasks::DEFAULT_MAX_BUNDLE_BYTES;
pub use tls::TlsFiles;
use tokio::net::TcpListener;

/// What every connection shares. Opaque outside the crate: the fuzz target passes it to
/// [`fuzzing::ConnSession::handle`].
pub struct HubState {
    /// Limits and intervals.
    pub(crate) config: HubConfig,
    /// Who is online and how to reach them.
    pub(crate) router: Arc<Router>,
    /// The store actor.
    pub(crate) store: StoreHandle,
    /// Per-address connection caps and registration rates.
    pub(crate) limits: limits::AddrLimits,
    /// The hub-wide connection caps (token holders and the rest counted apart).
    pub(crate) caps: Arc<limits::ConnCaps>,
    /// The hub-wide memory budget for inbound frames.
    pub(crate) budget: Arc<budget::FrameBudget>,
    /// Where refused clients are logged.
    pub(crate) refusals: refusals::Refusals,
    /// The budget of the lines about sessions coming and going (see [`log_budget`]).
    pub(crate) session_lines: log_budget::LineBudget,
    /// TLS acceptor when serving `wss://`.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// What `/metrics` shows.
    pub(crate) metrics: Arc<metrics::Metrics>,
    /// The operator feed (console, `claude-relay tail`).
    pub(crate) feed: Arc<feed::Feed>,
    /// The HTTP side's own state (connection slots, logins, the health probe).
    pub(crate) http: http::HttpState,
    /// Task bounds (see [`tasks`]).
    pub(crate) tasks: tasks::TaskConfig,
    /// Who waits for which approval prompt (see [`approvals`]).
    pub(crate) approvals: approvals::Approvals,
    /// The full-text index's thread; None with `--no-search-index`.
    pub(crate) search: Option<Arc<store::sqlite::SearchIndex>>,
}

/// A hub with its store open, ready to serve.
pub struct Hub {
    state: Arc<HubState>,
    store_thread: std::thread::JoinHandle<()>,
}

impl Hub {
    /// Opens the store in `config.data_dir` (creating it if needed, and locking it for this
    /// hub's life) and starts its actor.
    pub fn open(config: HubConfig) -> Result<Self, HubError> {
        let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let mut backend = SqliteBackend::open_exclusive(&config.data_dir, config.sync)?;
        let search = if config.search_index {
            Some(store::sqlite::SearchIndex::start(&config.data_dir)?)
        } else {
            store::sqlite::SearchIndex::remove(&config.data_dir)?;
            None
        };
        let metrics = Arc::new(metrics::Metrics::new());
        // The tasks-by-state gauge starts from the store; moves keep it in step.
        match backend.tasks().map(|t| t.count_by_state()) {
            Some(Ok(counts)) => {
                for (state, n) in counts {
                    metrics.set_tasks(state, n);
                }
            }
            Some(Err(e)) => tracing::warn!("tasks by state not counted: {e}"),
            None => {}
        }
        let limits = limits::AddrLimits::new(
            config.max_conns_per_addr,
            config.register_rate,
            config.register_burst,
        );
        let feed = Arc::new(feed::Feed::new(config.max_feed_subscribers));
        let router = Arc::new(Router::observed(metrics.clone(), feed.clone()));
        let tasks = tasks::TaskConfig::new(config.max_bundle_bytes);
        let caps = limits::ConnCaps::new(
            config.max_connections,
            config.max_unauthenticated,
            config.token.is_some(),
        );
        let budget = budget::FrameBudget::new(config.frame_budget_bytes);
        approvals::close_stale(&mut backend);
        let (store, store_thread) =
            store::actor::spawn(Box::new(backend), config.store_queue, router.clone());
        Ok(Self {
            state: Arc::new(HubState {
                config,
                router,
                store,
                limits,
                caps,
                budget,
                refusals: refusals::Refusals::new(metrics.clone()),
                session_lines: log_budget::LineBudget::new(log_budget::SESSION_LINES_PER_SECOND),
                tls,
                metrics,
                feed,
                http: http::HttpState::default(),
                tasks,
                approvals: approvals::Approvals::default(),
                search: search.map(Arc::new),
            }),
            store_thread,
        })
    }

    /// The shared state every connection sees (for embedding and fuzzing the dispatcher).
    pub fn state(&self) -> Arc<HubState> {
        self.state.clone()
    }

    /// The store's epoch.
    pub fn epoch(&self) -> String {
        self.state.store.epoch().to_string()
    }

    /// Serves `listener` until `shutdown` completes; then closes every connection (close
    /// frame 1001), lets the store commit what it holds, and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), HubError> {
        let pruner = tokio::spawn(retention::run(self.state.clone()));
        let checker = tokio::spawn(integrity::run(self.state.clone()));
        let presence = tokio::spawn(presence::run_batches(
            self.state.router.clone(),
            self.state.config.delta_peers_page,
        ));
        let routes = tokio::spawn(self.state.router.clone().run_routes());
        let expiry = tokio::spawn(approvals::run(self.state.clone()));
        accept::run(listener, self.state.clone(), shutdown).await;
        for task in [pruner, checker, presence, routes, expiry] {
            task.abort();
            let _ = task.await;
        }
        // Every connection task has ended, so this is the last handle to the store: dropping
        // it lets the actor finish its queue and stop; the search thread finishes its job.
        let search = self.state.search.clone();
        drop(self.state);
        if let Some(index) = search.and_then(Arc::into_inner) {
            let _ = tokio::task::spawn_blocking(move || index.stop()).await;
        }
        let thread = self.store_thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        Ok(())
    }
}

/// The dispatcher without a socket, for the fuzz target (fuzz/fuzz_targets/frames.rs): it
/// parses lines into frames and hands them to one connection's session, as the reader task in
/// `connection.rs` does.
pub mod fuzzing {
    pub use crate::{
        dispatch::ConnSession,
        outbound::{Outbox, OutboxReceiver, outbox},
        parse::{ParseError, parse},
    };
}

/// Opens the store and serves `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: HubConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), HubError> {
    Hub::open(config)?.serve(listener, shutdown).await
}
