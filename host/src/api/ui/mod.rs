//! The web dashboard at `/ui/`: server-rendered pages over the same stores and access rules
//! as the JSON API, plus one small script (`assets/app.js`) that sends the pages' forms to
//! the JSON API with the session's CSRF token and renders a command's live event stream.
//! Everything is embedded in the binary: no build step, no CDN.
//!
//! A browser signs in with an API token ([`login`]); the session cookie it gets is accepted
//! by the JSON API too (see [`super::session`]), so the pages' actions are the API's routes
//! and no rule is written twice.

mod admin;
mod changes;
mod html;
mod login;
mod pages;
mod providers;
mod usage;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use super::error::ApiError;
use super::session;
use super::state::AppState;
use crate::domain::Principal;
use crate::domain::session::csrf_token;

/// The dashboard's routes, merged into the API's router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/projects") }))
        .route("/ui/login", get(login::form).post(login::sign_in))
        .route("/ui/logout", post(login::sign_out))
        .route("/ui/projects", get(pages::projects))
        .route("/ui/projects/{id}", get(pages::project))
        .route("/ui/projects/{id}/usage", get(usage::usage_page))
        .route("/ui/commands/{id}", get(pages::command))
        .route("/ui/commands/{id}/changes", get(changes::page_of_changes))
        .route("/ui/providers", get(providers::page))
        .route("/ui/audit", get(admin::audit_page))
        .route("/ui/credentials", get(admin::credentials_page))
        .route("/ui/projects/{id}/webhooks", get(webhooks::webhooks_page))
        .route("/ui/assets/app.js", get(script))
        .route("/ui/assets/app.css", get(stylesheet))
}

const SCRIPT: &str = include_str!("assets/app.js");
const STYLESHEET: &str = include_str!("assets/app.css");

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The signed-in person looking at a page: their principal and their session's CSRF token,
/// which the page puts in its forms. Without a valid session the page redirects to the
/// sign-in form.
pub struct Viewer {
    pub principal: Principal,
    pub csrf: String,
}

impl FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let to_login = || Redirect::to("/ui/login").into_response();
        let secret = session::cookie_secret(&parts.headers).ok_or_else(to_login)?;
        match session::session_principal(state, &secret).await {
            Ok(principal) => Ok(Self {
                principal,
                csrf: csrf_token(&secret),
            }),
            Err(error) if error.status == StatusCode::UNAUTHORIZED => Err(to_login()),
            Err(error) => Err(PageError(error).into_response()),
        }
    }
}

/// A [`Viewer`] who is an admin, for the admin pages: a member token's session gets the 403
/// page, as [`super::auth::Admin`] answers the JSON routes.
pub struct AdminViewer(pub Viewer);

impl FromRequestParts<Arc<AppState>> for AdminViewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let viewer = Viewer::from_request_parts(parts, state).await?;
        viewer
            .principal
            .require_admin()
            .map_err(|e| PageError::from(e).into_response())?;
        Ok(Self(viewer))
    }
}

/// An [`ApiError`] shown as a page: the same status and words, as HTML.
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl From<crate::ports::StoreError> for PageError {
    fn from(error: crate::ports::StoreError) -> Self {
        Self(error.into())
    }
}

impl From<crate::domain::AccessError> for PageError {
    fn from(error: crate::domain::AccessError) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let error = self.0;
        let body = html::error_page(error.status, &error.message);
        (error.status, axum::response::Html(body)).into_response()
    }
}
