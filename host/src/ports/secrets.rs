//! Looking up credential values at the moment they are used, so values live in host memory
//! only as long as a spawn or a request needs them.

use std::fmt;

use async_trait::async_trait;

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
