//! Project setups in SQLite (`project_setups`, migration 0020).

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use sqlx::types::Json;

use super::webhooks::emit_in;
use super::{SqliteStore, corrupt, db};
use crate::adapters::sql::audit::append_audit;
use crate::adapters::sql::projects::insert_project;
use crate::adapters::store::{from_millis, millis};
use crate::domain::{
    CiRegistration, NewProject, NewProjectSetup, Project, ProjectId, ProjectSetup,
};
use crate::ports::{Announcement, ProjectSetupStore, StoreError};

macro_rules! columns {
    () => {
        "project_id, template, vars, repo, ci_repo, ci_state, ci_repo_id, ci_pipeline, \
         ci_pipeline_status, ci_error, created_at, updated_at"
    };
}

fn setup_from_row(row: &SqliteRow) -> Result<ProjectSetup, StoreError> {
    let bad = corrupt("project_setups");
    let get = |e: sqlx::Error| bad(e.to_string());
    let id: String = row.try_get("project_id").map_err(get)?;
    let Json(vars): Json<BTreeMap<String, serde_json::Value>> = row.try_get("vars").map_err(get)?;
    let state: String = row.try_get("ci_state").map_err(get)?;
    Ok(ProjectSetup {
        project_id: ProjectId::parse(id).map_err(|e| bad(e.to_string()))?,
        template: row.try_get("template").map_err(get)?,
        vars,
        repo: row.try_get("repo").map_err(get)?,
        ci_repo: row.try_get("ci_repo").map_err(get)?,
        ci: CiRegistration {
            state: state.parse().map_err(&bad)?,
            repo_id: row.try_get("ci_repo_id").map_err(get)?,
            pipeline: row.try_get("ci_pipeline").map_err(get)?,
            pipeline_status: row.try_get("ci_pipeline_status").map_err(get)?,
            error: row.try_get("ci_error").map_err(get)?,
        },
        created_at: from_millis("project_setups", row.try_get("created_at").map_err(get)?)?,
        updated_at: from_millis("project_setups", row.try_get("updated_at").map_err(get)?)?,
    })
}

#[async_trait]
impl ProjectSetupStore for SqliteStore {
    async fn create_with_setup(
        &self,
        project: NewProject,
        setup: NewProjectSetup,
    ) -> Result<(Project, ProjectSetup), StoreError> {
        let _write = self.inner.state.write.lock().await;
        let now = millis(Utc::now());
        let mut tx = self
            .inner
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        let Some(created) = insert_project::<sqlx::Sqlite>(&mut tx, &project).await? else {
            return Err(StoreError::Conflict(format!(
                "project {} already exists",
                project.id
            )));
        };
        let row = sqlx::query(concat!(
            "INSERT INTO project_setups (",
            columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11) RETURNING ",
            columns!()
        ))
        .bind(project.id.as_str())
        .bind(&setup.template)
        .bind(Json(&setup.vars))
        .bind(&setup.repo)
        .bind(&setup.ci_repo)
        .bind(setup.ci.state.as_str())
        .bind(setup.ci.repo_id)
        .bind(setup.ci.pipeline)
        .bind(&setup.ci.pipeline_status)
        .bind(&setup.ci.error)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(db("recording a project setup"))?;
        let stored = setup_from_row(&row)?;
        tx.commit()
            .await
            .map_err(db("committing a project setup"))?;
        Ok((created, stored))
    }

    async fn get_setup(&self, id: &ProjectId) -> Result<ProjectSetup, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM project_setups WHERE project_id = ?1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(db("reading a project setup"))?;
        match row {
            Some(row) => setup_from_row(&row),
            None => Err(StoreError::NotFound {
                kind: "project setup",
                id: id.to_string(),
            }),
        }
    }

    async fn update_ci(&self, id: &ProjectId, ci: &CiRegistration) -> Result<(), StoreError> {
        let _write = self.inner.state.write.lock().await;
        let result = sqlx::query(
            "UPDATE project_setups SET ci_state = ?2, ci_repo_id = ?3, ci_pipeline = ?4, \
             ci_pipeline_status = ?5, ci_error = ?6, updated_at = ?7 WHERE project_id = ?1",
        )
        .bind(id.as_str())
        .bind(ci.state.as_str())
        .bind(ci.repo_id)
        .bind(ci.pipeline)
        .bind(&ci.pipeline_status)
        .bind(&ci.error)
        .bind(millis(Utc::now()))
        .execute(&self.inner.pool)
        .await
        .map_err(db("updating a project's CI registration"))?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                kind: "project setup",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    async fn ci_unfinished(&self, finished: &[&str]) -> Result<Vec<ProjectSetup>, StoreError> {
        let finished = serde_json::to_string(finished)
            .map_err(|e| StoreError::Invalid(format!("finished statuses: {e}")))?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM project_setups WHERE ci_state = 'registered' AND ci_repo_id IS NOT NULL \
             AND ci_pipeline IS NOT NULL AND (ci_pipeline_status IS NULL \
             OR ci_pipeline_status NOT IN (SELECT value FROM json_each(?1))) \
             ORDER BY updated_at, project_id"
        ))
        .bind(finished)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db("listing unfinished CI pipelines"))?;
        rows.iter().map(setup_from_row).collect()
    }

    async fn record_pipeline_status(
        &self,
        id: &ProjectId,
        pipeline: i64,
        seen: Option<&str>,
        status: &str,
        announce: Option<Announcement>,
    ) -> Result<bool, StoreError> {
        let context = "recording a pipeline status";
        let _write = self.inner.state.write.lock().await;
        let mut tx = self.inner.pool.begin().await.map_err(db(context))?;
        let result = sqlx::query(
            "UPDATE project_setups SET ci_pipeline_status = ?4, updated_at = ?5 \
             WHERE project_id = ?1 AND ci_pipeline = ?2 AND ci_pipeline_status IS ?3",
        )
        .bind(id.as_str())
        .bind(pipeline)
        .bind(seen)
        .bind(status)
        .bind(millis(Utc::now()))
        .execute(&mut *tx)
        .await
        .map_err(db(context))?;
        let changed = result.rows_affected() == 1;
        let mut queued = 0;
        if changed && let Some(announce) = announce {
            append_audit::<sqlx::Sqlite>(&mut tx, announce.audit, None).await?;
            queued = emit_in(&mut tx, &announce.event).await?;
        }
        tx.commit().await.map_err(db(context))?;
        if queued > 0 {
            self.inner.signals.wake_dispatchers();
        }
        Ok(changed)
    }
}
