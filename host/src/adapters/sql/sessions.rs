//! Dashboard sessions (`ui_sessions`, migration 0130): only the digest of each cookie's
//! secret and of the token it stands for are stored.

use async_trait::async_trait;

use super::columns::{Cols, Timestamp};
use super::db::Arg;
use super::dialect::sql;
use super::{Db, SqlStore, db, db_unique};
use crate::domain::{NewUiSession, UiSession};
use crate::ports::{SessionStore, StoreError};

fn session_from_row<D: Db>(row: &D::Row) -> Result<UiSession, StoreError> {
    let cols = Cols::<D>::new(row, "ui_sessions");
    Ok(UiSession {
        token_digest: cols.get("token_digest")?,
        created_at: cols.time("created_at")?,
        expires_at: cols.time("expires_at")?,
    })
}

#[async_trait]
impl<D: Db> SessionStore for SqlStore<D> {
    async fn create_session(&self, session: NewUiSession) -> Result<UiSession, StoreError> {
        let context = "creating a dashboard session";
        let mut w = self.write(context).await?;
        sqlx::query(sql!(D, "DELETE FROM ui_sessions WHERE expires_at <= {now}"))
            .execute(w.exec())
            .await
            .map_err(db(context))?;
        let row = sqlx::query(sql!(
            D,
            "INSERT INTO ui_sessions (digest, token_digest, created_at, expires_at) \
             VALUES ($1, $2, {now}, $3) RETURNING token_digest, created_at, expires_at"
        ))
        .arg(&session.digest)
        .arg(&session.token_digest)
        .arg(Timestamp(session.expires_at))
        .fetch_one(w.exec())
        .await
        .map_err(db_unique(context, "session"))?;
        let created = session_from_row::<D>(&row)?;
        w.commit().await?;
        Ok(created)
    }

    async fn find_session(&self, digest: &str) -> Result<Option<UiSession>, StoreError> {
        let query = sqlx::query(sql!(
            D,
            "SELECT token_digest, created_at, expires_at FROM ui_sessions \
         WHERE digest = $1 AND expires_at > {now}"
        ))
        .arg(digest);
        self.find_optional(
            query,
            session_from_row::<D>,
            "looking up a dashboard session",
        )
        .await
    }

    async fn revoke_session(&self, digest: &str) -> Result<bool, StoreError> {
        let query = sqlx::query("DELETE FROM ui_sessions WHERE digest = $1").arg(digest);
        self.remove(query, "ending a dashboard session").await
    }
}
