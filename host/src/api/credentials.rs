//! `/credentials`: write-only secret values for providers. Listings show names and times,
//! never values; every change is audited by name only.

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Admin;
use super::doc_parts::AdminOnly;
use super::error::{ApiError, ApiJson, ApiPath};
use super::state::AppState;
use crate::domain::{CredentialName, MasterKey};
use crate::ports::{CredentialInfo, SecretValue};

/// Body of `PUT /credentials/{name}`. Its `Debug` hides the value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutCredential {
    /// The secret; never shown again.
    #[schema(min_length = 1)]
    pub value: String,
}

/// A credential as listed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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

/// Answer of `GET /credentials`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CredentialList {
    pub credentials: Vec<CredentialView>,
}

/// Body of `POST /credentials/rotate-key`. Its `Debug` hides the key.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// The new master key, 32 bytes in standard base64. Required when the key comes from
    /// `RDEV_MASTER_KEY`; without it the server generates one and writes its key file.
    pub new_key: Option<String>,
}

/// Answer of `POST /credentials/rotate-key`: never the key, only its fingerprint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyRotated {
    /// First 16 hex digits of sha256(new key), as `/readyz` reasons name keys.
    pub fingerprint: String,
    /// Credentials and webhook signing secrets re-encrypted.
    pub reencrypted: u64,
    /// True when `<data-dir>/master.key` now holds the new key; false with
    /// `RDEV_MASTER_KEY`, which the operator must now set to the new key.
    pub key_file_updated: bool,
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(store, remove))
        .routes(routes!(rotate_key))
}

/// Re-encrypts every credential and webhook signing secret under a new master key in one
/// transaction (admin). With a key file the new key is staged beside it first and
/// installed after the commit, so a crash loses nothing (docs/storage.md).
#[utoipa::path(post, path = "/credentials/rotate-key", tag = "credentials",
    security(("bearer" = [])), request_body = RotateKey, responses(
    (status = 200, description = "Rotated", body = KeyRotated),
    (status = 400, description = "The new key is not 32 bytes of base64"),
    AdminOnly,
    (status = 409, description = "The key comes from RDEV_MASTER_KEY and no new key was sent, or the key in use does not open the stored secrets"),
    (status = 500, description = "Re-encrypted, but the key file could not be replaced (the next start installs it), or the store failed"),
))]
async fn rotate_key(
    Admin { state, principal }: Admin,
    ApiJson(body): ApiJson<RotateKey>,
) -> Result<Json<KeyRotated>, ApiError> {
    let new_key = body
        .new_key
        .as_deref()
        .map(MasterKey::from_base64)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_master_key", e.to_string()))?;
    let rotated = state.master_key.rotate(new_key).await?;
    let details = serde_json::json!({
        "fingerprint": rotated.fingerprint,
        "reencrypted": rotated.reencrypted,
    });
    state
        .audit_server(&principal, "credential.key_rotated", details)
        .await;
    Ok(Json(KeyRotated {
        fingerprint: rotated.fingerprint,
        reencrypted: rotated.reencrypted,
        key_file_updated: rotated.key_file_updated,
    }))
}

fn parse_name(name: &str) -> Result<CredentialName, ApiError> {
    CredentialName::parse(name)
        .map_err(|e| ApiError::bad_request("invalid_credential_name", e.to_string()))
}

/// Stores (or replaces) a credential's value (admin).
#[utoipa::path(put, path = "/credentials/{name}", tag = "credentials",
    security(("bearer" = [])), request_body = PutCredential,
    params(("name" = CredentialName, Path, description = "Credential name")), responses(
    (status = 200, description = "Stored", body = CredentialView),
    (status = 400, description = "Invalid name or empty value"),
    AdminOnly,
))]
async fn store(
    Admin { state, principal }: Admin,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<PutCredential>,
) -> Result<Json<CredentialView>, ApiError> {
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
    let details = serde_json::json!({ "name": name });
    state
        .audit_server(&principal, "credential.put", details)
        .await;
    Ok(Json(info.into()))
}

/// Lists credential names and times, never values (admin).
#[utoipa::path(get, path = "/credentials", tag = "credentials", security(("bearer" = [])),
    responses(
    (status = 200, description = "The credentials", body = CredentialList),
    AdminOnly,
))]
async fn list(Admin { state, .. }: Admin) -> Result<Json<CredentialList>, ApiError> {
    let credentials: Vec<CredentialView> = state
        .stores
        .credentials
        .list()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(CredentialList { credentials }))
}

/// Deletes a credential (admin).
#[utoipa::path(delete, path = "/credentials/{name}", tag = "credentials",
    security(("bearer" = [])),
    params(("name" = CredentialName, Path, description = "Credential name")), responses(
    (status = 204, description = "Deleted"),
    (status = 400, description = "Invalid name"),
    AdminOnly,
    (status = 404, description = "No such credential"),
))]
async fn remove(
    Admin { state, principal }: Admin,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name)?;
    state.stores.credentials.delete(&name).await?;
    let details = serde_json::json!({ "name": name });
    state
        .audit_server(&principal, "credential.deleted", details)
        .await;
    Ok(StatusCode::NO_CONTENT)
}
