//! `/providers`: what is registered, and an explicit reload for operators.

use std::sync::Arc;

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Admin, Caller};
use super::doc_parts::AdminOnly;
use super::error::ApiError;
use super::state::AppState;
use crate::ports::Confinement;
use crate::registry::{ProviderStatus, RegistryError, ReloadReport};

/// Answer of `GET /providers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderList {
    pub providers: Vec<ProviderStatus>,
    /// How the commands these providers start are confined.
    pub confinement: Confinement,
}

/// A plugin whose files did not load.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FailedPlugin {
    pub name: String,
    pub reason: String,
}

/// Answer of `POST /providers/reload` (also the audit entry's details).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReloadSummary {
    pub loaded: Vec<String>,
    pub failed: Vec<FailedPlugin>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(reload))
}

/// Lists the registered providers and their load state. Load errors name the server's
/// plugin files by full path for admins, by file name for everyone else.
#[utoipa::path(get, path = "/providers", tag = "providers", security(("bearer" = [])),
    responses((status = 200, description = "The providers", body = ProviderList)))]
async fn list(Caller { state, principal }: Caller) -> Json<ProviderList> {
    let mut providers = state.registry.statuses();
    if !principal.is_admin() {
        providers = providers
            .into_iter()
            .map(ProviderStatus::without_paths)
            .collect();
    }
    Json(ProviderList {
        providers,
        confinement: state.confinement.clone(),
    })
}

/// Reloads the plugins directory now (admin); failed plugins keep their old version.
#[utoipa::path(post, path = "/providers/reload", tag = "providers", security(("bearer" = [])),
    responses(
    (status = 200, description = "What the reload did", body = ReloadSummary),
    AdminOnly,
))]
async fn reload(Admin { state, principal }: Admin) -> Result<Json<ReloadSummary>, ApiError> {
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
) -> Result<ReloadSummary, RegistryError> {
    let report = state.registry.reload().await?;
    Ok(audit_report(state, actor, report).await)
}

/// The actor hot reloads by the plugins directory's watcher are audited as.
pub const WATCHER_ACTOR: &str = "plugins directory watcher";

/// Audits every reload the directory watcher makes (a plugin file dropped in, replaced or
/// removed) as `providers.reloaded`, like explicit ones, until the server shuts down.
pub async fn audit_watched_reloads(state: Arc<AppState>) {
    let mut reports = state.registry.subscribe();
    loop {
        let report = tokio::select! {
            () = state.shutdown.cancelled() => return,
            report = reports.recv() => report,
        };
        match report {
            Ok(report) => {
                audit_report(&state, WATCHER_ACTOR.to_owned(), report).await;
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "watcher reloads were not audited: the audit task fell behind"
                );
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn audit_report(state: &AppState, actor: String, report: ReloadReport) -> ReloadSummary {
    state.metrics.plugin_reloads.inc();
    let summary = ReloadSummary {
        loaded: report.loaded,
        failed: report
            .failed
            .into_iter()
            .map(|(name, reason)| FailedPlugin { name, reason })
            .collect(),
        removed: report.removed,
        unchanged: report.unchanged,
    };
    state
        .audit_as(
            actor,
            "providers.reloaded",
            None,
            None,
            serde_json::to_value(&summary).unwrap_or_default(),
        )
        .await;
    summary
}
