//! `/tokens`: issue and revoke API tokens (admins only). The secret is returned once, at
//! creation; only its digest is stored.

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Admin, generate_id, generate_secret};
use super::doc_parts::AdminOnly;
use super::error::{ApiError, ApiJson, ApiPath};
use super::state::AppState;
use crate::domain::{ApiToken, NewToken, ProjectId, TokenRole, token_digest};

/// Body of `POST /tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// 1 to 128 characters, for the audit log.
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    pub role: TokenRole,
    /// Required for `member` tokens; ignored for `admin`.
    #[serde(default)]
    pub projects: Vec<ProjectId>,
}

/// Answer to `POST /tokens`: the only time the secret is shown.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The secret, shown only now.
    pub token: String,
    #[serde(flatten)]
    pub info: ApiToken,
}

/// Answer of `GET /tokens`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<ApiToken>,
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
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

/// Issues a token (admin); the secret is in this answer only.
#[utoipa::path(post, path = "/tokens", tag = "tokens", security(("bearer" = [])),
    request_body = CreateToken, responses(
    (status = 201, description = "Issued", body = CreatedToken),
    (status = 400, description = "Invalid name, or a member token without projects"),
    AdminOnly,
))]
async fn create(
    Admin { state, principal }: Admin,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
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
        .audit_server(
            &principal,
            "token.created",
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

/// Lists tokens, never their secrets (admin).
#[utoipa::path(get, path = "/tokens", tag = "tokens", security(("bearer" = [])), responses(
    (status = 200, description = "The tokens", body = TokenList),
    AdminOnly,
))]
async fn list(Admin { state, .. }: Admin) -> Result<Json<TokenList>, ApiError> {
    let tokens = state.stores.tokens.list().await?;
    Ok(Json(TokenList { tokens }))
}

/// Revokes a token (admin); requests with it fail from now on.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens", security(("bearer" = [])),
    params(("id" = String, Path, description = "Token id (`tok-…`)")), responses(
    (status = 200, description = "The revoked token", body = ApiToken),
    AdminOnly,
    (status = 404, description = "No such token"),
))]
async fn revoke(
    Admin { state, principal }: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ApiToken>, ApiError> {
    let token = state.stores.tokens.revoke(&id).await?;
    state
        .audit_server(
            &principal,
            "token.revoked",
            serde_json::json!({ "token_id": token.id, "name": token.name }),
        )
        .await;
    Ok(Json(token))
}
