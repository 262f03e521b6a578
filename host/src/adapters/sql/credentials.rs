//! Credentials (`credentials`, migration 0001): values sealed with the master key, the
//! credential's name as associated data, so a sealed value opens only in its own row.

use std::sync::Arc;

use async_trait::async_trait;

use super::columns::Cols;
use super::db::Arg;
use super::dialect::sql;
use super::webhooks::seal_secrets;
use super::{Db, SqlStore, db};
use crate::adapters::master_key::nonce;
use crate::domain::{CredentialName, MasterKey, Redactor};
use crate::ports::{
    CredentialInfo, CredentialStore, KeyCheck, SecretError, SecretResolver, SecretValue, StoreError,
};

fn credential_from_row<D: Db>(row: &D::Row) -> Result<CredentialInfo, StoreError> {
    let cols = Cols::<D>::new(row, "credentials");
    Ok(CredentialInfo {
        name: CredentialName::parse(cols.get::<String>("name")?)?,
        created_at: cols.time("created_at")?,
        updated_at: cols.time("updated_at")?,
    })
}

/// Every credential's name and sealed value, in name order.
async fn sealed_values<D: Db>(
    conn: &mut D::Connection,
    statement: &'static str,
    context: &'static str,
) -> Result<Vec<(CredentialName, Vec<u8>)>, StoreError> {
    let rows = sqlx::query(statement)
        .fetch_all(D::exec(conn))
        .await
        .map_err(db(context))?;
    rows.iter()
        .map(|row| {
            let cols = Cols::<D>::new(row, "credentials");
            Ok((
                CredentialName::parse(cols.get::<String>("name")?)?,
                cols.get("sealed")?,
            ))
        })
        .collect()
}

#[async_trait]
impl<D: Db> SecretResolver for SqlStore<D> {
    async fn resolve(&self, name: &str) -> Result<Option<SecretValue>, SecretError> {
        let Ok(name) = CredentialName::parse(name) else {
            return Ok(None);
        };
        let unavailable = |e: &dyn std::fmt::Display| SecretError::Unavailable(e.to_string());
        let row = sqlx::query("SELECT sealed FROM credentials WHERE name = $1")
            .arg(name.as_str())
            .fetch_optional(self.exec())
            .await
            .map_err(|e| unavailable(&e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let sealed: Vec<u8> = Cols::<D>::new(&row, "credentials")
            .get("sealed")
            .map_err(|e| unavailable(&e))?;
        let value = self
            .inner
            .key
            .load()
            .open(&name, &sealed)
            .map_err(|e| unavailable(&e))?;
        Ok(Some(SecretValue::new(value)))
    }
}

#[async_trait]
impl<D: Db> CredentialStore for SqlStore<D> {
    async fn put(
        &self,
        name: &CredentialName,
        value: &SecretValue,
    ) -> Result<CredentialInfo, StoreError> {
        let key = self.inner.key.load();
        let sealed = key.seal(name, value.expose(), nonce());
        let mut w = self.write("storing a credential").await?;
        let row = sqlx::query(sql!(
            D,
            "INSERT INTO credentials (name, sealed, key_fingerprint, created_at, updated_at) \
             VALUES ($1, $2, $3, {now}, {now}) \
             ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, \
             key_fingerprint = excluded.key_fingerprint, updated_at = excluded.updated_at \
             RETURNING name, created_at, updated_at"
        ))
        .arg(name.as_str())
        .arg(sealed)
        .arg(key.fingerprint().as_str())
        .fetch_one(w.exec())
        .await
        .map_err(db("storing a credential"))?;
        w.commit().await?;
        credential_from_row::<D>(&row)
    }

    async fn list(&self) -> Result<Vec<CredentialInfo>, StoreError> {
        let rows =
            sqlx::query("SELECT name, created_at, updated_at FROM credentials ORDER BY name")
                .fetch_all(self.exec())
                .await
                .map_err(db("listing credentials"))?;
        rows.iter().map(credential_from_row::<D>).collect()
    }

    async fn delete(&self, name: &CredentialName) -> Result<(), StoreError> {
        let query = sqlx::query("DELETE FROM credentials WHERE name = $1").arg(name.as_str());
        self.change_one(
            query,
            "deleting a credential",
            ("credential", name.as_str()),
        )
        .await
    }

    async fn rotate_key(&self, new_key: MasterKey) -> Result<u64, StoreError> {
        let context = "rotating the master key";
        let old_key = self.inner.key.load_full();
        let mut w = self.transaction(context).await?;
        let values = sealed_values::<D>(
            w.conn(),
            sql!(
                D,
                "SELECT name, sealed FROM credentials ORDER BY name{for_update}"
            ),
            context,
        )
        .await?;
        for (name, sealed) in &values {
            let value = old_key.open(name, sealed)?;
            let resealed = new_key.seal(name, &value, nonce());
            sqlx::query("UPDATE credentials SET sealed = $2, key_fingerprint = $3 WHERE name = $1")
                .arg(name.as_str())
                .arg(resealed)
                .arg(new_key.fingerprint().as_str())
                .execute(w.exec())
                .await
                .map_err(db(context))?;
        }
        let secrets = seal_secrets::<D>(w.conn(), Some(&old_key), &new_key).await?;
        w.commit().await?;
        self.inner.key.store(Arc::new(new_key));
        Ok(values.len() as u64 + secrets)
    }

    async fn redactor(&self) -> Result<Redactor, StoreError> {
        let context = "loading credentials for redaction";
        let mut conn = self.inner.pool.acquire().await.map_err(db(context))?;
        let values =
            sealed_values::<D>(&mut conn, "SELECT name, sealed FROM credentials", context).await?;
        let key = self.inner.key.load();
        let values = values
            .iter()
            .map(|(name, sealed)| key.open(name, sealed))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Redactor::new(values))
    }

    async fn check_key(&self) -> Result<KeyCheck, StoreError> {
        let context = "checking the master key against stored secrets";
        let key = self.inner.key.load_full();
        let current = key.fingerprint();
        let other = sqlx::query(
            "SELECT key_fingerprint FROM credentials WHERE key_fingerprint <> $1 \
             UNION ALL SELECT key_fingerprint FROM webhooks \
             WHERE sealed_secret IS NOT NULL AND key_fingerprint <> $1 LIMIT 1",
        )
        .arg(current.as_str())
        .fetch_optional(self.exec())
        .await
        .map_err(db(context))?;
        if let Some(row) = other {
            let fingerprint: String = Cols::<D>::new(&row, "credentials").get("key_fingerprint")?;
            return Ok(KeyCheck::SealedWithOther {
                current,
                fingerprint,
            });
        }
        let sample = sqlx::query("SELECT name, sealed FROM credentials LIMIT 1")
            .fetch_optional(self.exec())
            .await
            .map_err(db(context))?;
        let Some(row) = sample else {
            return Ok(KeyCheck::Ok);
        };
        let cols = Cols::<D>::new(&row, "credentials");
        let name = CredentialName::parse(cols.get::<String>("name")?)?;
        let sealed: Vec<u8> = cols.get("sealed")?;
        Ok(match key.open(&name, &sealed) {
            Ok(_) => KeyCheck::Ok,
            Err(_) => KeyCheck::Undecryptable {
                name: name.to_string(),
            },
        })
    }
}
