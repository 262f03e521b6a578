//! Per-project MCP servers (`mcp_servers`, migration 0145): stored as the validated JSON
//! list, credential references included, values never.

use async_trait::async_trait;

use super::columns::{Cols, json};
use super::db::Arg;
use super::dialect::sql;
use super::{Db, SqlStore};
use crate::domain::ProjectId;
use crate::domain::mcp::{McpServer, ProjectMcpServers};
use crate::ports::{McpServerStore, StoreError};

fn servers_from_row<D: Db>(row: &D::Row) -> Result<ProjectMcpServers, StoreError> {
    let cols = Cols::<D>::new(row, "mcp_servers");
    Ok(ProjectMcpServers {
        project_id: cols.parse("project_id", ProjectId::parse)?,
        servers: cols.json("servers")?,
        updated_at: cols.time("updated_at")?,
    })
}

#[async_trait]
impl<D: Db> McpServerStore for SqlStore<D> {
    async fn mcp_servers(
        &self,
        project: &ProjectId,
    ) -> Result<Option<ProjectMcpServers>, StoreError> {
        let query = sqlx::query(
            "SELECT project_id, servers, updated_at FROM mcp_servers WHERE project_id = $1",
        )
        .arg(project.as_str());
        self.find_optional(query, servers_from_row::<D>, "reading MCP servers")
            .await
    }

    async fn set_mcp_servers(
        &self,
        project: &ProjectId,
        servers: &[McpServer],
    ) -> Result<ProjectMcpServers, StoreError> {
        let query = sqlx::query(sql!(
            D,
            "INSERT INTO mcp_servers (project_id, servers, updated_at) VALUES ($1, $2, {now}) \
             ON CONFLICT (project_id) DO UPDATE SET servers = excluded.servers, \
             updated_at = excluded.updated_at RETURNING project_id, servers, updated_at"
        ))
        .arg(project.as_str())
        .arg(json(&servers)?);
        self.put_for_project(query, servers_from_row::<D>, "storing MCP servers", project)
            .await
    }
}
