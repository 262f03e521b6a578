//! `/projects/{id}/policy`: how a project's permission requests are decided without asking
//! (rules, then the mode) and how long a person has to decide the rest. A project without
//! its own policy has the shipped default, which asks and never allows by default.

use std::sync::Arc;

use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{ProjectAdmin, ProjectReader};
use super::doc_parts::{AdminOnProjectChecked, ProjectAccess, ProjectPath};
use super::error::{ApiError, ApiJson};
use super::state::AppState;
use crate::domain::{Policy, ProjectId};

/// Answer of the policy routes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProjectPolicy {
    pub project_id: ProjectId,
    /// `project` (its own) or `default` (the shipped one).
    pub source: String,
    pub policy: Policy,
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(read_policy, replace_policy))
}

/// The project's approval policy: its own, else the shipped default.
#[utoipa::path(get, path = "/projects/{id}/policy", tag = "approvals", security(("bearer" = [])),
    params(ProjectPath), responses(
    (status = 200, description = "The policy in force", body = ProjectPolicy),
    ProjectAccess,
))]
async fn read_policy(
    ProjectReader { state, project }: ProjectReader,
) -> Result<Json<ProjectPolicy>, ApiError> {
    let own = state.stores.approvals.policy(&project.id).await?;
    let source = if own.is_some() { "project" } else { "default" };
    Ok(Json(ProjectPolicy {
        project_id: project.id,
        source: source.into(),
        policy: own.unwrap_or_default(),
    }))
}

/// Replaces the project's approval policy (admin); applies to the next request.
#[utoipa::path(put, path = "/projects/{id}/policy", tag = "approvals", security(("bearer" = [])),
    params(ProjectPath), request_body = Policy,
    responses(
    (status = 200, description = "The policy now in force", body = ProjectPolicy),
    (status = 400, description = "Malformed id or policy (`invalid_policy`)"),
    AdminOnProjectChecked,
))]
async fn replace_policy(
    ProjectAdmin {
        state,
        principal,
        id,
    }: ProjectAdmin,
    ApiJson(policy): ApiJson<Policy>,
) -> Result<Json<ProjectPolicy>, ApiError> {
    policy.validate()?;
    state.stores.projects.get(&id).await?;
    let policy = state.stores.approvals.put_policy(&id, &policy).await?;
    state
        .audit_project(
            &principal,
            "project.policy_updated",
            &id,
            serde_json::json!({
                "mode": policy.mode,
                "rules": policy.rules.len(),
                "timeout_secs": policy.timeout_secs,
            }),
        )
        .await;
    Ok(Json(ProjectPolicy {
        project_id: id,
        source: "project".into(),
        policy,
    }))
}
