//! `/projects/{id}/mcp-servers`: the MCP servers a project's agents are given. Secrets are
//! credential references, checked to exist when set, resolved by the host only when it
//! spawns the agent, and shown as references, never values.

use std::sync::Arc;

use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{ProjectAdmin, ProjectReader};
use super::doc_parts::{AdminOnProject, ProjectAccess, ProjectPath};
use super::error::{ApiError, ApiJson};
use super::state::AppState;
use crate::domain::ProjectId;
use crate::domain::mcp::{self, McpServer, ProjectMcpServers};

/// A project's MCP servers as the routes answer them.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct McpServersView {
    pub project_id: ProjectId,
    pub servers: Vec<McpServer>,
    /// When they were last set; absent when the project never set any.
    pub updated_at: Option<DateTime<Utc>>,
}

/// Body of `PUT /projects/{id}/mcp-servers`: the whole list (an empty one removes all).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMcpServers {
    /// At most 32 servers with unique names.
    pub servers: Vec<McpServer>,
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(read_mcp_servers, replace_mcp_servers))
}

fn view(project_id: ProjectId, stored: Option<ProjectMcpServers>) -> McpServersView {
    match stored {
        Some(s) => McpServersView {
            project_id,
            servers: s.servers,
            updated_at: Some(s.updated_at),
        },
        None => McpServersView {
            project_id,
            servers: Vec::new(),
            updated_at: None,
        },
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::unprocessable("invalid_mcp_servers", message)
}

/// The project's MCP servers, credential references as references.
#[utoipa::path(get, path = "/projects/{id}/mcp-servers", tag = "projects", security(("bearer" = [])),
    params(ProjectPath), responses(
    (status = 200, description = "The project's MCP servers (none: an empty list)", body = McpServersView),
    ProjectAccess,
))]
async fn read_mcp_servers(
    ProjectReader { state, project }: ProjectReader,
) -> Result<Json<McpServersView>, ApiError> {
    let stored = state.stores.mcp.mcp_servers(&project.id).await?;
    Ok(Json(view(project.id, stored)))
}

/// Replaces the project's MCP servers (admin: a server may reference any stored credential);
/// applies from its next command.
#[utoipa::path(put, path = "/projects/{id}/mcp-servers", tag = "projects", security(("bearer" = [])),
    params(ProjectPath), request_body = SetMcpServers,
    responses(
    (status = 200, description = "The servers now configured", body = McpServersView),
    AdminOnProject,
    (status = 422, description = "A server breaking a rule or naming a credential that does not exist (`invalid_mcp_servers`)"),
))]
async fn replace_mcp_servers(
    ProjectAdmin {
        state,
        principal,
        id,
    }: ProjectAdmin,
    ApiJson(body): ApiJson<SetMcpServers>,
) -> Result<Json<McpServersView>, ApiError> {
    mcp::validate(&body.servers).map_err(|e| invalid(e.to_string()))?;
    let referenced = mcp::referenced_credentials(&body.servers);
    if !referenced.is_empty() {
        let stored = state.stores.credentials.list().await?;
        if let Some(missing) = referenced
            .iter()
            .find(|name| !stored.iter().any(|c| c.name.as_str() == name.as_str()))
        {
            return Err(invalid(format!(
                "credential {missing:?} does not exist (create it with PUT /credentials/{missing})"
            )));
        }
    }
    let stored = state.stores.mcp.set_mcp_servers(&id, &body.servers).await?;
    let names: Vec<&str> = body.servers.iter().map(McpServer::name).collect();
    let details = serde_json::json!({ "servers": names, "credentials": referenced });
    state
        .audit_project(&principal, "project.mcp_servers_updated", &id, details)
        .await;
    Ok(Json(view(id, Some(stored))))
}
