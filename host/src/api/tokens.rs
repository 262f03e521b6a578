//! `/tokens`: issue and revoke API tokens (admins only). The secret is returned once, at
//! creation; only its digest is stored.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{Auth, generate_id, generate_secret};
use super::error::{ApiError, ApiJson, ApiPath};
use super::state::AppState;
use crate::domain::{ApiToken, NewToken, ProjectId, TokenRole, token_digest};

/// Body of `POST /tokens`.
#[derive(Debug, Deserialize)]
pub struct CreateToken {
    pub name: String,
    pub role: TokenRole,
    #[serde(default)]
    pub projects: Vec<ProjectId>,
}

/// Answer to `POST /tokens`: the only time the secret is shown.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub info: ApiToken,
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/tokens", get(list).post(create))
        .route("/tokens/{id}", delete(revoke))
}

/// Issues a token and stores its digest; shared with `rdev serve`'s bootstrap.
pub async fn issue(
    state: &AppState,
    name: String,
    role: TokenRole,
    projects: Vec<ProjectId>,
) -> Result<CreatedToken, ApiError> {
    let token = generate_secret();
    let info = state
        .stores
        .tokens
        .create(NewToken {
            id: generate_id(),
            name,
            role,
            projects,
            digest: token_digest(&token),
        })
        .await?;
    Ok(CreatedToken { token, info })
}

async fn create(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    principal.require_admin()?;
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.len() > 128 {
        return Err(ApiError::bad_request(
            "invalid_token_name",
            "a token name of 1 to 128 characters is required",
        ));
    }
    if body.role == TokenRole::Member && body.projects.is_empty() {
        return Err(ApiError::bad_request(
            "projects_required",
            "a member token must name at least one project",
        ));
    }
    let projects = if body.role == TokenRole::Admin {
        Vec::new()
    } else {
        body.projects
    };
    let created = issue(&state, name, body.role, projects).await?;
    state
        .audit(
            &principal,
            "token.created",
            None,
            None,
            serde_json::json!({
                "token_id": created.info.id,
                "name": created.info.name,
                "role": created.info.role,
                "projects": created.info.projects,
            }),
        )
        .await;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_admin()?;
    let tokens = state.stores.tokens.list().await?;
    Ok(Json(serde_json::json!({ "tokens": tokens })))
}

async fn revoke(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ApiToken>, ApiError> {
    principal.require_admin()?;
    let token = state.stores.tokens.revoke(&id).await?;
    state
        .audit(
            &principal,
            "token.revoked",
            None,
            None,
            serde_json::json!({ "token_id": token.id, "name": token.name }),
        )
        .await;
    Ok(Json(token))
}
