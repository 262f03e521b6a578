//! The HTTP API: one router module per resource, shared state behind an `Arc`, bearer-token
//! auth as an extractor ([`auth::Auth`]) and one error type ([`error::ApiError`]).

pub mod approvals;
pub mod audit;
pub mod auth;
pub mod changes;
pub mod commands;
pub mod credentials;
pub mod doc_parts;
pub mod error;
pub mod events;
pub mod health;
pub mod listener;
pub mod mcp;
pub mod metrics;
pub mod network;
pub mod openapi;
pub mod paging;
pub mod plugin_install;
pub mod policy;
pub mod projects;
pub mod providers;
pub mod session;
pub mod state;
pub mod templates;
pub mod tokens;
pub mod ui;
pub mod usage;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
pub use error::ApiError;
pub use state::{AppState, SseConfig};
use tower_http::trace::TraceLayer;

/// Request bodies above this are refused with 413 before they are read: the largest valid
/// body is a 1 MiB prompt plus 64 KiB of options.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Every route of the API over `state`: exactly the routes of the OpenAPI document
/// ([`openapi::api`]).
pub fn router(state: Arc<AppState>) -> Router {
    let (routes, _document) = openapi::api().split_for_parts();
    routes
        .merge(ui::routes())
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "route_not_found",
                "no such route",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the route does not take this method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                // Not the default span: it records the full URI, and with it the SSE
                // route's `?access_token=`.
                tracing::debug_span!(
                    "request",
                    method = %request.method(),
                    uri = %auth::redacted_uri(request.uri()),
                )
            }),
        )
        .with_state(state)
}
