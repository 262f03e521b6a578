//! Credentials from the host's environment, for the CLI, which has no credential store.

use std::collections::BTreeSet;

use async_trait::async_trait;

use crate::ports::{SecretError, SecretResolver, SecretValue};

/// Resolves a credential name to the host environment variable of the same name, but only
/// for names the operator listed (`rdev exec --credential-env NAME`): a plugin must not be
/// able to read any host variable just by naming it.
#[derive(Debug, Clone, Default)]
pub struct EnvSecrets {
    allowed: BTreeSet<String>,
}

impl EnvSecrets {
    /// Allows exactly `names` to be resolved from the environment.
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        Self {
            allowed: names.into_iter().collect(),
        }
    }

    /// The current values of the allowed names that are set, so output can be redacted.
    pub fn values(&self) -> Vec<String> {
        self.allowed
            .iter()
            .filter_map(|name| std::env::var(name).ok())
            .collect()
    }
}

#[async_trait]
impl SecretResolver for EnvSecrets {
    async fn resolve(&self, name: &str) -> Result<Option<SecretValue>, SecretError> {
        if !self.allowed.contains(name) {
            return Ok(None);
        }
        Ok(std::env::var(name).ok().map(SecretValue::new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_listed_names_are_resolved() {
        // PATH is set in every environment the tests run in.
        let host_path = std::env::var("PATH").expect("PATH is set");
        let listed = EnvSecrets::new(["PATH".to_owned(), "RDEV_SURELY_UNSET_VAR".to_owned()]);
        let value = listed.resolve("PATH").await.expect("resolves");
        assert_eq!(
            value.map(|v| v.expose().to_owned()),
            Some(host_path.clone())
        );
        assert_eq!(listed.resolve("RDEV_SURELY_UNSET_VAR").await, Ok(None));
        assert_eq!(listed.values(), vec![host_path]);

        let unlisted = EnvSecrets::new(Vec::new());
        assert_eq!(unlisted.resolve("PATH").await, Ok(None));
    }
}
