//! The claude-relay hub: a WebSocket server that routes JSON messages between named agent
//! sessions, keeps a durable mailbox for each, and knows who is online.
//!
//! A frame travels one way: socket → [`parse`] → [`dispatch`] → the store actor
//! ([`store`], which commits it) → the [`router`] (which pushes it to live recipients and
//! acks the sender) → each recipient's bounded [`outbound`] queue → socket. Presence and
//! heartbeats live in [`presence`]; the accept loop in [`server`]; one connection's
//! reader/writer pair in [`connection`]. The same port serves HTTP ([`http`]: `/healthz`,
//! `/metrics` from [`metrics`], and the web console, which follows the operator [`feed`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), hub::HubError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let config = hub::HubConfig::new("/tmp/relay-data");
//! hub::serve(listener, config, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod auth;
pub mod config;
pub mod connection;
pub mod dispatch;
pub mod error;
pub mod feed;
pub mod frames;
pub mod http;
pub mod integrity;
pub mod limits;
pub mod metrics;
pub mod outbound;
pub mod parse;
pub mod presence;
pub mod retention;
pub mod router;
pub mod server;
pub mod store;
pub mod subscribe;
pub mod tls;

use std::{future::Future, sync::Arc};

pub use config::{HubConfig, Retention, SyncMode};

/// The hub's version, reported in `pong` (docs/PROTOCOL.md) so `claude-relay doctor` can
/// tell a hub still running an older binary. The workspace shares one version, so this is
/// also the version of the `claude-relay` binary the hub was built into.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub use error::HubError;
use router::Router;
use store::{StoreHandle, sqlite::SqliteBackend};
use tokio::net::TcpListener;

/// What every connection shares.
pub struct HubState {
    /// Limits and intervals.
    pub config: HubConfig,
    /// Who is online and how to reach them.
    pub router: Arc<Router>,
    /// The store actor.
    pub store: StoreHandle,
    /// Per-address connection caps and registration rates.
    pub limits: limits::AddrLimits,
    /// TLS acceptor when serving `wss://`.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// What `/metrics` shows.
    pub metrics: Arc<metrics::Metrics>,
    /// The operator feed (console, `claude-relay tail`).
    pub feed: Arc<feed::Feed>,
    /// The HTTP side's own state (connection slots, logins, the health probe).
    pub http: http::HttpState,
}

/// A hub with its store open, ready to serve.
pub struct Hub {
    state: Arc<HubState>,
    store_thread: std::thread::JoinHandle<()>,
}

impl Hub {
    /// Opens the store in `config.data_dir` (creating it if needed) and starts its actor.
    pub fn open(config: HubConfig) -> Result<Self, HubError> {
        let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let backend = SqliteBackend::open(&config.data_dir, config.sync)?;
        let limits = limits::AddrLimits::new(
            config.max_conns_per_addr,
            config.register_rate,
            config.register_burst,
        );
        let metrics = Arc::new(metrics::Metrics::new());
        let feed = Arc::new(feed::Feed::new(config.max_feed_subscribers));
        let router = Arc::new(Router::observed(metrics.clone(), feed.clone()));
        let (store, store_thread) =
            store::actor::spawn(Box::new(backend), config.store_queue, router.clone());
        Ok(Self {
            state: Arc::new(HubState {
                config,
                router,
                store,
                limits,
                tls,
                metrics,
                feed,
                http: http::HttpState::default(),
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
        let presence = tokio::spawn(presence::run_batches(self.state.router.clone()));
        let routes = tokio::spawn(self.state.router.clone().run_routes());
        server::run(listener, self.state.clone(), shutdown).await;
        for task in [pruner, checker, presence, routes] {
            task.abort();
            let _ = task.await;
        }
        // Every connection task has ended, so this is the last handle to the store: dropping
        // it lets the actor finish its queue and stop.
        drop(self.state);
        let thread = self.store_thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        Ok(())
    }
}

/// Opens the store and serves `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: HubConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), HubError> {
    Hub::open(config)?.serve(listener, shutdown).await
}
