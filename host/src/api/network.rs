//! `/projects/{id}/network`: where a project's commands may connect. The allow-list is stored
//! per project and read by the executor before each spawn, so a change applies from the
//! project's next command on whichever worker runs it.

use std::sync::Arc;

use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{ProjectAdmin, ProjectReader};
use super::doc_parts::{AdminOnProject, AdminOnProjectChecked, ProjectAccess, ProjectPath};
use super::error::{ApiError, ApiJson};
use super::state::AppState;
use crate::domain::ProjectId;
use crate::domain::network::{NetworkPolicy, parse_allow_list};

/// Answer of the network routes: the allow-list in force for the project's next command.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProjectNetwork {
    pub project_id: ProjectId,
    /// `host`, `host:port` or `*.domain[:port]` rules, in canonical form.
    pub allow: Vec<String>,
    /// `project` (its own policy) or `default` (the server's).
    pub source: String,
    /// When the project's own policy was last set; absent for the default.
    pub updated_at: Option<DateTime<Utc>>,
    /// Whether an egress proxy enforces it: false when the executor confines no command
    /// (`--unconfined`) or leaves egress to the cluster (Kubernetes).
    pub enforced: bool,
}

/// Body of `PUT /projects/{id}/network`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetNetwork {
    /// At most 64 rules; an empty list refuses every outbound connection.
    pub allow: Vec<String>,
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(read_network, replace_network, reset_network))
}

fn view(state: &AppState, project_id: ProjectId, own: Option<NetworkPolicy>) -> ProjectNetwork {
    let enforced = state.confinement.mode == "confined";
    match own {
        Some(policy) => ProjectNetwork {
            project_id,
            allow: policy.allow,
            source: "project".to_owned(),
            updated_at: Some(policy.updated_at),
            enforced,
        },
        None => ProjectNetwork {
            project_id,
            allow: state.confinement.default_allow.clone(),
            source: "default".to_owned(),
            updated_at: None,
            enforced,
        },
    }
}

/// The project's allow-list: its own, else the server's default.
#[utoipa::path(get, path = "/projects/{id}/network", tag = "projects", security(("bearer" = [])),
    params(ProjectPath), responses(
    (status = 200, description = "The allow-list in force", body = ProjectNetwork),
    ProjectAccess,
))]
async fn read_network(
    ProjectReader { state, project }: ProjectReader,
) -> Result<Json<ProjectNetwork>, ApiError> {
    let own = state.stores.network.network_policy(&project.id).await?;
    Ok(Json(view(&state, project.id, own)))
}

/// Replaces the project's allow-list (admin); applies from its next command.
#[utoipa::path(put, path = "/projects/{id}/network", tag = "projects", security(("bearer" = [])),
    params(ProjectPath), request_body = SetNetwork,
    responses(
    (status = 200, description = "The allow-list now in force", body = ProjectNetwork),
    (status = 400, description = "Malformed id or rule (`invalid_network_rule`)"),
    AdminOnProjectChecked,
))]
async fn replace_network(
    ProjectAdmin {
        state,
        principal,
        id,
    }: ProjectAdmin,
    ApiJson(body): ApiJson<SetNetwork>,
) -> Result<Json<ProjectNetwork>, ApiError> {
    let rules = parse_allow_list(&body.allow)
        .map_err(|e| ApiError::bad_request("invalid_network_rule", e.to_string()))?;
    let allow: Vec<String> = rules.iter().map(ToString::to_string).collect();
    let policy = state.stores.network.set_network_policy(&id, &allow).await?;
    state
        .audit_project(
            &principal,
            "project.network_updated",
            &id,
            serde_json::json!({ "allow": allow }),
        )
        .await;
    Ok(Json(view(&state, id, Some(policy))))
}

/// Drops the project's own allow-list, so the server's default applies again (admin).
#[utoipa::path(delete, path = "/projects/{id}/network", tag = "projects", security(("bearer" = [])),
    params(ProjectPath), responses(
    (status = 200, description = "The default allow-list, now in force", body = ProjectNetwork),
    AdminOnProject,
))]
async fn reset_network(
    ProjectAdmin {
        state,
        principal,
        id,
    }: ProjectAdmin,
) -> Result<Json<ProjectNetwork>, ApiError> {
    state.stores.projects.get(&id).await?;
    if state.stores.network.clear_network_policy(&id).await? {
        state
            .audit_project(
                &principal,
                "project.network_reset",
                &id,
                serde_json::json!({}),
            )
            .await;
    }
    Ok(Json(view(&state, id, None)))
}
