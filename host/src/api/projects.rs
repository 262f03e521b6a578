//! `/projects`: register, list, read and remove projects.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::auth::Auth;
use super::error::{ApiError, ApiJson, ApiPath};
use super::state::AppState;
use crate::domain::{NewProject, Project, ProjectId};

/// Body of `POST /projects`.
#[derive(Debug, Deserialize)]
pub struct CreateProject {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
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
) -> Result<(StatusCode, Json<Project>), ApiError> {
    principal.require_admin()?;
    let id = ProjectId::parse(body.id)?;
    let project = state
        .stores
        .projects
        .create(NewProject {
            id: id.clone(),
            display_name: body.display_name,
        })
        .await
        .map_err(|e| match e {
            crate::ports::StoreError::Conflict(message) => {
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
    Ok((StatusCode::CREATED, Json(project)))
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
    state
        .stores
        .projects
        .delete(&id)
        .await
        .map_err(|e| match e {
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
