//! What both databases' webhook claims and the shared webhook store use: the shape of a
//! claimed outbox row (the delivery joined with its webhook's URL and sealed secret), the
//! one place it becomes a `DueDelivery`, and the rule that (re-)seals a stored secret.

use crate::adapters::master_key::nonce;
use crate::domain::{DueDelivery, MasterKey, ProjectId, SealedWebhookSecret};
use crate::ports::StoreError;

/// The new `sealed_secret` of webhook `id`, sealed with `new`: its plaintext `legacy` secret
/// (left by migration 0050) sealed, or, when rotating from `old`, its sealed secret opened
/// and sealed again. `None` when the row needs no change.
pub(crate) fn reseal_secret(
    id: &str,
    legacy: Option<String>,
    sealed: Option<Vec<u8>>,
    old: Option<&MasterKey>,
    new: &MasterKey,
) -> Result<Option<Vec<u8>>, StoreError> {
    let plain = match (legacy, sealed, old) {
        (Some(plain), _, _) => plain,
        (None, Some(sealed), Some(old)) => SealedWebhookSecret(sealed)
            .open(old, id)?
            .expose()
            .to_owned(),
        _ => return Ok(None),
    };
    Ok(Some(SealedWebhookSecret::seal(new, id, &plain, nonce()).0))
}

/// A delivery just claimed, as both adapters select it. Column names are the SQL aliases.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ClaimedRow {
    pub seq: i64,
    pub event_id: String,
    pub webhook_id: String,
    pub project_id: String,
    pub event_type: String,
    pub payload: String,
    /// The attempt counter after the claim incremented it.
    pub attempts: i64,
    pub url: String,
    /// `None` only for a plaintext secret not yet sealed at start-up; it then opens to the
    /// typed "cannot be decrypted" error and that one delivery's attempt fails, not the claim.
    pub sealed_secret: Option<Vec<u8>>,
}

impl ClaimedRow {
    /// The delivery `owner` now holds the right to attempt.
    pub fn into_due(self, owner: &str) -> Result<DueDelivery, StoreError> {
        let project_id = ProjectId::parse(self.project_id).map_err(|e| StoreError::Corrupt {
            table: "webhook_deliveries",
            reason: e.to_string(),
        })?;
        Ok(DueDelivery {
            id: self.seq,
            event_id: self.event_id,
            webhook_id: self.webhook_id,
            project_id,
            event_type: self.event_type,
            payload: self.payload,
            url: self.url,
            secret: SealedWebhookSecret(self.sealed_secret.unwrap_or_default()),
            attempt: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            owner: owner.to_owned(),
        })
    }
}
