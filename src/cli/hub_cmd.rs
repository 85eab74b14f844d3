//! `claude-relay hub`: run the hub with the embedded store until SIGINT/SIGTERM.

use std::{net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::ValueEnum;
use hub::{HubConfig, SyncMode};
use relay_proto::token::HubToken;

/// Commit durability (see docs/STORAGE.md).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum SyncArg {
    /// A killed hub loses nothing it acknowledged; power loss may lose the last commits.
    Normal,
    /// Every commit is fsync'd before it is acknowledged.
    Full,
}

/// Arguments of `claude-relay hub`.
#[derive(Debug, clap::Args)]
pub(crate) struct HubArgs {
    /// Address to listen on. Loopback by default; other machines come in over an SSH tunnel.
    #[arg(long, env = "RELAY_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free port; the real one is printed).
    #[arg(long, env = "RELAY_PORT", default_value_t = relay_proto::wire::DEFAULT_PORT)]
    pub port: u16,
    /// Directory of the embedded store [default: ~/.claude-relay/hub].
    #[arg(long, env = "RELAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Commit durability.
    #[arg(long, env = "RELAY_SYNC", value_enum, default_value = "normal")]
    pub sync: SyncArg,
    /// Keep no full-text search index: `search` is refused and no message is indexed. For
    /// measuring what the index costs (docs/BENCHMARKS.md); `search.db` is deleted at start,
    /// and starting again without the flag rebuilds it.
    #[arg(long, env = "RELAY_NO_SEARCH_INDEX")]
    pub no_search_index: bool,
    /// Delete messages older than this many days.
    #[arg(long, env = "RELAY_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u64,
    /// Keep at most this many MiB of message content (oldest read mail goes first).
    #[arg(long, env = "RELAY_RETENTION_MB", default_value_t = 1024)]
    pub retention_mb: u64,
    /// Seconds between WebSocket pings to each client.
    #[arg(long, env = "RELAY_HEARTBEAT_SECS", default_value_t = 25)]
    pub heartbeat_secs: u64,
    /// File holding the hub token every client must present (first line; keep it mode 0600).
    #[arg(long, env = "RELAY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain: serve wss:// (needs --tls-key).
    #[arg(long, env = "RELAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "RELAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Largest text frame processed, in bytes (bigger ones get an error; the connection stays).
    #[arg(long, env = "RELAY_MAX_FRAME_BYTES", default_value_t = 1 << 20)]
    pub max_frame_bytes: usize,
    /// Largest message content, in bytes.
    #[arg(long, env = "RELAY_MAX_CONTENT_BYTES", default_value_t = 512 << 10)]
    pub max_content_bytes: usize,
    /// Connections open at once (with --token-file: that have shown the token). A
    /// connection counts until its socket is closed.
    #[arg(long, env = "RELAY_MAX_CONNECTIONS", default_value_t = 10_240)]
    pub max_connections: usize,
    /// With --token-file: connections open at once that have not shown the token yet,
    /// counted apart so they can never take token holders' places.
    #[arg(long, env = "RELAY_MAX_UNAUTHENTICATED", default_value_t = 64)]
    pub max_unauthenticated: usize,
    /// With --token-file: seconds a connection has from connecting to show the token.
    #[arg(long, env = "RELAY_AUTH_TIMEOUT_SECS", default_value_t = 5)]
    pub auth_timeout_secs: u64,
    /// MiB of inbound frames the whole hub holds at once (being read, handled, or queued
    /// for the store); a connection mid-frame when it is spent is closed (1013).
    #[arg(long, env = "RELAY_FRAME_BUDGET_MB", default_value_t = 256)]
    pub frame_budget_mb: usize,
    /// Connections open at once per remote address (loopback is exempt).
    #[arg(long, env = "RELAY_MAX_CONNECTIONS_PER_ADDR", default_value_t = 256)]
    pub max_connections_per_addr: usize,
    /// Frames per second one connection may send (bursts up to twice that).
    #[arg(long, env = "RELAY_FRAME_RATE", default_value_t = 100_000)]
    pub frame_rate: u32,
    /// Registrations per second per remote address, sustained (after the burst).
    #[arg(long, env = "RELAY_REGISTER_RATE", default_value_t = 1_000)]
    pub register_rate: u32,
    /// Registrations per remote address at once: a whole roster may re-register after a
    /// restart, even when every machine arrives through one SSH forward (127.0.0.1).
    #[arg(long, env = "RELAY_REGISTER_BURST", default_value_t = 10_000)]
    pub register_burst: u32,
    /// Frames that may wait in one connection's outbound queue before it is closed as too slow
    /// (at least 1024).
    #[arg(long, env = "RELAY_OUTBOUND_FRAMES", default_value_t = 4096)]
    pub outbound_frames: usize,
    /// HTTP connections (console, /metrics, /healthz) open at once; more get 503.
    #[arg(long, env = "RELAY_MAX_HTTP_CONNECTIONS", default_value_t = 64)]
    pub max_http_connections: usize,
    /// Live operator feed subscribers (console pages, `claude-relay tail`) at once.
    #[arg(long, env = "RELAY_MAX_FEED_SUBSCRIBERS", default_value_t = hub::DEFAULT_FEED_SUBSCRIBERS)]
    pub max_feed_subscribers: usize,
    /// Sessions the hub remembers; beyond it the least recently seen offline ones are
    /// forgotten (their ownership and mail stay).
    #[arg(long, env = "RELAY_MAX_SESSIONS", default_value_t = 10_000)]
    pub max_sessions: usize,
    /// Largest git bundle a task may carry, in bytes (see docs/HANDOFF.md).
    #[arg(long, env = "RELAY_MAX_BUNDLE_BYTES", default_value_t = hub::DEFAULT_MAX_BUNDLE_BYTES)]
    pub max_bundle_bytes: u64,
    /// Threads serving connections (the store always has its own thread besides).
    #[arg(long, env = "RELAY_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// Allow listening on a non-loopback address without a token (anyone who can reach the
    /// port can then read and send mail as anyone).
    #[arg(long)]
    pub insecure: bool,
}

