//! `/healthz` (the process answers), `/readyz` (database and registry ready) and `/metrics`.
//! Unauthenticated, as probes and scrapers expect.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::error::ApiError;
use super::state::AppState;
use crate::registry::ProviderState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let database = state.stores.tokens.find_active("readyz-probe").await;
    let serving = state
        .registry
        .statuses()
        .iter()
        .filter(|s| s.state != ProviderState::Failed)
        .count();
    let ready = database.is_ok() && serving > 0;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "database": match &database { Ok(_) => "ok".to_owned(), Err(e) => e.to_string() },
        "providers_serving": serving,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let text = state.metrics.render(state.stores.queue.as_ref()).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
