//! An MCP client that records the channel events a bridge sends (what Claude Code turns
//! into `<channel>` events), driving a real `claude-relay mcp`, for tests of channel push.

use std::time::Duration;

use rmcp::{
    ClientHandler, RoleClient, ServiceExt,
    model::{CallToolRequestParams, CallToolResult, ClientConfig, CustomNotification},
    service::{NotificationContext, RunningService},
};
use serde_json::Value;
use tokio::{process::Child, sync::mpsc};

use super::{
    bridge::{BridgeOpts, client_config, collect_stderr, command},
    hub::WAIT,
};

/// An MCP client that forwards every custom notification (method, params) to a channel.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<(String, Value)>,
}

impl ClientHandler for Recorder {
    fn get_info(&self) -> ClientConfig {
        client_config()
    }

    fn on_custom_notification(
        &self,
        notification: CustomNotification,
        _context: NotificationContext<RoleClient>,
    ) -> impl Future<Output = ()> + Send + '_ {
        let _ = self.tx.send((
            notification.method,
            notification.params.unwrap_or(Value::Null),
        ));
        std::future::ready(())
    }
}

/// A bridge driven by a [`Recorder`].
pub struct Recorded {
    /// The MCP client.
    pub client: RunningService<RoleClient, Recorder>,
    /// Every custom notification received, in order.
    pub events: mpsc::UnboundedReceiver<(String, Value)>,
    _child: Child,
    /// The bridge's stderr.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Recorded {
    /// Starts a bridge from `opts` and initializes MCP with a recording client.
    pub async fn start(opts: BridgeOpts) -> Self {
        let mut child = command(&opts, false).spawn().expect("spawn bridge");
        let log = collect_stderr(&mut child);
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        let client = tokio::time::timeout(WAIT, Recorder { tx }.serve((stdout, stdin)))
            .await
            .expect("initialize in time")
            .expect("initialize");
        Self {
            client,
            events,
            _child: child,
            log,
        }
    }

    /// Calls `tool` and returns the whole result (text, `isError`, `structuredContent`).
    pub async fn call_result(&self, tool: &str, args: Value) -> CallToolResult {
        let mut params = CallToolRequestParams::new(tool.to_string());
        if let Value::Object(map) = args {
            params = params.with_arguments(map);
        }
        tokio::time::timeout(WAIT, self.client.call_tool(params))
            .await
            .expect("tool call in time")
            .expect("tool call")
    }

    /// Calls `tool` and returns its text.
    pub async fn call(&self, tool: &str, args: Value) -> String {
        self.call_result(tool, args)
            .await
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls `relay_status` until connected, within `limit`.
    pub async fn wait_connected(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let status = self.call("relay_status", Value::Null).await;
            if status.contains("— connected for") {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not connected: {status}; stderr {:#?}",
                self.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The next recorded notification (bounded by [`WAIT`]).
    pub async fn next_event(&mut self) -> (String, Value) {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("a channel notification in time")
            .expect("recorder open")
    }
}
