//! API tokens and project removal on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

use super::{PgStore, corrupt, db};
use crate::domain::{ApiToken, NewToken, ProjectId};
use crate::ports::{StoreError, TokenStore};

const COLUMNS: &str = "id, name, role, projects, created_at, revoked_at";

fn token_from_row(row: &PgRow) -> Result<ApiToken, StoreError> {
    let bad = corrupt("api_tokens");
    let get = |e: sqlx::Error| bad(e.to_string());
    let role: String = row.try_get("role").map_err(get)?;
    let Json(projects): Json<Vec<ProjectId>> = row.try_get("projects").map_err(get)?;
    let created_at: DateTime<Utc> = row.try_get("created_at").map_err(get)?;
    Ok(ApiToken {
        id: row.try_get("id").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        role: role.parse().map_err(&bad)?,
        projects,
        created_at,
        revoked_at: row.try_get("revoked_at").map_err(get)?,
    })
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

#[async_trait]
impl TokenStore for PgStore {
    async fn create(&self, token: NewToken) -> Result<ApiToken, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO api_tokens (id, name, digest, role, projects) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
        )))
        .bind(&token.id)
        .bind(&token.name)
        .bind(&token.digest)
        .bind(token.role.as_str())
        .bind(Json(&token.projects))
        .fetch_one(self.pool_ref())
        .await;
        match row {
            Ok(row) => token_from_row(&row),
            Err(error) if is_unique_violation(&error) => {
                Err(StoreError::Conflict("the token already exists".into()))
            }
            Err(error) => Err(StoreError::backend("creating a token", error)),
        }
    }

    async fn find_active(&self, digest: &str) -> Result<Option<ApiToken>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE digest = $1 AND revoked_at IS NULL"
        )))
        .bind(digest)
        .fetch_optional(self.pool_ref())
        .await
        .map_err(db("looking up a token"))?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list(&self) -> Result<Vec<ApiToken>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_tokens ORDER BY created_at, id"
        )))
        .fetch_all(self.pool_ref())
        .await
        .map_err(db("listing tokens"))?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke(&self, id: &str) -> Result<ApiToken, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 \
             RETURNING {COLUMNS}"
        )))
        .bind(id)
        .fetch_optional(self.pool_ref())
        .await
        .map_err(db("revoking a token"))?;
        match row {
            Some(row) => token_from_row(&row),
            None => Err(StoreError::NotFound {
                kind: "token",
                id: id.to_owned(),
            }),
        }
    }
}

impl PgStore {
    /// `ProjectStore::delete`: one transaction holding the project row locked, refused while
    /// work is queued or running.
    pub(super) async fn delete_project(&self, id: &ProjectId) -> Result<(), StoreError> {
        let mut tx = self
            .pool_ref()
            .begin()
            .await
            .map_err(db("deleting a project"))?;
        let exists = sqlx::query("SELECT 1 FROM projects WHERE id = $1 FOR UPDATE")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("deleting a project"))?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                kind: "project",
                id: id.to_string(),
            });
        }
        let active: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM commands WHERE project_id = $1 \
             AND status IN ('pending', 'running')",
        )
        .bind(id.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(db("deleting a project"))?;
        if active > 0 {
            return Err(StoreError::Conflict(format!(
                "project {id} has {active} pending or running commands"
            )));
        }
        for statement in [
            "DELETE FROM events WHERE stream IN (SELECT id FROM commands WHERE project_id = $1)",
            "DELETE FROM commands WHERE project_id = $1",
            "DELETE FROM projects WHERE id = $1",
            "DELETE FROM webhooks WHERE project_id = $1",
        ] {
            sqlx::query(statement)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db("deleting a project"))?;
        }
        tx.commit().await.map_err(db("deleting a project"))
    }
}
