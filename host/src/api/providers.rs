//! `/providers`: what is registered, and an explicit reload for operators.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::auth::Auth;
use super::error::ApiError;
use super::state::AppState;
use crate::registry::RegistryError;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/providers", get(list))
        .route("/providers/reload", post(reload))
}

async fn list(
    State(state): State<Arc<AppState>>,
    Auth(_principal): Auth,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "providers": state.registry.statuses() }))
}

async fn reload(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_admin()?;
    let summary = reload_and_audit(&state, principal.actor())
        .await
        .map_err(|e| ApiError::internal("reloading plugins", e))?;
    Ok(Json(summary))
}

/// Rescans the plugins directory and audits `providers.reloaded` as `actor` with what
/// changed: the one reload path for `POST /providers/reload` and SIGHUP.
pub async fn reload_and_audit(
    state: &AppState,
    actor: String,
) -> Result<serde_json::Value, RegistryError> {
    let report = state.registry.reload().await?;
    state.metrics.plugin_reloads.inc();
    let failed: Vec<serde_json::Value> = report
        .failed
        .iter()
        .map(|(name, reason)| serde_json::json!({"name": name, "reason": reason}))
        .collect();
    let summary = serde_json::json!({
        "loaded": report.loaded,
        "failed": failed,
        "removed": report.removed,
        "unchanged": report.unchanged,
    });
    state
        .audit_as(actor, "providers.reloaded", None, None, summary.clone())
        .await;
    Ok(summary)
}
