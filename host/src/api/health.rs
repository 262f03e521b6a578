//! `/healthz` (the process answers), `/readyz` (database and registry ready) and `/metrics`.
//! Unauthenticated, as probes and scrapers expect.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::state::AppState;
use crate::ports::Confinement;
use crate::registry::ProviderState;

/// Content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Answer of `/healthz`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`: answering at all is the signal.
    pub status: String,
}

/// Answer of `/readyz`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// `ok`, or why the database did not answer.
    pub database: String,
    /// Providers with a serving version.
    pub providers_serving: usize,
    /// How commands are confined; `unconfined` only when the operator chose it.
    pub confinement: Confinement,
    /// `ok`, or why the master key cannot open the stored credentials (key fingerprints and
    /// names only, never a value).
    pub master_key: String,
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the database answers, at least one provider serves and the master key opens
/// the stored credentials (two small reads: fingerprints compared, one value decrypted).
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "Ready to take commands", body = Readiness),
    (status = 503, description = "Not ready; the body says why", body = Readiness),
))]
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let database = state.stores.tokens.find_active("readyz-probe").await;
    let serving = state
        .registry
        .statuses()
        .iter()
        .filter(|s| s.state != ProviderState::Failed)
        .count();
    let key = state.stores.credentials.check_key().await;
    let master_key = match &key {
        Ok(check) => check.problem(),
        Err(e) => Some(format!("not checked: {e}")),
    };
    let ready = database.is_ok() && serving > 0 && master_key.is_none();
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" }.to_owned(),
        database: match &database {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        },
        providers_serving: serving,
        confinement: state.confinement.clone(),
        master_key: master_key.unwrap_or_else(|| "ok".to_owned()),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "health", responses(
    (status = 200, description = "OpenMetrics text exposition", body = String, content_type = "application/openmetrics-text"),
    (status = 500, description = "The queue gauges could not be read"),
))]
async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let text = state.metrics.render(state.stores.queue.as_ref()).await?;
    Ok(([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response())
}
