//! Dashboard sessions over HTTP: the cookie a browser signs in with (see
//! [`crate::domain::session`]), turned into the same [`Principal`] a bearer token gives, and
//! the CSRF check every state-changing request made with the cookie must pass. The JSON API
//! accepts the cookie too (the dashboard's script calls it), so this one check guards every
//! route: a request with the cookie and an unsafe method needs the session's
//! `X-CSRF-Token` (or, for the dashboard's own forms, the `_csrf` field) and, when the
//! browser sends one, an `Origin` equal to the server's own.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use base64::Engine;

use super::error::ApiError;
use super::state::AppState;
use crate::domain::session::{csrf_matches, session_digest};
use crate::domain::{NewUiSession, Principal};

/// The cookie's name.
pub const SESSION_COOKIE: &str = "rdev_session";

/// The header the dashboard's script sends the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How dashboard sessions behave (`RDEV_UI_SECURE_COOKIE`, `RDEV_UI_SESSION_HOURS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UiConfig {
    /// Always mark the cookie `Secure` (behind a TLS-terminating proxy that does not send
    /// `X-Forwarded-Proto`); it is also marked so when that header says `https`.
    pub secure_cookie: bool,
    /// How long a session lasts after sign-in.
    pub session_ttl: Duration,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            secure_cookie: false,
            session_ttl: Duration::from_secs(12 * 3600),
        }
    }
}

impl UiConfig {
    /// The defaults with `RDEV_UI_SECURE_COOKIE` (`1`/`true`) and `RDEV_UI_SESSION_HOURS`
    /// (1 to 720) applied; an unreadable value is an error naming the variable.
    pub fn with_env(mut self) -> anyhow::Result<Self> {
        if let Ok(value) = std::env::var("RDEV_UI_SECURE_COOKIE") {
            self.secure_cookie = match value.trim() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" | "" => false,
                _ => anyhow::bail!("RDEV_UI_SECURE_COOKIE must be true or false"),
            };
        }
        if let Ok(value) = std::env::var("RDEV_UI_SESSION_HOURS") {
            let hours: u64 = value
                .trim()
                .parse()
                .ok()
                .filter(|h| (1..=720).contains(h))
                .ok_or_else(|| anyhow::anyhow!("RDEV_UI_SESSION_HOURS must be 1 to 720"))?;
            self.session_ttl = Duration::from_secs(hours * 3600);
        }
        Ok(self)
    }
}

/// The session secret of the request's cookie, if it has one.
pub fn cookie_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// The principal of an unexpired session whose token is still active.
pub async fn session_principal(state: &AppState, secret: &str) -> Result<Principal, ApiError> {
    let expired = || ApiError::unauthorized("the dashboard session is unknown or expired");
    let session = state
        .stores
        .sessions
        .find_session(&session_digest(secret))
        .await?
        .ok_or_else(expired)?;
    let token = state
        .stores
        .tokens
        .find_active(&session.token_digest)
        .await?
        .ok_or_else(expired)?;
    Ok(Principal::from_token(&token))
}

/// Refuses (403 `csrf_rejected`) a request from another origin, or one without the
/// session's CSRF token in `presented` (the header or a form field).
pub fn check_csrf(
    headers: &HeaderMap,
    secret: &str,
    presented: Option<&str>,
) -> Result<(), ApiError> {
    check_origin(headers)?;
    let presented = presented.or_else(|| {
        headers
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
    });
    match presented {
        Some(token) if csrf_matches(secret, token.trim()) => Ok(()),
        _ => Err(csrf_rejected(
            "a request made with the dashboard's session needs its X-CSRF-Token",
        )),
    }
}

/// Refuses a request whose `Origin` (when the browser sent one) is not this server.
pub fn check_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.to_str().ok().and_then(|o| {
        o.strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
    });
    match (origin_host, host) {
        (Some(origin), Some(host)) if origin.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(csrf_rejected("the request came from another origin")),
    }
}

fn csrf_rejected(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "csrf_rejected", message)
}

/// A fresh session secret: 256 random bits, URL-safe.
fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Stores a new session for the token `token_digest` and returns its secret.
pub async fn start_session(state: &AppState, token_digest: String) -> Result<String, ApiError> {
    let secret = generate_secret();
    let ttl = chrono::Duration::from_std(state.ui.session_ttl)
        .map_err(|e| ApiError::internal("computing the session's expiry", e))?;
    state
        .stores
        .sessions
        .create_session(NewUiSession {
            digest: session_digest(&secret),
            token_digest,
            expires_at: chrono::Utc::now() + ttl,
        })
        .await?;
    Ok(secret)
}

/// Ends the session of `secret` in the store.
pub async fn end_session(state: &AppState, secret: &str) -> Result<(), ApiError> {
    state
        .stores
        .sessions
        .revoke_session(&session_digest(secret))
        .await?;
    Ok(())
}

/// The `Set-Cookie` value carrying `secret` (`None`: one that clears the cookie).
pub fn session_cookie(state: &AppState, headers: &HeaderMap, secret: Option<&str>) -> HeaderValue {
    let secure = state.ui.secure_cookie
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    let (value, max_age) = match secret {
        Some(secret) => (secret, state.ui.session_ttl.as_secs()),
        None => ("", 0),
    };
    let flags = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{flags}"
    );
    // The secret is URL-safe base64, so the value is always a valid header.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others_and_an_empty_one_is_none() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; rdev_session=xyz; b=2"),
        );
        assert_eq!(cookie_secret(&headers).as_deref(), Some("xyz"));
        let mut empty = HeaderMap::new();
        empty.append(header::COOKIE, HeaderValue::from_static("rdev_session="));
        assert_eq!(cookie_secret(&empty), None);
        assert_eq!(cookie_secret(&HeaderMap::new()), None);
    }

    #[test]
    fn another_origin_is_refused_and_the_same_one_passes() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(check_origin(&headers).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(check_origin(&headers).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert_eq!(
            check_origin(&headers).map_err(|e| e.status),
            Err(StatusCode::FORBIDDEN)
        );
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_origin(&headers).is_err());
    }
}
