//! Who `rdev plugins publish/install` authenticate as with a registry: `--username` with the
//! password on stdin (`--password-stdin`) or in `RDEV_REGISTRY_PASSWORD`, else the login
//! `docker login` wrote for that registry, else nobody (anonymous).

use std::io::Read as _;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::adapters::oci::docker_config;
use crate::ports::{RegistryCredentials, SecretValue};

/// Registry credentials, as flags and environment.
#[derive(Debug, Clone, Args)]
pub struct RegistryLogin {
    /// User to authenticate as with the registry (Basic, or towards its token service); the
    /// password comes from --password-stdin or RDEV_REGISTRY_PASSWORD. Without it, the login
    /// of docker's config.json for the registry is used when there is one.
    #[arg(long, env = "RDEV_REGISTRY_USERNAME", value_name = "USER")]
    pub username: Option<String>,
    /// Read the password from stdin (everything up to the end, one trailing newline dropped).
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
}

/// The password from the environment; read here, not through clap, so `--help` never shows
/// its value.
const PASSWORD_ENV: &str = "RDEV_REGISTRY_PASSWORD";

impl RegistryLogin {
    /// Resolves the flags once: the explicit login (password read now), if any.
    pub fn explicit(&self) -> Result<Option<RegistryCredentials>> {
        let Some(username) = self.username.clone().filter(|u| !u.is_empty()) else {
            if self.password_stdin {
                bail!("--password-stdin needs --username");
            }
            return Ok(None);
        };
        let password = if self.password_stdin {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the registry password from stdin")?;
            let trimmed = text.strip_suffix('\n').unwrap_or(&text);
            trimmed.strip_suffix('\r').unwrap_or(trimmed).to_owned()
        } else {
            std::env::var(PASSWORD_ENV).unwrap_or_default()
        };
        if password.is_empty() {
            bail!(
                "--username {username} needs a password: pass --password-stdin or set {PASSWORD_ENV}"
            );
        }
        Ok(Some(RegistryCredentials {
            username,
            password: SecretValue::new(password),
        }))
    }
}

/// The credentials for `registry`: `explicit` when given, else docker's login for it.
pub fn credentials_for(
    explicit: Option<&RegistryCredentials>,
    registry: &str,
) -> Result<Option<RegistryCredentials>> {
    if let Some(credentials) = explicit {
        return Ok(Some(credentials.clone()));
    }
    match docker_config::default_path() {
        Some(path) => Ok(docker_config::credentials_for(&path, registry)?),
        None => Ok(None),
    }
}
