//! Rotating the master key: every credential and webhook secret re-encrypted under a new
//! key in one database transaction, with the key itself kept where the next start reads
//! it. The order makes a crash at any point lose nothing:
//!
//! 1. the new key is staged durably beside the current one (`master.key.next`);
//! 2. the store re-encrypts everything and switches to the new key in one transaction;
//! 3. the staged key is renamed over the key file.
//!
//! A crash before 2 commits leaves the old key file and old rows (the next start drops the
//! staged key); after 2, the next start sees rows sealed with the staged key's fingerprint
//! and installs it (`wiring::stores`). With `RDEV_MASTER_KEY` nothing is written: the
//! caller supplies the new key, which the operator then sets in the environment.

use std::sync::Arc;

use crate::domain::MasterKey;
use crate::ports::{CredentialStore, KeyCheck, KeyKeeper, KeyKeeperError, StoreError};

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The new key's fingerprint (never the key).
    pub fingerprint: String,
    /// Credentials and webhook secrets re-encrypted.
    pub reencrypted: u64,
    /// True when the key file now holds the new key; false with `RDEV_MASTER_KEY`.
    pub key_file_updated: bool,
}

/// Why a rotation did not happen (or, for [`RotationError::Install`], did not finish).
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// No new key was given and none can be kept (`RDEV_MASTER_KEY`), or staging failed.
    #[error(transparent)]
    Keeper(#[from] KeyKeeperError),
    /// The key in use does not open what is stored: rotating would fail half-way.
    #[error("{0}")]
    KeyMismatch(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database switched to the new key but the key file could not be replaced; the
    /// staged file holds the key and the next start installs it.
    #[error(
        "the stored secrets are re-encrypted under the key with fingerprint {fingerprint}, but \
         installing it as the key file failed ({source}); the next start installs it from the \
         staged file"
    )]
    Install {
        fingerprint: String,
        #[source]
        source: KeyKeeperError,
    },
}

/// Runs rotations one at a time over the credential store and the key's keeper.
pub struct KeyRotation {
    credentials: Arc<dyn CredentialStore>,
    keeper: Arc<dyn KeyKeeper>,
    running: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KeyRotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRotation")
            .field("persists", &self.keeper.persists())
            .finish_non_exhaustive()
    }
}

impl KeyRotation {
    pub fn new(credentials: Arc<dyn CredentialStore>, keeper: Arc<dyn KeyKeeper>) -> Self {
        Self {
            credentials,
            keeper,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Rotates to `next`, or to a fresh random key when `None` (only with a key file).
    pub async fn rotate(&self, next: Option<MasterKey>) -> Result<Rotated, RotationError> {
        let _one_at_a_time = self.running.lock().await;
        let check = self.credentials.check_key().await?;
        if let Some(problem) = check.problem() {
            return Err(RotationError::KeyMismatch(problem));
        }
        let next = match next {
            Some(key) => key,
            None if self.keeper.persists() => fresh_key(),
            None => return Err(KeyKeeperError::FromEnvironment.into()),
        };
        let fingerprint = next.fingerprint();
        if !self.keeper.persists() {
            let reencrypted = self.credentials.rotate_key(next).await?;
            return Ok(Rotated {
                fingerprint,
                reencrypted,
                key_file_updated: false,
            });
        }
        self.keeper.stage(&next)?;
        let reencrypted = match self.credentials.rotate_key(next).await {
            Ok(count) => count,
            Err(error) => {
                // A commit whose acknowledgement was lost looks like a failure: drop the
                // staged key only when the rows still open with the current one.
                match self.credentials.check_key().await {
                    Ok(KeyCheck::Ok) => self.keeper.abandon(),
                    _ => tracing::warn!(
                        "master key rotation failed; keeping the staged key for the next start"
                    ),
                }
                return Err(error.into());
            }
        };
        self.keeper
            .install()
            .map_err(|source| RotationError::Install {
                fingerprint: fingerprint.clone(),
                source,
            })?;
        Ok(Rotated {
            fingerprint,
            reencrypted,
            key_file_updated: true,
        })
    }
}

/// 32 bytes from the thread's CSPRNG.
fn fresh_key() -> MasterKey {
    let mut bytes = [0u8; crate::domain::credential::KEY_LEN];
    rand::fill(&mut bytes);
    MasterKey::from_bytes(bytes)
}
