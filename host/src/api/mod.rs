//! The HTTP API: one router module per resource, shared state behind an `Arc`, bearer-token
//! auth as an extractor ([`auth::Auth`]) and one error type ([`error::ApiError`]).

pub mod audit;
pub mod auth;
pub mod commands;
pub mod credentials;
pub mod error;
pub mod events;
pub mod health;
pub mod metrics;
pub mod projects;
pub mod providers;
pub mod state;
pub mod templates;
pub mod tokens;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;

pub use error::ApiError;
pub use state::{AppState, SseConfig};

/// Request bodies above this are refused with 413 before they are read: the largest valid
/// body is a 1 MiB prompt plus 64 KiB of options.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Every route of the API over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(projects::routes())
        .merge(commands::routes())
        .merge(events::routes())
        .merge(providers::routes())
        .merge(credentials::routes())
        .merge(audit::routes())
        .merge(templates::routes())
        .merge(tokens::routes())
        .merge(webhooks::routes())
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "route_not_found",
                "no such route",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
