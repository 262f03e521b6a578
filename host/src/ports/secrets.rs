//! Looking up credential values at the moment they are used, so values live in host memory
//! only as long as a spawn or a request needs them.

use std::fmt;

use async_trait::async_trait;

use super::executor::{EnvValue, ExecError};

/// A credential value. Its `Debug` never prints the value, so it cannot leak through logs or
/// error messages by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself; call only where it is handed to its consumer.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue([redacted])")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("credential store unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait SecretResolver: Send + Sync {
    /// The current value of the named credential, `None` when it does not exist.
    async fn resolve(&self, name: &str) -> Result<Option<SecretValue>, SecretError>;
}

/// A spawn's environment with its secret references resolved by `secrets`, at spawn time, so
/// values never sit anywhere longer than the spawn needs them. Errors name the credential,
/// never its value. Every executor resolves through this one function.
pub async fn resolve_env(
    secrets: &dyn SecretResolver,
    env: Vec<(String, EnvValue)>,
) -> Result<Vec<(String, String)>, ExecError> {
    let mut resolved = Vec::with_capacity(env.len());
    for (key, value) in env {
        match value {
            EnvValue::Plain(value) => resolved.push((key, value)),
            EnvValue::Secret { name, required } => match secrets.resolve(&name).await {
                Ok(Some(secret)) => resolved.push((key, secret.expose().to_owned())),
                Ok(None) if required => return Err(ExecError::MissingSecret(name)),
                Ok(None) => {}
                Err(SecretError::Unavailable(reason)) => return Err(ExecError::Secrets(reason)),
            },
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = SecretValue::new("sk-live-123");
        assert!(!format!("{secret:?}").contains("sk-live"));
        assert_eq!(secret.expose(), "sk-live-123");
    }
}
