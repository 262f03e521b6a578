//! Bearer-token authentication as an extractor: a handler that takes [`Caller`] only runs
//! for a caller with a valid, unrevoked token, and gets the [`Principal`] to check access
//! with.
//! [`StreamAuth`] also takes the token from `?access_token=`, for the SSE route only.
//!
//! Without an `Authorization` header both also accept the dashboard's session cookie
//! ([`super::session`]): the session stands for the token that signed in, so the same
//! [`Principal`] and the same access rules apply, and a state-changing request made with
//! the cookie must pass the CSRF check.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;

use super::error::{ApiError, ApiPath};
use super::session;
use super::state::AppState;
use crate::domain::token::TOKEN_PREFIX;
use crate::domain::{Principal, Project, ProjectId, token_digest};

/// The principal of the `Authorization` header or, without one, of the dashboard session
/// cookie (for an unsafe method only after the CSRF check); `None` when the request carries
/// neither.
async fn header_or_cookie(parts: &Parts, state: &AppState) -> Result<Option<Principal>, ApiError> {
    if let Some(secret) = header_secret(parts)? {
        return authenticate(state, secret).await.map(Some);
    }
    let Some(secret) = session::cookie_secret(&parts.headers) else {
        return Ok(None);
    };
    if !parts.method.is_safe() {
        session::check_csrf(&parts.headers, &secret, None)?;
    }
    session::session_principal(state, &secret).await.map(Some)
}

/// The authenticated caller with the server's state: what nearly every handler needs, in
/// one extractor. A handler that takes it only runs for a valid, unrevoked token.
pub struct Caller {
    pub state: Arc<AppState>,
    pub principal: Principal,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let principal = header_or_cookie(parts, state)
            .await?
            .ok_or_else(|| ApiError::unauthorized("an Authorization: Bearer token is required"))?;
        Ok(Self {
            state: Arc::clone(state),
            principal,
        })
    }
}

/// An authenticated admin: what every admin-only route takes instead of [`Caller`], so such
/// a route cannot forget the check. Refused 401 as [`Caller`] is, then 403 `forbidden` for a
/// member token, before the route reads its path, query or body. Documented by
/// [`super::doc_parts::AdminOnly`].
pub struct Admin {
    pub state: Arc<AppState>,
    pub principal: Principal,
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Caller { state, principal } = Caller::from_request_parts(parts, state).await?;
        principal.require_admin()?;
        Ok(Self { state, principal })
    }
}

/// The caller and the `{id}` of a `/projects/{id}/…` path, in the order every project route
/// checks them: 401 before 400 (a malformed id).
async fn caller_on_project(
    parts: &mut Parts,
    state: &Arc<AppState>,
) -> Result<(Caller, ProjectId), ApiError> {
    let caller = Caller::from_request_parts(parts, state).await?;
    let ApiPath(id) = ApiPath::<ProjectId>::from_request_parts(parts, state).await?;
    Ok((caller, id))
}

/// A caller reading one project: allowed on the `{id}` of the path, which exists. Checked
/// in the order every project route answers: 401, 400 (a malformed id), 403, then 404, so a
/// caller without access cannot learn which projects exist. Documented by
/// [`super::doc_parts::ProjectAccess`].
pub struct ProjectReader {
    pub state: Arc<AppState>,
    pub project: Project,
}

impl FromRequestParts<Arc<AppState>> for ProjectReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let (Caller { state, principal }, id) = caller_on_project(parts, state).await?;
        principal.require_project(&id)?;
        let project = state.stores.projects.get(&id).await?;
        Ok(Self { state, project })
    }
}

/// An admin acting on the project `{id}` of the path: 401, 400 (a malformed id), then 403.
/// The route checks that the project exists where its answer needs it, in its own order.
/// Documented by [`super::doc_parts::AdminOnProject`].
pub struct ProjectAdmin {
    pub state: Arc<AppState>,
    pub principal: Principal,
    pub id: ProjectId,
}

