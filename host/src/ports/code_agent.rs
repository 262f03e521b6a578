//! The provider port: how the worker runs one request through one provider.

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::{AgentEvent, AgentProvider, AgentRequest, AgentResult, CommandId, ProjectId};

/// Where a provider's events go. Bounded: a provider that emits faster than the event log
/// stores is slowed down rather than buffered without limit.
pub type EventSink = mpsc::Sender<AgentEvent>;

/// One execution of a provider.
#[derive(Debug)]
pub struct Execution {
    pub command_id: CommandId,
    pub project_id: ProjectId,
    pub request: AgentRequest,
    pub events: EventSink,
    /// Cancelling this token is how an execution is cancelled: the provider is asked to stop
    /// cooperatively and is stopped by force after the implementation's grace period.
    pub cancel: CancellationToken,
    /// The project's MCP servers (credential references, never values); a provider sees
    /// them only when its manifest grants `mcp_servers`.
    pub mcp_servers: Vec<crate::domain::mcp::McpServer>,
}

/// A failure of the machinery around a provider, as opposed to a provider reporting a
/// failed result. The worker records both as a failed command, with this as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("the request is not valid for this provider: {0}")]
    InvalidRequest(String),
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    #[error("the provider exceeded its time limit of {timeout_secs} s")]
    TimedOut { timeout_secs: u64 },
    #[error("the provider was stopped by force after ignoring the cancel for {grace_secs} s")]
    CancelIgnored { grace_secs: u64 },
    /// The sandbox stopped the provider: a trap, a panic or an exhausted limit.
    #[error("the provider crashed: {0}")]
    Crashed(String),
    #[error("the provider failed: {0}")]
    Failed(String),
}

#[async_trait]
pub trait CodeAgent: Send + Sync {
    /// Identity and capabilities, as loaded.
    fn provider(&self) -> &AgentProvider;

    /// Runs the request to its end, streaming events into `execution.events`. Returns the
    /// provider's result (which may itself say `failed` or `cancelled`) or an error when the
    /// provider could not produce one.
    async fn execute(&self, execution: Execution) -> Result<AgentResult, AgentError>;
}
