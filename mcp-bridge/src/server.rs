//! The MCP face of the bridge: rmcp's [`ServerHandler`], implemented by hand.
//!
//! No `#[tool]` macros: the tool list is static ([`tools::definitions`]) and `tools/call`
//! dispatches by name through [`tools::parse`], so every argument error is ours to word and
//! comes back as an `isError` result the model can read — never a protocol error it cannot
//! see, a hang or a panic. Protocol-level robustness (malformed lines, `ping`) lives in the
//! transport and in rmcp.

use std::{borrow::Cow, sync::Arc};

use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
        InitializeRequestParams, InitializeResult, ListToolsResult, PaginatedRequestParams,
        ProtocolVersion, ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
};

use crate::{
    actions::{Relay, Reply},
    config::ToolProfile,
    tools,
};

/// The server name clients show (`claude mcp list`, the channel source).
pub const SERVER_NAME: &str = "claude-relay";

/// The newest MCP revision this server implements (what Claude Code speaks on stdio).
pub const PROTOCOL: ProtocolVersion = ProtocolVersion::V_2025_11_25;

/// The bridge's MCP server.
pub struct RelayServer {
    relay: Arc<Relay>,
    profile: ToolProfile,
    instructions: String,
}

impl RelayServer {
    /// A server whose tools run on `relay`.
    pub fn new(relay: Arc<Relay>, profile: ToolProfile) -> Self {
        let instructions = instructions(&relay.hub().id());
        Self {
            relay,
            profile,
            instructions,
        }
    }

    /// The tool implementations.
    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }
}

/// What the model is told about this server once, at initialize.
fn instructions(id: &str) -> String {
    format!(
        "claude-relay connects this agent session to other agent sessions (Claude Code, Codex, \
         Gemini CLI; this machine or others) through a message hub. You are session {id}. \
         relay_send messages a session by id, or all; relay_receive reads your unread mail, \
         oldest first; relay_peers and relay_sessions show who exists; relay_status shows the \
         connection and whether your sends were read. When a relay message asks you something, \
         answer it with relay_send to its sender. Send file paths, commits and short summaries \
         rather than pasting files."
    )
}

fn to_result(reply: Reply) -> CallToolResult {
    let content = vec![ContentBlock::text(reply.text)];
    if reply.is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    }
}

impl ServerHandler for RelayServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(SERVER_NAME, env!("CARGO_PKG_VERSION")))
            .with_protocol_version(PROTOCOL)
            .with_instructions(self.instructions.clone())
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(&PROTOCOL))
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        context.peer.set_peer_info(request.clone());
        // Dial the hub only now: a client that merely lists servers gets its answer without a
        // network round trip, and one that never initializes costs the hub nothing.
        self.relay.hub().start();
        self.negotiate_initialize(&request)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools::definitions(
            self.profile,
        )))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools::definitions(self.profile)
            .into_iter()
            .find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let reply = match tools::parse(&request.name, request.arguments.as_ref()) {
            Err(message) => Reply::error(message),
            Ok(call) => {
                tokio::select! {
                    reply = self.relay.call(call) => reply,
                    _ = context.ct.cancelled() => Reply::error("cancelled by the client"),
                }
            }
        };
        Ok(CallToolResponse::Complete(to_result(reply)))
    }
}