impl FromRequestParts<Arc<AppState>> for ProjectAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let (Caller { state, principal }, id) = caller_on_project(parts, state).await?;
        principal.require_admin()?;
        Ok(Self {
            state,
            principal,
            id,
        })
    }
}

/// The project `id` of a path read as text, for a caller who must have access to it: 400
/// `invalid_id` when malformed, else 403 without access. For the routes and pages that
/// check the project's existence later, or leave it to the store or service they call.
pub fn accessible_project_id(principal: &Principal, id: String) -> Result<ProjectId, ApiError> {
    let project = ProjectId::parse(id)?;
    principal.require_project(&project)?;
    Ok(project)
}

/// Like [`Caller`]'s principal, but without an `Authorization` header or a session the
/// token may come as `?access_token=`: browsers' `EventSource` cannot set headers. Only the
/// SSE route takes it, since a token in a URL ends up in browser history and proxy logs.
#[derive(Debug, Clone)]
pub struct StreamAuth(pub Principal);

impl FromRequestParts<Arc<AppState>> for StreamAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(principal) = header_or_cookie(parts, state).await? {
            return Ok(Self(principal));
        }
        let secret = axum::extract::Query::<TokenQuery>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|query| query.0.access_token)
            .filter(|secret| !secret.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "an Authorization: Bearer token or ?access_token= is required",
                )
            })?;
        Ok(Self(authenticate(state, &secret).await?))
    }
}

/// The bearer secret of the `Authorization` header; `None` without the header.
fn header_secret(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Some)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be Bearer"))
}

/// `uri` as the request log shows it: path and query, with the value of every
/// `access_token` parameter replaced, so a token never reaches a log line. Names are
/// compared decoded, as [`StreamAuth`] reads them (`access%5Ftoken` is `access_token`).
pub fn redacted_uri(uri: &axum::http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            let decoded = url::form_urlencoded::parse(pair.as_bytes()).next();
            match decoded {
                Some((name, _)) if name == "access_token" => "access_token=[redacted]".to_owned(),
                _ => pair.to_owned(),
            }
        })
        .collect();
    format!("{}?{}", uri.path(), pairs.join("&"))
}

/// The one query parameter [`StreamAuth`] reads; others are the handler's.
#[derive(serde::Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

async fn authenticate(state: &AppState, secret: &str) -> Result<Principal, ApiError> {
    let token = state
        .stores
        .tokens
        .find_active(&token_digest(secret))
        .await?
        .ok_or_else(|| ApiError::unauthorized("the token is unknown or revoked"))?;
    Ok(Principal::from_token(&token))
}

/// A fresh token secret: the prefix and 256 random bits, URL-safe.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A fresh token id (`tok-` and a UUIDv7).
pub fn generate_id() -> String {
    format!("tok-{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_log_never_shows_an_access_token() {
        let uri: axum::http::Uri =
            "/projects/p/events/c?last_event_id=3&access_token=rdev_secret&x=1"
                .parse()
                .expect("valid URI");
        let shown = redacted_uri(&uri);
        assert_eq!(
            shown,
            "/projects/p/events/c?last_event_id=3&access_token=[redacted]&x=1"
        );
        let bare: axum::http::Uri = "/healthz".parse().expect("valid URI");
        assert_eq!(redacted_uri(&bare), "/healthz");
        let repeated: axum::http::Uri = "/e?access_token=a&access_token=b"
            .parse()
            .expect("valid URI");
        assert!(!redacted_uri(&repeated).contains("=a") && !redacted_uri(&repeated).contains("=b"));
        let encoded: axum::http::Uri = "/e?access%5Ftoken=rdev_secret&%61ccess_token=rdev_other"
            .parse()
            .expect("valid URI");
        let shown = redacted_uri(&encoded);
        assert!(!shown.contains("rdev_"), "{shown}");
    }
}
