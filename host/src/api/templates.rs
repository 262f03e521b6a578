//! Project templates and CI: `GET /templates`, `GET /projects/{id}/ci` and the CI
//! registration retry `POST /projects/{id}/ci`. Creating a project from a template goes
//! through `POST /projects` with a `template` field (see [`super::projects`]).

use std::sync::Arc;

use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, IntoResponses, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Admin, Caller, accessible_project_id};
use super::doc_parts::{AdminOnly, ProjectPath};
use super::error::{ApiError, ApiPath, ApiQuery};
use super::state::AppState;
use crate::domain::{CiRegistration, ProjectId};
use crate::services::project_setup::CiStatus;
use crate::services::templates::TemplateInfo;

/// Answer of `GET /templates`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<TemplateInfo>,
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(ci_status, register_ci))
}

/// Lists the project templates (built-in and the operator's).
#[utoipa::path(get, path = "/templates", tag = "templates", security(("bearer" = [])),
    responses((status = 200, description = "The templates", body = TemplateList)))]
async fn list(Caller { state, .. }: Caller) -> Json<TemplateList> {
    Json(TemplateList {
        templates: state.setup.templates(),
    })
}

/// Query of `GET /projects/{id}/ci`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CiQuery {
    /// Include the last pipeline's log lines.
    #[serde(default)]
    logs: bool,
}

/// How both CI routes fail in the project setup service they call.
#[derive(IntoResponses)]
#[allow(dead_code)]
enum CiFailures {
    #[response(status = 404, description = "No such project or setup")]
    NoSetup,
    #[response(status = 502, description = "The CI server failed")]
    CiFailed,
}

/// The project's CI registration and its last pipeline.
#[utoipa::path(get, path = "/projects/{id}/ci", tag = "templates", security(("bearer" = [])),
    params(ProjectPath, CiQuery), responses(
    (status = 200, description = "CI state", body = CiStatus),
    (status = 400, description = "Invalid id or query"),
    (status = 403, description = "The token may not access this project"),
    (status = 409, description = "CI is not configured on this server"),
    CiFailures,
))]
async fn ci_status(
    Caller { state, principal }: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<CiQuery>,
) -> Result<Json<CiStatus>, ApiError> {
    let id = accessible_project_id(&principal, id)?;
    Ok(Json(
        state
            .setup
            .ci_status(&principal.actor(), &id, query.logs)
            .await?,
    ))
}

/// Retries the project's CI registration (admin).
#[utoipa::path(post, path = "/projects/{id}/ci", tag = "templates", security(("bearer" = [])),
    params(ProjectPath), responses(
    (status = 200, description = "The registration", body = CiRegistration),
    (status = 400, description = "Invalid id"),
    AdminOnly,
    (status = 409, description = "CI is not configured, or the project has no forge repository or a secret's credential"),
    CiFailures,
))]
async fn register_ci(
    Admin { state, principal }: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CiRegistration>, ApiError> {
    let id = ProjectId::parse(id)?;
    Ok(Json(
        state.setup.register_ci(&principal.actor(), &id).await?,
    ))
}
