//! Sign-in and sign-out. The token is posted once, in a form body (never a URL), checked
//! like a bearer token and exchanged for a session; the browser keeps only the session's
//! cookie, which script cannot read. Sign-out deletes the session on the server.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::PageError;
use super::html::{esc, page};
use crate::api::error::ApiError;
use crate::api::session;
use crate::api::state::AppState;
use crate::domain::{Principal, token_digest};

fn login_page(problem: Option<&str>) -> String {
    let problem = problem
        .map(|p| format!("<p class=\"problem\" id=\"login-error\">{}</p>", esc(p)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Sign in</h1>{problem}\
         <form method=\"post\" action=\"/ui/login\" class=\"card\">\
         <label>API token <input type=\"password\" name=\"token\" id=\"token\" \
         autocomplete=\"off\" required></label>\
         <button type=\"submit\" id=\"sign-in\">Sign in</button></form>\
         <p class=\"hint\">Use an admin token or a member token (<code>rdev tokens create</code>). \
         The browser keeps only a session cookie; sign out ends it.</p>"
    );
    page("Sign in", None, &body)
}

/// `GET /ui/login`: the sign-in form.
pub async fn form() -> Html<String> {
    Html(login_page(None))
}

/// `POST /ui/login` with `token=`: starts a session and sends the browser to its projects;
/// an unknown or revoked token gets the form again with 401.
pub async fn sign_in(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, PageError> {
    session::check_origin(&headers)?;
    let Form(fields) = form.map_err(|e| {
        ApiError::bad_request(
            "invalid_form",
            format!("the sign-in form was unreadable: {e}"),
        )
    })?;
    let secret = fields.get("token").map(|t| t.trim()).unwrap_or_default();
    let digest = token_digest(secret);
    let token = match state.stores.tokens.find_active(&digest).await? {
        Some(token) if !secret.is_empty() => token,
        _ => {
            let body = login_page(Some("The token is unknown or revoked."));
            return Ok((StatusCode::UNAUTHORIZED, Html(body)).into_response());
        }
    };
    let session = session::start_session(&state, digest).await?;
    let principal = Principal::from_token(&token);
    state
        .audit_server(&principal, "ui.signed_in", serde_json::json!({}))
        .await;
    Ok((
        [(
            header::SET_COOKIE,
            session::session_cookie(&state, &headers, Some(&session)),
        )],
        Redirect::to("/ui/projects"),
    )
        .into_response())
}

/// `POST /ui/logout` with the session's `_csrf`: deletes the session and clears the
/// cookie. Without the CSRF token (or from another origin) it is refused with 403.
pub async fn sign_out(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, PageError> {
    let Some(secret) = session::cookie_secret(&headers) else {
        return Ok(Redirect::to("/ui/login").into_response());
    };
    let fields = form.map(|Form(fields)| fields).unwrap_or_default();
    session::check_csrf(&headers, &secret, fields.get("_csrf").map(String::as_str))?;
    if let Ok(principal) = session::session_principal(&state, &secret).await {
        state
            .audit_server(&principal, "ui.signed_out", serde_json::json!({}))
            .await;
    }
    session::end_session(&state, &secret).await?;
    Ok((
        [(
            header::SET_COOKIE,
            session::session_cookie(&state, &headers, None),
        )],
        Redirect::to("/ui/login"),
    )
        .into_response())
}
