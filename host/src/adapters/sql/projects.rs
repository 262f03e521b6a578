//! Registered projects (`projects`, migration 0001).

use async_trait::async_trait;

use super::columns::Cols;
use super::db::Arg;
use super::dialect::sql;
use super::{Db, SqlStore, db, not_found};
use crate::domain::{NewProject, Project, ProjectId};
use crate::ports::{ProjectStore, StoreError};

fn project_from_row<D: Db>(row: &D::Row) -> Result<Project, StoreError> {
    let cols = Cols::<D>::new(row, "projects");
    Ok(Project {
        id: cols.parse("id", ProjectId::parse)?,
        display_name: cols.get("display_name")?,
        created_at: cols.time("created_at")?,
    })
}

/// Registers `project` on `conn` unless its id is taken (then `None`), so a submission can
/// register its project in its own transaction.
pub(crate) async fn insert_project<D: Db>(
    conn: &mut D::Connection,
    project: &NewProject,
) -> Result<Option<Project>, StoreError> {
    let row = sqlx::query(sql!(
        D,
        "INSERT INTO projects (id, display_name, created_at) VALUES ($1, $2, {now}) \
         ON CONFLICT (id) DO NOTHING RETURNING id, display_name, created_at"
    ))
    .arg(project.id.as_str())
    .arg(&project.display_name)
    .fetch_optional(D::exec(conn))
    .await
    .map_err(db("creating a project"))?;
    row.as_ref().map(project_from_row::<D>).transpose()
}

#[async_trait]
impl<D: Db> ProjectStore for SqlStore<D> {
    async fn create(&self, project: NewProject) -> Result<Project, StoreError> {
        let mut w = self.write("creating a project").await?;
        let created = insert_project::<D>(w.conn(), &project).await?;
        w.commit().await?;
        created
            .ok_or_else(|| StoreError::Conflict(format!("project {} already exists", project.id)))
    }

    async fn ensure(&self, project: NewProject) -> Result<Project, StoreError> {
        match ProjectStore::create(self, project.clone()).await {
            Err(StoreError::Conflict(_)) => ProjectStore::get(self, &project.id).await,
            other => other,
        }
    }

    async fn get(&self, id: &ProjectId) -> Result<Project, StoreError> {
        let query = sqlx::query("SELECT id, display_name, created_at FROM projects WHERE id = $1")
            .arg(id.as_str());
        let found = ("project", id.as_str());
        self.find(query, project_from_row::<D>, "reading a project", found)
            .await
    }

    async fn list(&self) -> Result<Vec<Project>, StoreError> {
        let query = sqlx::query("SELECT id, display_name, created_at FROM projects ORDER BY id");
        self.find_all(query, project_from_row::<D>, "listing projects")
            .await
    }

    /// One transaction holding the project row locked, refused while work is queued or
    /// running.
    async fn delete(&self, id: &ProjectId) -> Result<(), StoreError> {
        let context = "deleting a project";
        let mut w = self.transaction(context).await?;
        let exists = sqlx::query(sql!(D, "SELECT id FROM projects WHERE id = $1{for_update}"))
            .arg(id.as_str())
            .fetch_optional(w.exec())
            .await
            .map_err(db(context))?;
        if exists.is_none() {
            return Err(not_found("project", id));
        }
        let active = sqlx::query(
            "SELECT count(*) AS active FROM commands WHERE project_id = $1 \
             AND status IN ('pending', 'running')",
        )
        .arg(id.as_str())
        .fetch_one(w.exec())
        .await
        .map_err(db(context))?;
        let active: i64 = Cols::<D>::new(&active, "commands").get("active")?;
        if active > 0 {
            return Err(StoreError::Conflict(format!(
                "project {id} has {active} pending or running commands"
            )));
        }
        for statement in [
            "DELETE FROM events WHERE stream IN (SELECT id FROM commands WHERE project_id = $1)",
            "DELETE FROM approvals WHERE project_id = $1",
            "DELETE FROM commands WHERE project_id = $1",
            "DELETE FROM approval_policies WHERE project_id = $1",
            "DELETE FROM projects WHERE id = $1",
            "DELETE FROM webhooks WHERE project_id = $1",
        ] {
            sqlx::query(statement)
                .arg(id.as_str())
                .execute(w.exec())
                .await
                .map_err(db(context))?;
        }
        w.commit().await
    }
}
