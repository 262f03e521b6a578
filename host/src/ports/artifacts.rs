//! Where plugins are published and installed from: an OCI registry holding each plugin as an
//! artifact (its component and its manifest), addressed by reference and verified by digest.

use async_trait::async_trait;

use crate::domain::{ContentDigest, OciReference};
use crate::ports::SecretValue;

/// Who to authenticate as with a registry: HTTP Basic, or the Basic credentials sent to the
/// registry's token service (the OCI token flow). Its `Debug` hides the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    pub username: String,
    pub password: SecretValue,
}

impl RegistryCredentials {
    /// Credentials from a `username:password` value (the decoded form of a docker
    /// `config.json` `auth`, and of a credential named for `POST /providers/install`);
    /// `None` when there is no `:` or either side is empty.
    pub fn from_pair(pair: &str) -> Option<Self> {
        let (username, password) = pair.split_once(':')?;
        (!username.is_empty() && !password.is_empty()).then(|| Self {
            username: username.to_owned(),
            password: SecretValue::new(password),
        })
    }
}

/// A plugin as shipped: the component and its manifest, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginArtifact {
    /// The `<name>.wasm` component.
    pub component: Vec<u8>,
    /// The `<name>.toml` manifest text.
    pub manifest: Vec<u8>,
}

/// A pulled artifact and the digest of the OCI manifest that named it, which is what a lock
/// file pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub artifact: PluginArtifact,
    pub digest: ContentDigest,
}

/// Why a registry operation failed. Never carries credentials.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The registry could not be reached or answered an unexpected status.
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    /// The reference does not exist in the registry.
    #[error("{0} was not found in its registry")]
    NotFound(String),
    /// Content did not hash to the digest that names it: refused, nothing installed.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// The registry (or its token service) wants credentials, or refused the ones given.
    /// Names the user, never the password or a token.
    #[error("registry {registry}: {message}")]
    Unauthorized { registry: String, message: String },
    /// The artifact is not a plugin in the expected layout.
    #[error("{reference} is not an rdev plugin artifact: {reason}")]
    Layout { reference: String, reason: String },
}

/// An OCI distribution registry.
#[async_trait]
pub trait ArtifactRegistry: Send + Sync {
    /// Fetches `reference`, verifying the manifest against a pinned digest and every blob
    /// against the digest the manifest gives it.
    /// `credentials` are sent only when the registry asks (a 401 challenge).
    async fn pull(
        &self,
        reference: &OciReference,
        credentials: Option<&RegistryCredentials>,
    ) -> Result<Pulled, ArtifactError>;

    /// Uploads `artifact` under `reference`'s tag; returns the manifest's digest.
    async fn push(
        &self,
        reference: &OciReference,
        artifact: &PluginArtifact,
        credentials: Option<&RegistryCredentials>,
    ) -> Result<ContentDigest, ArtifactError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_a_user_password_pair_and_never_show_the_password() {
        let credentials = RegistryCredentials::from_pair("alice:s3cr:et").expect("a pair");
        assert_eq!(credentials.username, "alice");
        assert_eq!(credentials.password.expose(), "s3cr:et");
        assert!(!format!("{credentials:?}").contains("s3cr"));
        for bad in ["alice", ":pw", "alice:"] {
            assert!(RegistryCredentials::from_pair(bad).is_none(), "{bad}");
        }
    }
}
