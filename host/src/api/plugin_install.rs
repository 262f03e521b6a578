//! `POST /providers/install` (admin): a plugin from an OCI registry into the server's plugins
//! directory, as `rdev plugins install` does. Without `accept_grants` it only shows what the
//! plugin's manifest asks for; with it, it installs, audits `providers.installed` and reloads.
//! A registry that wants credentials gets those of a stored credential named in the body,
//! whose value is `username:password`: the secret never travels in the request itself.

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Admin;
use super::doc_parts::AdminOnly;
use super::error::{ApiError, ApiJson};
use super::providers::{ReloadSummary, reload_and_audit};
use super::state::AppState;
use crate::domain::{CredentialName, OciReference};
use crate::ports::{ArtifactError, RegistryCredentials};
use crate::services::plugins::{Fetched, PluginsError};

/// Body of `POST /providers/install`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallBody {
    /// `<registry>/<repository>[:<tag>][@sha256:<hex>]`; a digest pins the manifest.
    pub reference: String,
    /// Install; without it the answer only shows the grants the plugin asks for.
    #[serde(default)]
    pub accept_grants: bool,
    /// Name of a stored credential (`PUT /credentials/{name}`) whose value is
    /// `username:password`, sent to a registry that asks for credentials (HTTP Basic or its
    /// token service); anonymous without it.
    #[serde(default)]
    pub credential: Option<String>,
}

/// What the plugin is and asks for, and what installing it did.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstallAnswer {
    /// The provider name it registers as (its files are `<name>.wasm`/`<name>.toml`).
    pub name: String,
    /// From its manifest, as `GET /providers` will show it.
    pub version: String,
    /// The rdev ABI it was built against.
    pub abi: String,
    /// The reference it was pulled by; pin it with `@<digest>` to get exactly this again.
    pub reference: String,
    /// `sha256:…` of the OCI manifest.
    pub digest: String,
    /// Hex sha256 of the component, as commands record it in their provenance.
    pub component_sha256: String,
    /// What its manifest grants it, one line each.
    pub grants: Vec<String>,
    /// Whether the files were written (only with `accept_grants`).
    pub installed: bool,
    /// The reload that followed the install.
    pub reload: Option<ReloadSummary>,
}

/// The install route, merged into the API beside `/providers`.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(install))
}

/// Shows (200) or installs (201) a plugin from an OCI registry (admin).
#[utoipa::path(post, path = "/providers/install", tag = "providers", security(("bearer" = [])),
    request_body = InstallBody, responses(
    (status = 200, description = "Not installed: what the plugin asks for", body = InstallAnswer),
    (status = 201, description = "Installed and reloaded", body = InstallAnswer),
    AdminOnly,
    (status = 404, description = "No such artifact in the registry"),
    (status = 422, description = "Invalid reference, digest mismatch, not a plugin, or the registry refused the credentials"),
    (status = 502, description = "The registry failed"),
))]
async fn install(
    Admin { state, principal }: Admin,
    ApiJson(body): ApiJson<InstallBody>,
) -> Result<(StatusCode, Json<InstallAnswer>), ApiError> {
    let reference = OciReference::parse(&body.reference)
        .map_err(|e| ApiError::unprocessable("invalid_reference", e.to_string()))?;
    let credentials = match &body.credential {
        Some(name) => Some(registry_credentials(&state, name).await?),
        None => None,
    };
    let fetched = state
        .plugins
        .fetch(&reference, credentials.as_ref())
        .await
        .map_err(refusal)?;
    let mut answer = describe(&fetched);
    if !body.accept_grants {
        return Ok((StatusCode::OK, Json(answer)));
    }
    state.plugins.install(fetched).await.map_err(refusal)?;
    answer.installed = true;
    let details = serde_json::json!({
        "credential": body.credential,
        "name": answer.name,
        "reference": answer.reference,
        "digest": answer.digest,
        "component_sha256": answer.component_sha256,
    });
    state
        .audit_server(&principal, "providers.installed", details)
        .await;
    let reload = reload_and_audit(&state, principal.actor())
        .await
        .map_err(|e| ApiError::internal("reloading plugins", e))?;
    answer.reload = Some(reload);
    Ok((StatusCode::CREATED, Json(answer)))
}

/// The `username:password` of the stored credential `name`; its value never reaches an
/// answer or the log.
async fn registry_credentials(
    state: &AppState,
    name: &str,
) -> Result<RegistryCredentials, ApiError> {
    let name = CredentialName::parse(name)
        .map_err(|e| ApiError::unprocessable("invalid_credential", e.to_string()))?;
    let value = state
        .stores
        .credentials
        .resolve(name.as_str())
        .await
        .map_err(|e| ApiError::internal("reading the registry credential", e))?
        .ok_or_else(|| {
            ApiError::unprocessable(
                "unknown_credential",
                format!("no credential named {name:?}: store it with PUT /credentials/{{name}}"),
            )
        })?;
    RegistryCredentials::from_pair(value.expose()).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_credential",
            format!("credential {name:?} is not of the form username:password"),
        )
    })
}

fn describe(fetched: &Fetched) -> InstallAnswer {
    InstallAnswer {
        name: fetched.manifest.name.to_string(),
        version: fetched.manifest.version.clone(),
        abi: fetched.manifest.abi.to_string(),
        reference: fetched.reference.to_string(),
        digest: fetched.pulled.digest.to_string(),
        component_sha256: fetched.component_sha256(),
        grants: fetched.grants(),
        installed: false,
        reload: None,
    }
}

/// The API's answer to a failed fetch or install; server paths stay in the log.
fn refusal(error: PluginsError) -> ApiError {
    let unprocessable = |code, e: &PluginsError| ApiError::unprocessable(code, e.to_string());
    match &error {
        PluginsError::Registry(ArtifactError::NotFound(reference)) => {
            ApiError::not_found("artifact", reference)
        }
        PluginsError::Registry(ArtifactError::DigestMismatch { .. }) => {
            unprocessable("digest_mismatch", &error)
        }
        PluginsError::Registry(ArtifactError::Layout { .. })
        | PluginsError::NotWasm(_)
        | PluginsError::Manifest(_) => unprocessable("invalid_plugin", &error),
        PluginsError::Registry(ArtifactError::Unauthorized { .. }) => {
            unprocessable("registry_unauthorized", &error)
        }
        PluginsError::Registry(ArtifactError::Registry { .. }) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "registry_unavailable",
            error.to_string(),
        ),
        _ => ApiError::internal("installing a plugin", error),
    }
}
