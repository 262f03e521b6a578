//! Where each project's MCP servers are kept, so that the API that sets them and every
//! worker that hands them to a provider agree.

use super::StoreError;
use crate::domain::ProjectId;
use crate::domain::mcp::{McpServer, ProjectMcpServers};

/// Each project's MCP server list (credential references only, never secret values).
#[async_trait::async_trait]
pub trait McpServerStore: Send + Sync {
    /// The project's servers; `None` when it never set any.
    async fn mcp_servers(
        &self,
        project: &ProjectId,
    ) -> Result<Option<ProjectMcpServers>, StoreError>;

    /// Replaces the project's servers with `servers` (already validated); `NotFound` for an
    /// unknown project.
    async fn set_mcp_servers(
        &self,
        project: &ProjectId,
        servers: &[McpServer],
    ) -> Result<ProjectMcpServers, StoreError>;
}
