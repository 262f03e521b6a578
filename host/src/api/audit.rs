//! `/audit`: the hash-chained trail of every command and administrative action (admins only).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::auth::Auth;
use super::error::{ApiError, ApiQuery};
use super::state::AppState;

/// Query of `GET /audit`. Filters apply to the page read after `after`.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    /// Entries with a larger sequence number; page with the previous `next_after`.
    pub after: Option<i64>,
    pub limit: Option<u32>,
    pub action: Option<String>,
    pub project_id: Option<String>,
    pub command_id: Option<String>,
    pub actor: Option<String>,
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/audit", get(list))
        .route("/audit/verify", get(verify))
}

async fn list(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_admin()?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be between 1 and 1000",
        ));
    }
    let after = query.after.unwrap_or(0).max(0);
    let page = state.stores.audit.list(after, limit).await?;
    let next_after = (page.len() == limit as usize)
        .then(|| page.last().map(|e| e.seq))
        .flatten();
    let matches =
        |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| have == Some(w));
    let entries: Vec<_> = page
        .into_iter()
        .filter(|e| {
            matches(&query.action, Some(&e.action))
                && matches(&query.project_id, e.project_id.as_deref())
                && matches(&query.command_id, e.command_id.as_deref())
                && matches(&query.actor, Some(&e.actor))
        })
        .collect();
    Ok(Json(serde_json::json!({
        "entries": entries,
        "next_after": next_after,
    })))
}

async fn verify(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_admin()?;
    let result = state.stores.audit.verify().await?;
    Ok(Json(serde_json::json!({
        "intact": result.first_broken.is_none(),
        "verified": result.verified,
        "first_broken": result.first_broken.map(|b| b.to_string()),
    })))
}
