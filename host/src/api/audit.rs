//! `/audit`: the hash-chained trail of every command and administrative action (admins only).

use std::sync::Arc;

use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Admin;
use super::doc_parts::AdminOnly;
use super::error::{ApiError, ApiQuery};
use super::paging::{next_cursor, page_limit};
use super::state::AppState;
use crate::domain::{AuditCheckpoint, AuditEntry};

/// Query of `GET /audit`. Filters apply to the page read after `after`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries with a larger sequence number; page with the previous `next_after`.
    pub after: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    pub action: Option<String>,
    pub project_id: Option<String>,
    pub command_id: Option<String>,
    pub actor: Option<String>,
}

/// Answer of `GET /audit`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// The page's entries that match the filters.
    pub entries: Vec<AuditEntry>,
    /// `after` of the next page, when the page was full.
    pub next_after: Option<i64>,
}

/// Answer of `GET /audit/verify`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    /// True when every link of the chain holds.
    pub intact: bool,
    /// Entries checked.
    pub verified: u64,
    /// The first broken link, described.
    pub first_broken: Option<String>,
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(verify))
        .routes(routes!(checkpoint))
}

/// Reads the audit trail in sequence order (admin).
#[utoipa::path(get, path = "/audit", tag = "audit", security(("bearer" = [])),
    params(AuditQuery), responses(
    (status = 200, description = "A page of entries", body = AuditPage),
    (status = 400, description = "Invalid limit or query"),
    AdminOnly,
))]
async fn list(
    Admin { state, .. }: Admin,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = page_limit(query.limit, 100, 1000)?;
    let after = query.after.unwrap_or(0).max(0);
    let page = state.stores.audit.list(after, limit).await?;
    let next_after = next_cursor(&page, limit, |e| e.seq);
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
    Ok(Json(AuditPage {
        entries,
        next_after,
    }))
}

/// Walks the hash chain (admin).
#[utoipa::path(get, path = "/audit/verify", tag = "audit", security(("bearer" = [])),
    responses(
    (status = 200, description = "The chain's state", body = AuditVerification),
    AdminOnly,
))]
async fn verify(Admin { state, .. }: Admin) -> Result<Json<AuditVerification>, ApiError> {
    let result = state.stores.audit.verify().await?;
    Ok(Json(AuditVerification {
        intact: result.first_broken.is_none(),
        verified: result.verified,
        first_broken: result.first_broken.map(|b| b.to_string()),
    }))
}

/// Signs the chain's current head with the master key (admin). Keep the answer off the box:
/// `rdev audit verify --against` then detects newest entries deleted later.
#[utoipa::path(get, path = "/audit/checkpoint", tag = "audit", security(("bearer" = [])),
    responses(
    (status = 200, description = "The signed head", body = AuditCheckpoint),
    AdminOnly,
    (status = 404, description = "The trail is empty"),
))]
async fn checkpoint(Admin { state, .. }: Admin) -> Result<Json<AuditCheckpoint>, ApiError> {
    match state.stores.audit.checkpoint().await? {
        Some(checkpoint) => Ok(Json(checkpoint)),
        None => Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "audit_empty",
            "the audit trail is empty: there is no head to checkpoint",
        )),
    }
}