/// Reads the hub's token file (capped, first line, never shown: `relay_proto::token`).
pub(super) fn read_token_file(path: &std::path::Path) -> anyhow::Result<HubToken> {
    relay_proto::token::read_token_file(path)
        .with_context(|| format!("reading token file {}", path.display()))
}

impl HubArgs {
    fn config(&self) -> anyhow::Result<HubConfig> {
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(relay_local::paths::hub_data_dir);
        let mut c = HubConfig::new(data_dir);
        c.sync = match self.sync {
            SyncArg::Normal => SyncMode::Normal,
            SyncArg::Full => SyncMode::Full,
        };
        c.search_index = !self.no_search_index;
        c.retention.max_age = Duration::from_secs(self.retention_days * 86_400);
        c.retention.max_bytes = self.retention_mb << 20;
        c.heartbeat_interval = Duration::from_secs(self.heartbeat_secs.max(1));
        c.max_frame_bytes = self.max_frame_bytes.max(1024);
        c.max_content_bytes = self.max_content_bytes.max(1);
        c.max_connections = self.max_connections.max(1);
        c.max_unauthenticated = self.max_unauthenticated.max(1);
        c.auth_timeout = Duration::from_secs(self.auth_timeout_secs.max(1));
        c.frame_budget_bytes = self.frame_budget_mb.max(1) << 20;
        c.max_conns_per_addr = self.max_connections_per_addr.max(1);
        c.frame_rate = f64::from(self.frame_rate.max(1));
        c.frame_burst = c.frame_rate * 2.0;
        c.register_rate = f64::from(self.register_rate.max(1));
        c.register_burst = f64::from(self.register_burst.max(1));
        c.outbound_frames = self.outbound_frames.max(hub::MIN_OUTBOUND_FRAMES);
        c.max_http_connections = self.max_http_connections.max(1);
        c.max_feed_subscribers = self.max_feed_subscribers.max(1);
        c.max_sessions = self.max_sessions.max(1);
        c.max_bundle_bytes = self.max_bundle_bytes;
        c.token = self
            .token_file
            .as_deref()
            .map(read_token_file)
            .transpose()?;
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            c.tls = Some(hub::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        Ok(c)
    }
}

/// Runs the hub until a shutdown signal; exit code 0 after a clean shutdown.
pub(super) fn run(args: HubArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    if !args.host.is_loopback() {
        if config.token.is_none() && !args.insecure {
            anyhow::bail!(
                "refusing to listen on {} without a token: anyone who can reach the port could read \
                 every session's mail and send as anyone. Give --token-file FILE (clients use \
                 RELAY_TOKEN or --token-file), keep the default 127.0.0.1 and reach it over SSH, \
                 or pass --insecure if you really mean it",
                args.host
            );
        }
        if config.token.is_none() {
            tracing::warn!(host = %args.host, "--insecure: listening on a non-loopback address WITHOUT a token");
        }
        if config.tls.is_none() {
            tracing::warn!(host = %args.host, "listening on a non-loopback address without TLS: traffic (and the token) travel in clear text; use --tls-cert/--tls-key or an SSH tunnel");
        }
    }
    // One network thread plus the store's own thread is the measured sweet spot on a
    // two-core machine: no cross-thread wake-ups between network tasks (lower CPU per
    // delivery, and idle connections cost less). More threads help only with many cores.
    let mut builder = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    };
    let runtime = builder
        .enable_all()
        .thread_name("relay-hub")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // A file-size limit (`ulimit -f`) must make writes fail like a full disk — an error
        // the store reports while the hub keeps serving reads — not kill the hub with
        // SIGXFSZ. A registered handler (this one only counts) replaces the default action.
        let _xfsz =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))
                .context("installing the SIGXFSZ handler")?;
        let data_dir = config.data_dir.clone();
        let hub = match hub::Hub::open(config) {
            Ok(hub) => hub,
            Err(e @ hub::HubError::Store(hub::StoreError::Locked { .. })) => {
                anyhow::bail!(
                    "{e}. One store serves one hub: stop the other hub, or start this one on \
                     its own store with --data-dir DIR (or RELAY_DATA_DIR=DIR)"
                )
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("opening the store in {}", data_dir.display()));
            }
        };
        let listener = tokio::net::TcpListener::bind((args.host, args.port))
            .await
            .with_context(|| format!("binding {}:{}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        let scheme = if args.tls_cert.is_some() { "wss" } else { "ws" };
        eprintln!("listening on {scheme}://{addr}");
        let web = if args.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!("console on {web}://{addr}/ (also /metrics, /healthz)");
        tracing::info!(data_dir = %data_dir.display(), epoch = %hub.epoch(), "hub ready");
        hub.serve(listener, shutdown_signal()).await?;
        tracing::info!("hub stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
