//! Woodpecker CI over its REST API (`/api/...`), authenticated with a personal access token
//! that is read from the credential store on every call, so a rotated token takes effect
//! without a restart and the token never sits in configuration or logs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::domain::CredentialName;
use crate::ports::{
    Ci, CiError, CiRepo, CiSecret, LogLine, Pipeline, PipelineStep, SecretResolver, SecretValue,
};

/// Longest body excerpt an error carries.
pub const BODY_EXCERPT: usize = 512;

/// Per-request timeout: Woodpecker answers these calls without waiting on pipelines.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where Woodpecker is and which credential holds the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WoodpeckerConfig {
    /// Base URL, e.g. `https://ci.example.com` (no `/api`).
    pub url: String,
    /// Credential store entry holding the personal access token.
    pub token_credential: CredentialName,
}

/// Environment variable with Woodpecker's base URL; unset means CI is not configured.
pub const URL_ENV: &str = "RDEV_WOODPECKER_URL";
/// Environment variable naming the credential that holds the token.
pub const TOKEN_CREDENTIAL_ENV: &str = "RDEV_WOODPECKER_TOKEN_CREDENTIAL";
/// The credential name used when [`TOKEN_CREDENTIAL_ENV`] is unset.
pub const DEFAULT_TOKEN_CREDENTIAL: &str = "WOODPECKER_TOKEN";

impl WoodpeckerConfig {
    /// Reads [`URL_ENV`] and [`TOKEN_CREDENTIAL_ENV`]; `Ok(None)` when no URL is set.
    pub fn from_env() -> Result<Option<Self>, CiError> {
        let Some(url) = std::env::var(URL_ENV).ok().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(CiError::Credential(format!(
                "{URL_ENV} must be an http(s) URL"
            )));
        }
        let name = std::env::var(TOKEN_CREDENTIAL_ENV)
            .unwrap_or_else(|_| DEFAULT_TOKEN_CREDENTIAL.to_owned());
        let token_credential = CredentialName::parse(name)
            .map_err(|e| CiError::Credential(format!("{TOKEN_CREDENTIAL_ENV}: {e}")))?;
        Ok(Some(Self {
            url,
            token_credential,
        }))
    }
}

/// Woodpecker REST client implementing the [`Ci`] port.
#[derive(Clone)]
pub struct WoodpeckerClient {
    http: reqwest::Client,
    base: String,
    secrets: Arc<dyn SecretResolver>,
    token: CredentialName,
}

impl std::fmt::Debug for WoodpeckerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WoodpeckerClient")
            .field("base", &self.base)
            .field("token_credential", &self.token)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct WpRepo {
    #[serde(default)]
    id: i64,
    #[serde(default, deserialize_with = "string_or_number")]
    forge_remote_id: String,
    #[serde(default)]
    full_name: String,
    #[serde(default)]
    active: bool,
}

#[derive(Debug, Deserialize)]
struct WpPipeline {
    number: i64,
    #[serde(default)]
    status: String,
    #[serde(default)]
    branch: String,
    #[serde(default)]
    event: String,
    #[serde(default)]
    created: i64,
    #[serde(default)]
    started: i64,
    #[serde(default)]
    finished: i64,
    #[serde(default)]
    workflows: Option<Vec<WpWorkflow>>,
}

#[derive(Debug, Deserialize)]
struct WpWorkflow {
    #[serde(default)]
    children: Option<Vec<WpStep>>,
}

#[derive(Debug, Deserialize)]
struct WpStep {
    id: i64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    exit_code: i64,
}

#[derive(Debug, Deserialize)]
struct WpLog {
    #[serde(default)]
    line: i64,
    /// Go `[]byte`, so base64 in JSON.
    #[serde(default)]
    data: String,
}

/// Woodpecker's `forge_remote_id` is a string; older forges' payloads carry a number.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(match value {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

impl From<WpPipeline> for Pipeline {
    fn from(p: WpPipeline) -> Self {
        let steps = p
            .workflows
            .unwrap_or_default()
            .into_iter()
            .flat_map(|w| w.children.unwrap_or_default())
            .map(|s| PipelineStep {
                id: s.id,
                name: s.name,
                state: s.state,
                exit_code: s.exit_code,
            })
            .collect();
        Self {
            number: p.number,
            status: p.status,
            branch: p.branch,
            event: p.event,
            created: p.created,
            started: p.started,
            finished: p.finished,
            steps,
        }
    }
}

/// The first [`BODY_EXCERPT`] characters of `body` with every secret replaced.
fn excerpt(body: &str, secrets: &[&str]) -> String {
    let mut text: String = body.chars().take(BODY_EXCERPT).collect();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "[redacted]");
    }
    text
}

