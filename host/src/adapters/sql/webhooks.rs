//! Webhook subscriptions, their outbox and delivery history (`webhooks`,
//! `webhook_deliveries`, `webhook_attempts`, migrations 0030 and 0050).

use super::columns::Cols;
use super::db::Arg;
use super::dialect::sql;
use super::{Db, db};
use crate::adapters::outbox::reseal_secret;
use crate::domain::MasterKey;
use crate::ports::StoreError;

/// Seals webhook signing secrets with `new` on `conn`: every plaintext one migration 0050
/// left in `legacy_secret` (at start-up: SQL cannot encrypt with the operator's key; finding
/// none the second time), and, given `old` (in `rotate_key`'s transaction), every sealed one
/// again. The rule per row is `outbox::reseal_secret`. Returns how many rows changed.
pub(crate) async fn seal_secrets<D: Db>(
    conn: &mut D::Connection,
    old: Option<&MasterKey>,
    new: &MasterKey,
) -> Result<u64, StoreError> {
    let context = "sealing webhook secrets";
    let rows = sqlx::query(sql!(
        D,
        "SELECT id, legacy_secret, sealed_secret FROM webhooks \
         WHERE legacy_secret IS NOT NULL OR $1 ORDER BY id{for_update}"
    ))
    .arg(old.is_some())
    .fetch_all(D::exec(conn))
    .await
    .map_err(db(context))?;
    let mut changed = 0;
    for row in &rows {
        let cols = Cols::<D>::new(row, "webhooks");
        let id: String = cols.get("id")?;
        let (legacy, sealed) = (cols.get("legacy_secret")?, cols.get("sealed_secret")?);
        let Some(resealed) = reseal_secret(&id, legacy, sealed, old, new)? else {
            continue;
        };
        sqlx::query(
            "UPDATE webhooks SET sealed_secret = $2, key_fingerprint = $3, legacy_secret = NULL \
             WHERE id = $1",
        )
        .arg(id.as_str())
        .arg(resealed)
        .arg(new.fingerprint().as_str())
        .execute(D::exec(conn))
        .await
        .map_err(db(context))?;
        changed += 1;
    }
    Ok(changed)
}
