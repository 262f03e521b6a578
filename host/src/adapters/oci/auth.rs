//! Registry authentication as the distribution spec and Docker do it: a request goes out
//! anonymously; a `401` names a scheme in `WWW-Authenticate`. `Basic` is answered with the
//! credentials themselves; `Bearer realm=…,service=…,scope=…` (the OCI token flow) by asking
//! the realm for a token (with the credentials as Basic when there are any, anonymously
//! otherwise) and sending it as `Authorization: Bearer`. Credentials and tokens only ever
//! travel in headers marked sensitive, and no error carries them.

use std::sync::Mutex;

use base64::Engine as _;
use reqwest::header::{self, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::domain::OciReference;
use crate::ports::{ArtifactError, RegistryCredentials};

/// What a `401`'s `WWW-Authenticate` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses `Basic realm="…"` or `Bearer realm="…",service="…",scope="…"`; `None` for
    /// another scheme or a Bearer challenge without a realm.
    pub fn parse(value: &str) -> Option<Self> {
        let (scheme, params) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Self::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(params);
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        };
        Some(Self::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    }
}

/// `key="value", key=value` pairs; commas inside quotes (scopes list actions) are kept.
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        let after = after.trim_start();
        let (value, remainder) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            },
            None => after.split_once(',').unwrap_or((after, "")),
        };
        pairs.push((key, value.to_owned()));
        rest = remainder.trim_start().trim_start_matches(',');
    }
    pairs
}

/// The token service's answer; registries use either field.
#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// The requests of one pull or push: the reference, who to authenticate as, and the
/// `Authorization` header earned so far (reused until the registry asks again, e.g. for a
/// push scope after a pull-scoped token).
pub struct Session<'a> {
    pub http: &'a reqwest::Client,
    pub reference: &'a OciReference,
    credentials: Option<&'a RegistryCredentials>,
    /// Plain HTTP allowed to non-loopback hosts (`--insecure`), token realms included.
    insecure: bool,
    authorization: Mutex<Option<HeaderValue>>,
}

impl<'a> Session<'a> {
    pub fn new(
        http: &'a reqwest::Client,
        reference: &'a OciReference,
        credentials: Option<&'a RegistryCredentials>,
        insecure: bool,
    ) -> Self {
        Self {
            http,
            reference,
            credentials,
            insecure,
            authorization: Mutex::new(None),
        }
    }

