//! The hash-chained audit trail (`audit_log`, migrations 0001 and 0070). Appends are
//! serialized (an advisory lock on PostgreSQL, the write lock on SQLite), so the chain
//! never forks.

use async_trait::async_trait;
use chrono::Utc;

use super::columns::{AuditTime, Cols};
use super::db::Arg;
use super::{Db, SqlStore, db};
use crate::domain::audit::{GENESIS_HASH, check_anchor};
use crate::domain::{AuditCheckpoint, AuditEntry, ChainVerifier, NewAuditEntry};
use crate::ports::{AnchoredVerification, AuditLog, AuditVerification, StoreError};

/// Rows fetched per page while verifying the audit chain.
const VERIFY_PAGE: u32 = 1000;

/// A query selecting the columns of an `AuditEntry`, with `$tail` after `FROM audit_log`.
macro_rules! select_audit {
    ($tail:literal) => {
        concat!(
            "SELECT seq, at, actor, action, project_id, command_id, details, prev_hash, hash \
             FROM audit_log ",
            $tail
        )
    };
}

fn audit_from_row<D: Db>(row: &D::Row) -> Result<AuditEntry, StoreError> {
    let cols = Cols::<D>::new(row, "audit_log");
    let details: String = cols.get("details")?;
    Ok(AuditEntry {
        seq: cols.get("seq")?,
        at: cols.get::<AuditTime>("at")?.0,
        actor: cols.get("actor")?,
        action: cols.get("action")?,
        project_id: cols.get("project_id")?,
        command_id: cols.get("command_id")?,
        details: serde_json::from_str(&details).map_err(|e| cols.corrupt(e))?,
        prev_hash: cols.get("prev_hash")?,
        hash: cols.get("hash")?,
    })
}

/// Appends an audit entry on `conn` inside the caller's transaction (PostgreSQL's advisory
/// lock is held until it commits), so that what the entry records (a status, an outbox row)
/// commits with it. With a `key` already stored, returns that entry instead.
pub(crate) async fn append_audit<D: Db>(
    conn: &mut D::Connection,
    entry: NewAuditEntry,
    key: Option<&str>,
) -> Result<AuditEntry, StoreError> {
    D::lock_audit(conn).await?;
    if let Some(key) = key {
        let stored = sqlx::query(select_audit!("WHERE append_key = $1"))
            .arg(key)
            .fetch_optional(D::exec(conn))
            .await
            .map_err(db("reading the audit log"))?;
        if let Some(row) = stored {
            return audit_from_row::<D>(&row);
        }
    }
    let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(D::exec(conn))
        .await
        .map_err(db("reading the audit log head"))?;
    let (seq, prev) = match head {
        Some(row) => {
            let cols = Cols::<D>::new(&row, "audit_log");
            (cols.get::<i64>("seq")? + 1, cols.get("hash")?)
        }
        None => (1, GENESIS_HASH.to_owned()),
    };
    let sealed = AuditEntry::seal(&prev, seq, Utc::now(), entry);
    let details =
        serde_json::to_string(&sealed.details).map_err(|e| StoreError::Invalid(e.to_string()))?;
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, action, project_id, command_id, details, \
         prev_hash, hash, append_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .arg(sealed.seq)
    .arg(AuditTime(sealed.at))
    .arg(&sealed.actor)
    .arg(&sealed.action)
    .arg(&sealed.project_id)
    .arg(&sealed.command_id)
    .arg(details.as_str())
    .arg(&sealed.prev_hash)
    .arg(&sealed.hash)
    .arg(key)
    .execute(D::exec(conn))
    .await
    .map_err(db("appending to the audit log"))?;
    Ok(sealed)
}

impl<D: Db> SqlStore<D> {
    async fn append_audit_entry(
        &self,
        entry: NewAuditEntry,
        key: Option<&str>,
    ) -> Result<AuditEntry, StoreError> {
        let mut w = self.transaction("appending to the audit log").await?;
        let sealed = append_audit::<D>(w.conn(), entry, key).await?;
        w.commit().await?;
        Ok(sealed)
    }
}

#[async_trait]
impl<D: Db> AuditLog for SqlStore<D> {
    async fn append(&self, entry: NewAuditEntry) -> Result<AuditEntry, StoreError> {
        self.append_audit_entry(entry, None).await
    }

    async fn append_once(&self, entry: NewAuditEntry, key: &str) -> Result<AuditEntry, StoreError> {
        self.append_audit_entry(entry, Some(key)).await
    }

    async fn list(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let query = sqlx::query(select_audit!("WHERE seq > $1 ORDER BY seq LIMIT $2"))
            .arg(after)
            .arg(i64::from(limit));
        self.find_all(query, audit_from_row::<D>, "reading the audit log")
            .await
    }

    /// Walks the whole chain page by page and reports the first broken link.
    async fn verify(&self) -> Result<AuditVerification, StoreError> {
        let mut verifier = ChainVerifier::default();
        let mut after = 0;
        loop {
            let page = self.list(after, VERIFY_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for entry in &page {
                if let Err(broken) = verifier.check(entry) {
                    return Ok(AuditVerification {
                        verified: verifier.checked(),
                        first_broken: Some(broken),
                    });
                }
            }
        }
        Ok(AuditVerification {
            verified: verifier.checked(),
            first_broken: None,
        })
    }

    async fn checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError> {
        let Some(head) = self.head().await? else {
            return Ok(None);
        };
        let key = self.inner.key.load();
        Ok(Some(AuditCheckpoint::sign(
            &key,
            head.seq,
            &head.hash,
            Utc::now(),
        )))
    }

    async fn verify_against(
        &self,
        checkpoint: &AuditCheckpoint,
    ) -> Result<AnchoredVerification, StoreError> {
        if let Err(untrusted) = checkpoint.authenticate(&self.inner.key.load()) {
            return Ok(AnchoredVerification {
                chain: AuditVerification {
                    verified: 0,
                    first_broken: None,
                },
                anchor: Err(untrusted.into()),
            });
        }
        let chain = self.verify().await?;
        let ends_at = self.head().await?.map_or(0, |head| head.seq);
        let row = sqlx::query(select_audit!("WHERE seq = $1"))
            .arg(checkpoint.seq)
            .fetch_optional(self.exec())
            .await
            .map_err(db("reading the audit log"))?;
        let at_seq = row.as_ref().map(audit_from_row::<D>).transpose()?;
        Ok(AnchoredVerification {
            chain,
            anchor: check_anchor(checkpoint, at_seq.as_ref(), ends_at),
        })
    }
}

/// The last entry's place in the chain.
struct Head {
    seq: i64,
    hash: String,
}

impl<D: Db> SqlStore<D> {
    /// The newest entry's `seq` and `hash` (the primary key's last row).
    async fn head(&self) -> Result<Option<Head>, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(self.exec())
            .await
            .map_err(db("reading the audit log head"))?;
        row.map(|row| {
            let cols = Cols::<D>::new(&row, "audit_log");
            Ok(Head {
                seq: cols.get("seq")?,
                hash: cols.get("hash")?,
            })
        })
        .transpose()
    }
}
