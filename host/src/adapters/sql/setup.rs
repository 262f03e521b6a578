//! Project setups (`project_setups`, migration 0020): how a project was created from a
//! template, and where its CI registration stands. Removing a project removes its setup.

use async_trait::async_trait;

use super::audit::append_audit;
use super::columns::{Cols, json};
use super::db::{Arg, RowsAffected};
use super::dialect::sql;
use super::projects::insert_project;
use super::webhooks::emit_in;
use super::{Db, SqlStore, db};
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

fn setup_from_row<D: Db>(row: &D::Row) -> Result<ProjectSetup, StoreError> {
    let cols = Cols::<D>::new(row, "project_setups");
    Ok(ProjectSetup {
        project_id: cols.parse("project_id", ProjectId::parse)?,
        template: cols.get("template")?,
        vars: cols.json("vars")?,
        repo: cols.get("repo")?,
        ci_repo: cols.get("ci_repo")?,
        ci: CiRegistration {
            state: cols.parse("ci_state", |state| state.parse())?,
            repo_id: cols.get("ci_repo_id")?,
            pipeline: cols.get("ci_pipeline")?,
            pipeline_status: cols.get("ci_pipeline_status")?,
            error: cols.get("ci_error")?,
        },
        created_at: cols.time("created_at")?,
        updated_at: cols.time("updated_at")?,
    })
}

#[async_trait]
impl<D: Db> ProjectSetupStore for SqlStore<D> {
    async fn create_with_setup(
        &self,
        project: NewProject,
        setup: NewProjectSetup,
    ) -> Result<(Project, ProjectSetup), StoreError> {
        let mut w = self.transaction("recording a project setup").await?;
        let Some(created) = insert_project::<D>(w.conn(), &project).await? else {
            return Err(StoreError::Conflict(format!(
                "project {} already exists",
                project.id
            )));
        };
        let row = sqlx::query(sql!(
            D,
            concat!(
                "INSERT INTO project_setups (",
                columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, {now}, {now}) RETURNING ",
                columns!()
            )
        ))
        .arg(project.id.as_str())
        .arg(&setup.template)
        .arg(json(&setup.vars)?)
        .arg(&setup.repo)
        .arg(&setup.ci_repo)
        .arg(setup.ci.state.as_str())
        .arg(setup.ci.repo_id)
        .arg(setup.ci.pipeline)
        .arg(&setup.ci.pipeline_status)
        .arg(&setup.ci.error)
        .fetch_one(w.exec())
        .await
        .map_err(db("recording a project setup"))?;
        let stored = setup_from_row::<D>(&row)?;
        w.commit().await?;
        Ok((created, stored))
    }

    async fn get_setup(&self, id: &ProjectId) -> Result<ProjectSetup, StoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM project_setups WHERE project_id = $1"
        ))
        .arg(id.as_str());
        let found = ("project setup", id.as_str());
        self.find(query, setup_from_row::<D>, "reading a project setup", found)
            .await
    }

    async fn update_ci(&self, id: &ProjectId, ci: &CiRegistration) -> Result<(), StoreError> {
        let query = sqlx::query(sql!(
            D,
            "UPDATE project_setups SET ci_state = $2, ci_repo_id = $3, ci_pipeline = $4, \
             ci_pipeline_status = $5, ci_error = $6, updated_at = {now} WHERE project_id = $1"
        ))
        .arg(id.as_str())
        .arg(ci.state.as_str())
        .arg(ci.repo_id)
        .arg(ci.pipeline)
        .arg(&ci.pipeline_status)
        .arg(&ci.error);
        let context = "updating a project's CI registration";
        self.change_one(query, context, ("project setup", id.as_str()))
            .await
    }

    async fn ci_unfinished(&self, finished: &[&str]) -> Result<Vec<ProjectSetup>, StoreError> {
        let query = sqlx::query(sql!(
            D,
            concat!(
                "SELECT ",
                columns!(),
                " FROM project_setups WHERE ci_state = 'registered' \
             AND ci_repo_id IS NOT NULL AND ci_pipeline IS NOT NULL \
             AND (ci_pipeline_status IS NULL \
                  OR ci_pipeline_status NOT IN ({elements($1)})) \
             ORDER BY updated_at, project_id"
            )
        ))
        .arg(json(finished)?);
        self.find_all(
            query,
            setup_from_row::<D>,
            "listing unfinished CI pipelines",
        )
        .await
    }

    /// The status changes only from `seen`, so of two pollers that saw the same status, one
    /// records the change and announces it.
    async fn record_pipeline_status(
        &self,
        id: &ProjectId,
        pipeline: i64,
        seen: Option<&str>,
        status: &str,
        announce: Option<Announcement>,
    ) -> Result<bool, StoreError> {
        let context = "recording a pipeline status";
        let mut w = self.transaction(context).await?;
        let done = sqlx::query(sql!(
            D,
            "UPDATE project_setups SET ci_pipeline_status = $4, updated_at = {now} \
             WHERE project_id = $1 AND ci_pipeline = $2 \
             AND ci_pipeline_status IS NOT DISTINCT FROM $3"
        ))
        .arg(id.as_str())
        .arg(pipeline)
        .arg(seen)
        .arg(status)
        .execute(w.exec())
        .await
        .map_err(db(context))?;
        let changed = done.rows_affected() == 1;
        if changed && let Some(announce) = announce {
            append_audit::<D>(w.conn(), announce.audit, None).await?;
            emit_in(&mut w, &announce.event).await?;
        }
        w.commit().await?;
        Ok(changed)
    }
}
