//! `/projects`: register, list, read and remove projects.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Admin, Caller, ProjectAdmin, ProjectReader};
use super::doc_parts::{AdminOnProject, AdminOnly, ProjectAccess, ProjectPath};
use super::error::{ApiError, ApiJson, StoreContext};
use super::state::AppState;
use crate::domain::{NewAuditEntry, NewProject, Principal, Project, ProjectId};
use crate::ports::StoreError;
use crate::services::project_setup::{self, CreatedProject};

/// Body of `POST /projects`. With `template` the project's workspace is created from that
/// template (see [`crate::services::project_setup`]); without it the project gets an empty workspace
/// (with the Kubernetes executor, a pod from the operator's defaults).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// Lowercase letters, digits and `-`, at most 63 characters.
    #[schema(value_type = ProjectId)]
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// Create the workspace from this template (see `GET /templates`).
    #[serde(default)]
    pub template: Option<String>,
    /// Template variables; only with `template`.
    #[serde(default)]
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Clone this repository first; only with `template`.
    #[serde(default)]
    pub repo: Option<String>,
    /// `owner/name` of the forge repository CI builds; only with `template`.
    #[serde(default)]
    pub ci_repo: Option<String>,
}

/// Answer of `POST /projects`: the project alone, or with its setup when a template was given.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Created {
    Registered(Project),
    FromTemplate(Box<CreatedProject>),
}

/// Answer of `GET /projects`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProjectList {
    /// The projects the caller may access.
    pub projects: Vec<Project>,
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, remove))
}

/// Registers a project, or creates its workspace from a template (admin).
#[utoipa::path(post, path = "/projects", tag = "projects", request_body = CreateProject,
    security(("bearer" = [])), responses(
    (status = 201, description = "Created", body = Created),
    (status = 400, description = "Invalid id, template or variables"),
    AdminOnly,
    (status = 404, description = "No such template"),
    (status = 409, description = "The project exists"),
    (status = 502, description = "Cloning or CI registration failed"),
    (status = 503, description = "The workspace (with the Kubernetes executor, the pod) did not become ready; nothing was recorded"),
))]
async fn create(
    Admin { state, principal }: Admin,
    ApiJson(body): ApiJson<CreateProject>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
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
        return Ok((
            StatusCode::CREATED,
            Json(Created::FromTemplate(Box::new(created))),
        ));
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
        .await?;
    let entry = NewAuditEntry {
        actor: principal.actor(),
        action: "project.created".to_owned(),
        project_id: Some(id.to_string()),
        command_id: None,
        details: serde_json::json!({}),
    };
    // Audited and announced to the project's webhooks together, as with a template.
    if let Err(error) =
        crate::services::webhooks::record_project_event(state.stores.webhooks.as_ref(), &id, entry)
            .await
    {
        tracing::error!(%error, "could not record project.created");
    }
    Ok((StatusCode::CREATED, Json(Created::Registered(project))))
}

/// Lists the projects the caller may access.
#[utoipa::path(get, path = "/projects", tag = "projects", security(("bearer" = [])),
    responses((status = 200, description = "The projects", body = ProjectList)))]
async fn list(Caller { state, principal }: Caller) -> Result<Json<ProjectList>, ApiError> {
    let projects = accessible_projects(&state, &principal).await?;
    Ok(Json(ProjectList { projects }))
}

/// The projects `principal` may access, for the API's list and the dashboard's.
pub(crate) async fn accessible_projects(
    state: &AppState,
    principal: &Principal,
) -> Result<Vec<Project>, StoreError> {
    let all = state.stores.projects.list().await?;
    Ok(all
        .into_iter()
        .filter(|p| principal.can_access(&p.id))
        .collect())
}

/// Reads one project.
#[utoipa::path(get, path = "/projects/{id}", tag = "projects", security(("bearer" = [])),
    params(ProjectPath), responses(
    (status = 200, description = "The project", body = Project),
    ProjectAccess,
))]
async fn read(ProjectReader { project, .. }: ProjectReader) -> Result<Json<Project>, ApiError> {
    Ok(Json(project))
}

/// Removes a project with no running command (admin).
#[utoipa::path(delete, path = "/projects/{id}", tag = "projects", security(("bearer" = [])),
    params(ProjectPath), responses(
    (status = 204, description = "Removed"),
    AdminOnProject,
    (status = 409, description = "A command of the project is running"),
    (status = 503, description = "The project's pod or volume could not be deleted; repeat the request"),
))]
async fn remove(
    ProjectAdmin {
        state,
        principal,
        id,
    }: ProjectAdmin,
) -> Result<StatusCode, ApiError> {
    let deleted = state.stores.projects.delete(&id).await;
    if matches!(
        deleted,
        Ok(()) | Err(crate::ports::StoreError::NotFound { .. })
    ) {
        // Also for an unknown id, so a DELETE retried after the workspace could not be
        // removed finishes the job. The project's services go first: they run in it.
        state.registry.services().stop_project(&id).await;
        state.setup.remove_workspace(&id).await?;
    }
    deleted.map_err(|e| ApiError::from_store(e, StoreContext::DeletingProject))?;
    state
        .audit_project(&principal, "project.deleted", &id, serde_json::json!({}))
        .await;
    Ok(StatusCode::NO_CONTENT)
}