impl WoodpeckerClient {
    /// Builds the client; installs rustls' ring provider as the process default if none is
    /// installed yet (reqwest is built without one).
    pub fn new(
        config: WoodpeckerConfig,
        secrets: Arc<dyn SecretResolver>,
    ) -> Result<Self, CiError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("rdev/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CiError::Transport {
                method: "-".to_owned(),
                path: "-".to_owned(),
                reason: format!("building the HTTP client: {e}"),
            })?;
        Ok(Self {
            http,
            base: config.url.trim_end_matches('/').to_owned(),
            secrets,
            token: config.token_credential,
        })
    }

    async fn token(&self) -> Result<SecretValue, CiError> {
        self.secrets
            .resolve(self.token.as_str())
            .await
            .map_err(|e| CiError::Credential(e.to_string()))?
            .ok_or_else(|| {
                CiError::Credential(format!(
                    "credential {} (the Woodpecker token) does not exist",
                    self.token
                ))
            })
    }

    /// Sends one request and returns the status and body text; non-2xx statuses become
    /// [`CiError::Status`]. `redact` lists values that must not appear in an error.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        redact: &[&str],
    ) -> Result<String, CiError> {
        let token = self.token().await?;
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(token.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let mut hidden: Vec<&str> = redact.to_vec();
        hidden.push(token.expose());
        let transport = |e: reqwest::Error| CiError::Transport {
            method: method.to_string(),
            path: path.to_owned(),
            // Without the URL: it is ours already, and reqwest's text may repeat it.
            reason: excerpt(&e.without_url().to_string(), &hidden),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let text = response.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(CiError::Status {
                method: method.to_string(),
                path: path.to_owned(),
                status: status.as_u16(),
                body: excerpt(&text, &hidden),
            });
        }
        Ok(text)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, CiError> {
        let text = self.send(method.clone(), path, body, &[]).await?;
        serde_json::from_str(&text).map_err(|e| CiError::Decode {
            method: method.to_string(),
            path: path.to_owned(),
            reason: format!("{e}; body: {}", excerpt(&text, &[])),
        })
    }
}

/// Percent-encodes a query value (forge ids are usually digits, but need not be).
fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[async_trait]
impl Ci for WoodpeckerClient {
    async fn activate(&self, full_name: &str) -> Result<CiRepo, CiError> {
        let repos: Vec<WpRepo> = self
            .call(Method::GET, "/api/user/repos?all=true", None)
            .await?;
        let repo = repos
            .into_iter()
            .find(|r| r.full_name.eq_ignore_ascii_case(full_name))
            .ok_or_else(|| CiError::RepoNotFound(full_name.to_owned()))?;
        if repo.active && repo.id != 0 {
            return Ok(CiRepo {
                id: repo.id,
                full_name: repo.full_name,
                forge_remote_id: repo.forge_remote_id,
            });
        }
        let path = format!(
            "/api/repos?forge_remote_id={}",
            encode_query(&repo.forge_remote_id)
        );
        let activated: WpRepo = self.call(Method::POST, &path, None).await?;
        Ok(CiRepo {
            id: activated.id,
            full_name: activated.full_name,
            forge_remote_id: activated.forge_remote_id,
        })
    }

    async fn set_secret(&self, repo: i64, secret: &CiSecret) -> Result<(), CiError> {
        let body = serde_json::json!({
            "name": secret.name,
            "value": secret.value.expose(),
            "events": secret.events,
            "images": [],
        });
        let value = secret.value.expose();
        let path = format!("/api/repos/{repo}/secrets");
        match self.send(Method::POST, &path, Some(&body), &[value]).await {
            Err(CiError::Status { status: 409, .. }) => {
                let path = format!("/api/repos/{repo}/secrets/{}", encode_query(&secret.name));
                self.send(Method::PATCH, &path, Some(&body), &[value])
                    .await
                    .map(drop)
            }
            other => other.map(drop),
        }
    }

    async fn trigger(
        &self,
        repo: i64,
        branch: &str,
        variables: &BTreeMap<String, String>,
    ) -> Result<Pipeline, CiError> {
        let body = serde_json::json!({ "branch": branch, "variables": variables });
        let pipeline: WpPipeline = self
            .call(
                Method::POST,
                &format!("/api/repos/{repo}/pipelines"),
                Some(&body),
            )
            .await?;
        Ok(pipeline.into())
    }

    async fn pipeline(&self, repo: i64, number: i64) -> Result<Pipeline, CiError> {
        let pipeline: WpPipeline = self
            .call(
                Method::GET,
                &format!("/api/repos/{repo}/pipelines/{number}"),
                None,
            )
            .await?;
        Ok(pipeline.into())
    }

    async fn logs(&self, repo: i64, number: i64) -> Result<Vec<LogLine>, CiError> {
        let pipeline = self.pipeline(repo, number).await?;
        let mut lines = Vec::new();
        for step in &pipeline.steps {
            let path = format!("/api/repos/{repo}/logs/{number}/{}", step.id);
            let entries: Vec<WpLog> = self.call(Method::GET, &path, None).await?;
            for entry in entries {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(entry.data.as_bytes())
                    .map_err(|e| CiError::Decode {
                        method: "GET".to_owned(),
                        path: path.clone(),
                        reason: format!("log data is not base64: {e}"),
                    })?;
                lines.push(LogLine {
                    step: step.name.clone(),
                    line: entry.line,
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                });
            }
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_redacted() {
        let body = format!("token tok-123 leaked {}", "x".repeat(2000));
        let text = excerpt(&body, &["tok-123"]);
        assert!(!text.contains("tok-123"));
        assert!(text.len() <= BODY_EXCERPT + "[redacted]".len());
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query("12a-_.~"), "12a-_.~");
        assert_eq!(encode_query("a b&c"), "a%20b%26c");
    }
}
