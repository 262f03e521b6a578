//! Where dashboard sessions live (see [`crate::domain::session`]). Only digests are stored.

use async_trait::async_trait;

use crate::domain::{NewUiSession, UiSession};

use super::store::StoreError;

/// Dashboard sessions, implemented by both storage adapters.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session and purges expired ones; `Conflict` when the digest exists.
    async fn create_session(&self, session: NewUiSession) -> Result<UiSession, StoreError>;
    /// The unexpired session with this digest, if any.
    async fn find_session(&self, digest: &str) -> Result<Option<UiSession>, StoreError>;
    /// Ends the session (sign-out); true when one was there.
    async fn revoke_session(&self, digest: &str) -> Result<bool, StoreError>;
}
