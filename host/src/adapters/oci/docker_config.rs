//! Registry logins that `docker login` (and podman, oras, wkg) already wrote in
//! `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, so an operator who is logged
//! in needs no flags. As docker does: the registry's `credHelpers` entry, else `credsStore`,
//! names a credential helper that is asked ([`super::credential_helper`]); without either,
//! the `auths` entry's inline `auth` (base64 `user:password`) or `username`/`password`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::credential_helper::{self, HelperError};
use crate::ports::{RegistryCredentials, SecretValue};

/// Why the docker config could not be used. Never carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a docker config.json: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("{}: the login for {registry} is not base64 of user:password", path.display())]
    BadAuth { path: PathBuf, registry: String },
    #[error(transparent)]
    Helper(#[from] HelperError),
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    /// The helper that keeps every login.
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    /// Helpers by registry, ahead of `credsStore`.
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Where docker keeps its config: `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// The login for `registry` (`host[:port]`) in the config at `path`; `None` when there is no
/// file or no entry for it.
pub fn credentials_for(
    path: &Path,
    registry: &str,
) -> Result<Option<RegistryCredentials>, DockerConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DockerConfigError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let config: ConfigFile = serde_json::from_str(&text).map_err(|e| DockerConfigError::Parse {
        path: path.to_owned(),
        // The line and column only: serde's message may quote part of a value.
        reason: format!("invalid JSON at line {} column {}", e.line(), e.column()),
    })?;
    let helper = config
        .cred_helpers
        .iter()
        .find(|(key, _)| host_of(key) == registry)
        .map(|(_, name)| name)
        .or(config.creds_store.as_ref())
        .filter(|name| !name.is_empty());
    if let Some(name) = helper {
        return Ok(credential_helper::get(name, registry)?);
    }
    match config
        .auths
        .iter()
        .find(|(key, _)| host_of(key) == registry)
    {
        Some((_, entry)) => inline_login(path, registry, entry),
        None => Ok(None),
    }
}

/// The login an `auths` entry holds itself.
fn inline_login(
    path: &Path,
    registry: &str,
    entry: &AuthEntry,
) -> Result<Option<RegistryCredentials>, DockerConfigError> {
    let bad = || DockerConfigError::BadAuth {
        path: path.to_owned(),
        registry: registry.to_owned(),
    };
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad())?;
        let pair = String::from_utf8(decoded).map_err(|_| bad())?;
        return RegistryCredentials::from_pair(&pair)
            .map(Some)
            .ok_or_else(bad);
    }
    match (&entry.username, &entry.password) {
        (Some(username), Some(password)) if !username.is_empty() => Ok(Some(RegistryCredentials {
            username: username.clone(),
            password: SecretValue::new(password.clone()),
        })),
        _ => Ok(None),
    }
}

/// The registry host of an `auths` key: `https://ghcr.io/v2/` and `ghcr.io` both name
/// `ghcr.io`.
fn host_of(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn logins_are_found_by_host_whatever_form_the_key_has() {
        let (_dir, path) = config(
            r#"{"auths": {"https://127.0.0.1:5000/v2/": {"auth": "YWxpY2U6cHc="},
                "ghcr.io": {"username": "bob", "password": "tok"}}}"#,
        );
        let local = credentials_for(&path, "127.0.0.1:5000")
            .expect("read")
            .expect("a login");
        assert_eq!(local.username, "alice");
        assert_eq!(local.password.expose(), "pw");
        let ghcr = credentials_for(&path, "ghcr.io")
            .expect("read")
            .expect("login");
        assert_eq!(ghcr.username, "bob");
        assert!(credentials_for(&path, "quay.io").expect("read").is_none());
        let missing = path.with_file_name("absent.json");
        assert!(
            credentials_for(&missing, "ghcr.io")
                .expect("no file")
                .is_none()
        );
    }

    #[test]
    fn a_broken_login_is_an_error_that_shows_no_secret() {
        let (_dir, path) = config(r#"{"auths": {"ghcr.io": {"auth": "c2VjcmV0LW5vLWNvbG9u"}}}"#);
        let error = credentials_for(&path, "ghcr.io").expect_err("no colon");
        assert!(error.to_string().contains("ghcr.io"), "{error}");
        assert!(!error.to_string().contains("secret"), "{error}");
        let (_dir, path) = config(r#"{"auths": {"ghcr.io": {"auth": "hunter2-not-json"#);
        let error = credentials_for(&path, "ghcr.io").expect_err("bad JSON");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
