//! `/credentials`: write-only secret values for providers. Listings show names and times,
//! never values; every change is audited by name only.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::error::{ApiError, ApiJson, ApiPath};
use super::state::AppState;
use crate::domain::CredentialName;
use crate::ports::{CredentialInfo, SecretValue};

/// Body of `PUT /credentials/{name}`. Its `Debug` hides the value.
#[derive(Deserialize)]
pub struct PutCredential {
    pub value: String,
}

/// A credential as listed.
#[derive(Debug, Serialize, Deserialize)]
pub struct CredentialView {
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<CredentialInfo> for CredentialView {
    fn from(info: CredentialInfo) -> Self {
        Self {
            name: info.name.to_string(),
            created_at: info.created_at,
            updated_at: info.updated_at,
        }
    }
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/credentials", get(list))
        .route("/credentials/{name}", put(store).delete(remove))
}

fn parse_name(name: &str) -> Result<CredentialName, ApiError> {
    CredentialName::parse(name)
        .map_err(|e| ApiError::bad_request("invalid_credential_name", e.to_string()))
}

async fn store(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<PutCredential>,
) -> Result<Json<CredentialView>, ApiError> {
    principal.require_admin()?;
    let name = parse_name(&name)?;
    if body.value.is_empty() {
        return Err(ApiError::bad_request(
            "value_required",
            "a credential value must not be empty",
        ));
    }
    let info = state
        .stores
        .credentials
        .put(&name, &SecretValue::new(body.value))
        .await?;
    state
        .audit(
            &principal,
            "credential.put",
            None,
            None,
            serde_json::json!({ "name": name }),
        )
        .await;
    Ok(Json(info.into()))
}

async fn list(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_admin()?;
    let credentials: Vec<CredentialView> = state
        .stores
        .credentials
        .list()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(serde_json::json!({ "credentials": credentials })))
}

async fn remove(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    let name = parse_name(&name)?;
    state.stores.credentials.delete(&name).await?;
    state
        .audit(
            &principal,
            "credential.deleted",
            None,
            None,
            serde_json::json!({ "name": name }),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}
