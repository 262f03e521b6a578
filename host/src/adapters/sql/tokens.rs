//! API tokens (`api_tokens`, migration 0010): only the digest of each secret is stored.

use async_trait::async_trait;

use super::columns::{Cols, json};
use super::db::Arg;
use super::dialect::sql;
use super::{Db, SqlStore, db, db_unique, not_found};
use crate::domain::{ApiToken, NewToken};
use crate::ports::{StoreError, TokenStore};

macro_rules! columns {
    () => {
        "id, name, role, projects, created_at, revoked_at"
    };
}

fn token_from_row<D: Db>(row: &D::Row) -> Result<ApiToken, StoreError> {
    let cols = Cols::<D>::new(row, "api_tokens");
    Ok(ApiToken {
        id: cols.get("id")?,
        name: cols.get("name")?,
        role: cols.parse("role", |role| role.parse())?,
        projects: cols.json("projects")?,
        created_at: cols.time("created_at")?,
        revoked_at: cols.time_opt("revoked_at")?,
    })
}

#[async_trait]
impl<D: Db> TokenStore for SqlStore<D> {
    async fn create(&self, token: NewToken) -> Result<ApiToken, StoreError> {
        let context = "creating a token";
        let mut w = self.write(context).await?;
        let row = sqlx::query(sql!(
            D,
            concat!(
                "INSERT INTO api_tokens (id, name, digest, role, projects, created_at) \
                 VALUES ($1, $2, $3, $4, $5, {now}) RETURNING ",
                columns!()
            )
        ))
        .arg(&token.id)
        .arg(&token.name)
        .arg(&token.digest)
        .arg(token.role.as_str())
        .arg(json(&token.projects)?)
        .fetch_one(w.exec())
        .await
        .map_err(db_unique(context, "token"))?;
        let token = token_from_row::<D>(&row)?;
        w.commit().await?;
        Ok(token)
    }

    async fn find_active(&self, digest: &str) -> Result<Option<ApiToken>, StoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM api_tokens WHERE digest = $1 AND revoked_at IS NULL"
        ))
        .arg(digest);
        self.find_optional(query, token_from_row::<D>, "looking up a token")
            .await
    }

    async fn list(&self) -> Result<Vec<ApiToken>, StoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM api_tokens ORDER BY created_at, id"
        ));
        self.find_all(query, token_from_row::<D>, "listing tokens")
            .await
    }

    async fn revoke(&self, id: &str) -> Result<ApiToken, StoreError> {
        let mut w = self.write("revoking a token").await?;
        let row = sqlx::query(sql!(
            D,
            concat!(
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, {now}) WHERE id = $1 \
                 RETURNING ",
                columns!()
            )
        ))
        .arg(id)
        .fetch_optional(w.exec())
        .await
        .map_err(db("revoking a token"))?;
        w.commit().await?;
        match row {
            Some(row) => token_from_row::<D>(&row),
            None => Err(not_found("token", id)),
        }
    }
}
