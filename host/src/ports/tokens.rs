//! Where API tokens live. Only digests are stored; the API hashes what a client presents and
//! looks the digest up.

use async_trait::async_trait;

use crate::domain::{ApiToken, NewToken};

use super::store::StoreError;

/// API tokens, implemented by both storage adapters.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a new token; `Conflict` when its id or digest exists.
    async fn create(&self, token: NewToken) -> Result<ApiToken, StoreError>;
    /// The unrevoked token with this digest, if any.
    async fn find_active(&self, digest: &str) -> Result<Option<ApiToken>, StoreError>;
    /// Every token, revoked ones included, oldest first.
    async fn list(&self) -> Result<Vec<ApiToken>, StoreError>;
    /// Revokes the token; `NotFound` for an unknown id. Revoking twice keeps the first time.
    async fn revoke(&self, id: &str) -> Result<ApiToken, StoreError>;
}
