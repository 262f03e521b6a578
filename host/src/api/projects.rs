//! `/projects`: register, list, read and remove projects.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::auth::Auth;
use super::error::{ApiError, ApiJson, ApiPath};
use super::state::AppState;
use crate::domain::{NewProject, Project, ProjectId};
use crate::project_setup;

/// Body of `POST /projects`. With `template` the project's workspace is created from that
/// template (see [`crate::project_setup`]); without it the project gets an empty workspace
/// (with the Kubernetes executor, a pod from the operator's defaults).
#[derive(Debug, Deserialize)]
pub struct CreateProject {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub repo: Option<String>,
    #[serde(default)]
    pub ci_repo: Option<String>,
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/projects", get(list).post(create))
        .route("/projects/{id}", get(read).delete(remove))
}

async fn create(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreateProject>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    if let Some(template) = body.template {
        // The setup service records the project and writes its own audit entry.
        let created = state
            .setup
            .create(
                &principal.actor(),
                project_setup::CreateProject {
                    id: body.id,
                    template,
                    vars: body.vars,
                    repo: body.repo,
                    ci_repo: body.ci_repo,
                    display_name: body.display_name,
                },
            )
            .await?;
        return Ok((StatusCode::CREATED, Json(created)).into_response());
    }
    if !body.vars.is_empty() || body.repo.is_some() || body.ci_repo.is_some() {
        return Err(ApiError::bad_request(
            "template_required",
            "vars, repo and ci_repo need a template",
        ));
    }
    let id = ProjectId::parse(body.id)?;
    // Provisions the workspace (a pod with the Kubernetes executor) before recording it.
    let project = state
        .setup
        .register(NewProject {
            id: id.clone(),
            display_name: body.display_name,
        })
        .await
        .map_err(|e| match e {
            project_setup::SetupError::Store(crate::ports::StoreError::Conflict(message)) => {
                ApiError::new(StatusCode::CONFLICT, "project_exists", message)
            }
            other => other.into(),
        })?;
    state
        .audit(
            &principal,
            "project.created",
            Some(id.to_string()),
            None,
            serde_json::json!({}),
        )
        .await;
    Ok((StatusCode::CREATED, Json(project)).into_response())
}

async fn list(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    let projects: Vec<Project> = state
        .stores
        .projects
        .list()
        .await?
        .into_iter()
        .filter(|p| principal.can_access(&p.id))
        .collect();
    Ok(Json(serde_json::json!({ "projects": projects })))
}

async fn read(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<ProjectId>,
) -> Result<Json<Project>, ApiError> {
    principal.require_project(&id)?;
    Ok(Json(state.stores.projects.get(&id).await?))
}

async fn remove(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<ProjectId>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    let deleted = state.stores.projects.delete(&id).await;
    if matches!(
        deleted,
        Ok(()) | Err(crate::ports::StoreError::NotFound { .. })
    ) {
        // Also for an unknown id, so a DELETE retried after the workspace could not be
        // removed finishes the job.
        state.setup.remove_workspace(&id).await?;
    }
    deleted.map_err(|e| match e {
        crate::ports::StoreError::Conflict(message) => {
            ApiError::new(StatusCode::CONFLICT, "project_busy", message)
        }
        other => other.into(),
    })?;
    state
        .audit(
            &principal,
            "project.deleted",
            Some(id.to_string()),
            None,
            serde_json::json!({}),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}