    /// Sends the request `build` makes; on a `401`, answers the challenge and sends it once
    /// more. A second `401` is [`ArtifactError::Unauthorized`].
    pub async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        doing: &str,
    ) -> Result<reqwest::Response, ArtifactError> {
        let response = self.attempt(&build, doing).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse)
            .ok_or_else(|| {
                self.unauthorized(format!(
                    "{doing}: 401 without a Basic or Bearer challenge this client can answer"
                ))
            })?;
        let authorization = self.answer(&challenge, doing).await?;
        *self.lock() = Some(authorization);
        let retried = self.attempt(&build, doing).await?;
        if retried.status() == StatusCode::UNAUTHORIZED {
            return Err(self.refused(doing));
        }
        Ok(retried)
    }

    async fn attempt(
        &self,
        build: &impl Fn() -> reqwest::RequestBuilder,
        doing: &str,
    ) -> Result<reqwest::Response, ArtifactError> {
        let mut request = build();
        if let Some(authorization) = self.lock().clone() {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        request
            .send()
            .await
            .map_err(|e| self.error(format!("{doing}: {}", without_url(&e))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<HeaderValue>> {
        self.authorization
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The `Authorization` value answering `challenge`.
    async fn answer(
        &self,
        challenge: &Challenge,
        doing: &str,
    ) -> Result<HeaderValue, ArtifactError> {
        match challenge {
            Challenge::Basic => {
                let credentials = self.credentials.ok_or_else(|| self.no_credentials(doing))?;
                sensitive(&format!("Basic {}", basic(credentials)))
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let token = self
                    .token(realm, service.as_deref(), scope.as_deref(), doing)
                    .await?;
                sensitive(&format!("Bearer {token}"))
            }
        }
    }

    /// A token from the realm for `scope`, asked with the credentials when there are any.
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        doing: &str,
    ) -> Result<String, ArtifactError> {
        let mut url = Url::parse(realm)
            .map_err(|e| self.error(format!("{doing}: token realm {realm:?}: {e}")))?;
        let loopback = matches!(
            url.host_str(),
            Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
        );
        if url.scheme() != "https" && !(loopback || self.insecure) {
            return Err(self.error(format!(
                "{doing}: the token realm {realm} is not HTTPS; refusing to send credentials there (--insecure allows it)"
            )));
        }
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            if let Some(scope) = scope {
                query.append_pair("scope", scope);
            }
        }
        let mut request = self.http.get(url);
        if let Some(credentials) = self.credentials {
            request = request.header(
                header::AUTHORIZATION,
                sensitive(&format!("Basic {}", basic(credentials)))?,
            );
        }
        let answer = request.send().await.map_err(|e| {
            self.error(format!(
                "{doing}: asking {realm} for a token: {}",
                without_url(&e)
            ))
        })?;
        match answer.status() {
            status if status.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(match self.credentials {
                    Some(_) => self.refused(doing),
                    None => self.no_credentials(doing),
                });
            }
            status => {
                return Err(self.error(format!(
                    "{doing}: the token service {realm} answered {status}"
                )));
            }
        }
        let parsed: TokenAnswer = answer.json().await.map_err(|_| {
            self.error(format!(
                "{doing}: the token service {realm} answered no token JSON"
            ))
        })?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.error(format!("{doing}: the token service {realm} gave no token")))
    }

    pub fn error(&self, message: String) -> ArtifactError {
        ArtifactError::Registry {
            registry: self.reference.registry.clone(),
            message,
        }
    }

    fn unauthorized(&self, message: String) -> ArtifactError {
        ArtifactError::Unauthorized {
            registry: self.reference.registry.clone(),
            message,
        }
    }

    fn no_credentials(&self, doing: &str) -> ArtifactError {
        self.unauthorized(format!(
            "{doing}: the registry asks for credentials and none were given (rdev plugins: --username with --password-stdin or RDEV_REGISTRY_PASSWORD, or a login in docker's config.json; POST /providers/install: \"credential\")"
        ))
    }

    fn refused(&self, doing: &str) -> ArtifactError {
        let Some(RegistryCredentials { username: user, .. }) = self.credentials else {
            return self.no_credentials(doing);
        };
        self.unauthorized(format!(
            "{doing}: the registry refused the credentials of user {user:?} (401): check the username and password"
        ))
    }
}

/// `base64(user:password)`.
fn basic(credentials: &RegistryCredentials) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        credentials.username,
        credentials.password.expose()
    ))
}

/// A header value reqwest and hyper treat as sensitive (never shown by their `Debug`).
fn sensitive(value: &str) -> Result<HeaderValue, ArtifactError> {
    let mut header = HeaderValue::from_str(value).map_err(|_| ArtifactError::Unauthorized {
        registry: String::new(),
        message: "the credentials contain characters an HTTP header cannot carry".into(),
    })?;
    header.set_sensitive(true);
    Ok(header)
}

/// A reqwest error's text without its URL (a token realm's query names the scope only, but
/// a URL may carry anything a registry put in a `Location`).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "the registry");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_challenges_are_parsed() {
        let value = r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:acme/echo:pull,push""#;
        assert_eq!(
            Challenge::parse(value),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:acme/echo:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Bearer service=x"), None);
        assert_eq!(Challenge::parse("Negotiate abc"), None);
    }

    #[test]
    fn basic_is_base64_of_the_pair_and_marked_sensitive() {
        let credentials = RegistryCredentials::from_pair("alice:pw").expect("pair");
        assert_eq!(basic(&credentials), "YWxpY2U6cHc=");
        let header = sensitive(&format!("Basic {}", basic(&credentials))).expect("header");
        assert!(header.is_sensitive());
    }
}
