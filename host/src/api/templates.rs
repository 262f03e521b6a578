//! Project templates and CI: `GET /templates`, `GET /projects/{id}/ci` and the CI
//! registration retry `POST /projects/{id}/ci`. Creating a project from a template goes
//! through `POST /projects` with a `template` field (see [`super::projects`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::auth::Auth;
use super::error::{ApiError, ApiPath, ApiQuery};
use super::state::AppState;
use crate::domain::{CiRegistration, ProjectId};
use crate::project_setup::{CiStatus, SetupError};
use crate::templates::TemplateInfo;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/templates", get(list))
        .route("/projects/{id}/ci", get(ci_status).post(register_ci))
}

impl From<SetupError> for ApiError {
    fn from(error: SetupError) -> Self {
        let status =
            StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let passes_through = matches!(
            status,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
        );
        if status.is_server_error() && !passes_through {
            return Self::internal("setting up the project", error);
        }
        let code = match &error {
            SetupError::InvalidId(_) => "invalid_id",
            SetupError::Template(_) => "invalid_template",
            SetupError::Seed(_) => "workspace",
            SetupError::Provision(_) => "workspace_unavailable",
            SetupError::Store(_) => "store",
            SetupError::CiNotConfigured => "ci_not_configured",
            SetupError::NoCiRepo(_) => "no_ci_repo",
            SetupError::Ci { .. } => "ci_failed",
            SetupError::MissingCredential(_) => "missing_credential",
        };
        Self::new(status, code, error.to_string())
    }
}

async fn list(
    State(state): State<Arc<AppState>>,
    Auth(_principal): Auth,
) -> Json<serde_json::Value> {
    let templates: Vec<TemplateInfo> = state.setup.templates();
    Json(serde_json::json!({ "templates": templates }))
}

#[derive(Debug, Deserialize)]
struct CiQuery {
    #[serde(default)]
    logs: bool,
}

async fn ci_status(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<CiQuery>,
) -> Result<Json<CiStatus>, ApiError> {
    let id = ProjectId::parse(id)?;
    principal.require_project(&id)?;
    Ok(Json(
        state
            .setup
            .ci_status(&principal.actor(), &id, query.logs)
            .await?,
    ))
}

async fn register_ci(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CiRegistration>, ApiError> {
    principal.require_admin()?;
    let id = ProjectId::parse(id)?;
    Ok(Json(
        state.setup.register_ci(&principal.actor(), &id).await?,
    ))
}
