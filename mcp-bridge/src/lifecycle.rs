//! A bridge's life from start to exit: resolve who we are, serve MCP on stdio until stdin
//! closes (or the watchdog says stop), then leave cleanly. The session is recorded (registry,
//! hub) only once the hub connection starts — the first tool call, or a moment after
//! `initialized` — so a health check that hangs up first leaves no trace (docs/BRIDGE.md).
//!
//! Exit paths:
//! - stdin EOF ends rmcp's service (`waiting()` returns): the natural end; [`run`] returns 0.
//! - parent gone / SIGTERM / SIGINT / SIGHUP: clean up, then `std::process::exit(0)` — tokio's
//!   stdin reader may sit in a blocking read that would otherwise keep the process alive.
//! - a bad identity or URL at start: [`run`] returns 2 before anything else happens.
//!
//! Cleanup on every path is bounded: close the hub connection (≤ 0.5 s) and mark the registry
//! entry ended (≤ 1 s).

use std::{sync::Arc, time::Duration};

use rmcp::ServiceExt;

use crate::{
    actions::Relay,
    config::BridgeConfig,
    dial,
    hub_client::{HubClient, LinkState},
    local::LocalRecord,
    mcp::RelayServer,
    meta,
    transport::StdioTransport,
    watchdog::{ExitCause, Watchdog},
};

/// How long the registry update on exit may take.
const REGISTRY_EXIT_LIMIT: Duration = Duration::from_secs(1);

/// What `claude-relay mcp` was given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--client-id`.
    pub client_id: Option<String>,
    /// `--relay-url` (clap also fills it from `RELAY_URL`).
    pub relay_url: Option<String>,
    /// `--no-channel`: do not push new mail as Claude Code channel events (`RELAY_CHANNEL=off`
    /// does the same).
    pub no_channel: bool,
    /// `--token-file`: the hub token's file (wins over `RELAY_TOKEN` / `RELAY_TOKEN_FILE`).
    pub token_file: Option<std::path::PathBuf>,
    /// `--ca-cert`: the CA to trust for `wss://` (wins over `RELAY_CA_CERT`).
    pub ca_cert: Option<std::path::PathBuf>,
}

/// Runs the bridge on this process's stdin/stdout. Returns the exit code for the natural end
/// (stdin closed) or a startup error; every other way out calls `std::process::exit` itself.
pub async fn run(opts: Options) -> i32 {
    let watchdog = match Watchdog::install() {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return 1;
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    let local = LocalRecord::open_default();
    let identity = match local.resolve_identity(opts.client_id.as_deref(), env) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!("cannot choose a session id: {e}");
            eprintln!("claude-relay mcp: {e}");
            return 2;
        }
    };
    let url = BridgeConfig::resolve_url(opts.relay_url.as_deref(), env);
    if let Err(e) = dial::check_url(&url) {
        eprintln!("claude-relay mcp: {e}");
        return 2;
    }
    let mut config = BridgeConfig::new(identity, url, env);
    if opts.token_file.is_some() || opts.ca_cert.is_some() {
        config.security.auth = crate::dial::ClientAuth::resolve(
            opts.token_file.as_deref(),
            opts.ca_cert.as_deref(),
            env,
        );
    }
    let channel = crate::config::channel_enabled(opts.no_channel, env);
    tracing::info!(
        "bridge {} (from {}) for hub {}",
        config.identity.id,
        config.identity.source.label,
        config.relay_url
    );
    serve(config, channel, local, watchdog).await
}

/// Serves MCP on stdio with `config` (channel push on when `channel`) until stdin closes or
/// the watchdog fires.
async fn serve(
    config: BridgeConfig,
    channel: bool,
    local: LocalRecord,
    mut watchdog: Watchdog,
) -> i32 {
    let hub = HubClient::new(
        &config,
        meta::register_meta(&config, relay_proto::time::now_ms()),
    );
    // The registry records the session once the hub connection starts (first tool call, or
    // a moment after `initialized`): a health check that hangs up first leaves no entry.
    tokio::spawn(follow_registrations(
        hub.clone(),
        local.clone(),
        config.clone(),
    ));

    let mut relay = Relay::new(
        hub.clone(),
        local.sessions_reader(),
        config.identity.source.label.clone(),
    );
    if config.outbox {
        let offline = crate::offline::Offline::new(hub.clone(), &config.identity.id);
        offline.start();
        relay = relay.with_outbox(offline);
    }
    let relay = Arc::new(relay);
    let server = RelayServer::new(relay, config.profile).with_channel(channel);
    // Non-blocking pipes on Linux when stdin/stdout are FIFOs (how MCP clients spawn us);
    // blocking stdio handles otherwise.
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    let transport = StdioTransport::new(stdin, stdout);

    let mut cause = None;
    let served = tokio::select! {
        served = server.serve(transport) => Some(served),
        c = watchdog.wait() => {
            cause = Some(c);
            None
        }
    };
    let mut code = 0;
    if let Some(served) = served {
        match served {
            Ok(running) => {
                cause = Some(tokio::select! {
                    _ = running.waiting() => ExitCause::StdinClosed,
                    c = watchdog.wait() => c,
                });
            }
            Err(rmcp::service::ServerInitializeError::ConnectionClosed(_)) => {
                cause = Some(ExitCause::StdinClosed);
            }
            Err(e) => {
                tracing::error!("MCP initialization failed: {e}");
                cause = Some(ExitCause::StdinClosed);
                code = 1;
            }
        }
    }
    let cause = cause.unwrap_or(ExitCause::StdinClosed);
    tracing::info!("bridge stopping: {cause}");

    let registered_as = hub.id();
    hub.shutdown().await;
    local
        .mark_ended(registered_as.clone(), REGISTRY_EXIT_LIMIT)
        .await;
    if registered_as != config.identity.id {
        local
            .mark_ended(config.identity.id.clone(), REGISTRY_EXIT_LIMIT)
            .await;
    }
    match cause {
        ExitCause::StdinClosed => code,
        _ => std::process::exit(code),
    }
}

/// Records the session in the registry when the hub connection starts, then keeps it in step
/// with the name the hub actually gave us (an auto-numbered id may move from `CODEX` to
/// `CODEX2`; a name first refused may be granted later).
async fn follow_registrations(hub: HubClient, local: LocalRecord, config: BridgeConfig) {
    let mut rx = hub.watch_state();
    if !hub.wait_started().await {
        return;
    }
    local
        .mark_running(config.identity.id.clone(), &config, false)
        .await;
    let mut recorded = config.identity.id.clone();
    while rx.changed().await.is_ok() {
        // Every registration is followed by `Connected`. The name granted is kept apart, so a
        // new name is recorded even when a quick drop replaced `Connected` before we looked.
        let connected = matches!(*rx.borrow_and_update(), LinkState::Connected { .. });
        let Some(id) = hub.granted() else {
            continue;
        };
        if !connected && id == recorded {
            continue;
        }
        if id != recorded {
            local
                .mark_ended(recorded.clone(), REGISTRY_EXIT_LIMIT)
                .await;
        }
        local.mark_running(id.clone(), &config, true).await;
        recorded = id;
    }
}
