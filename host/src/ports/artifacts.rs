//! Where plugins are published and installed from: an OCI registry holding each plugin as an
//! artifact (its component and its manifest), addressed by reference and verified by digest.

use async_trait::async_trait;

use crate::domain::{ContentDigest, OciReference};

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
    /// The artifact is not a plugin in the expected layout.
    #[error("{reference} is not an rdev plugin artifact: {reason}")]
    Layout { reference: String, reason: String },
}

/// An OCI distribution registry.
#[async_trait]
pub trait ArtifactRegistry: Send + Sync {
    /// Fetches `reference`, verifying the manifest against a pinned digest and every blob
    /// against the digest the manifest gives it.
    async fn pull(&self, reference: &OciReference) -> Result<Pulled, ArtifactError>;

    /// Uploads `artifact` under `reference`'s tag; returns the manifest's digest.
    async fn push(
        &self,
        reference: &OciReference,
        artifact: &PluginArtifact,
    ) -> Result<ContentDigest, ArtifactError>;
}
