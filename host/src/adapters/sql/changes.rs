//! Each command's workspace changes (`command_changes`, migration 0150): the change set as
//! one JSON document, or the reason there is none.

use async_trait::async_trait;

use super::columns::{Cols, json};
use super::db::Arg;
use super::dialect::sql;
use super::{Db, SqlStore, db};
use crate::domain::{ChangeSet, CommandId, ProjectId};
use crate::ports::{ChangesOutcome, ChangesStore, StoreError, StoredChanges};

fn changes_from_row<D: Db>(row: &D::Row) -> Result<StoredChanges, StoreError> {
    let cols = Cols::<D>::new(row, "command_changes");
    let changes: Option<ChangeSet> = cols.json_opt("changes")?;
    let unavailable: Option<String> = cols.get("unavailable")?;
    let outcome = match (changes, unavailable) {
        (Some(set), None) => ChangesOutcome::Recorded(set),
        (None, Some(reason)) => ChangesOutcome::Unavailable(reason),
        _ => return Err(cols.corrupt("exactly one of changes and unavailable must be set")),
    };
    Ok(StoredChanges {
        command_id: cols.parse("command_id", CommandId::parse)?,
        project_id: cols.parse("project_id", ProjectId::parse)?,
        recorded_at: cols.time("recorded_at")?,
        outcome,
    })
}

#[async_trait]
impl<D: Db> ChangesStore for SqlStore<D> {
    async fn record_changes(
        &self,
        command: &CommandId,
        project: &ProjectId,
        outcome: &ChangesOutcome,
    ) -> Result<(), StoreError> {
        let context = "recording a command's workspace changes";
        let (changes, unavailable) = match outcome {
            ChangesOutcome::Recorded(set) => (Some(json(set)?), None),
            ChangesOutcome::Unavailable(reason) => (None, Some(reason.as_str())),
        };
        let mut w = self.write(context).await?;
        sqlx::query(sql!(
            D,
            "INSERT INTO command_changes (command_id, project_id, recorded_at, changes, \
             unavailable) VALUES ($1, $2, {now}, $3, $4) ON CONFLICT (command_id) DO UPDATE \
             SET recorded_at = excluded.recorded_at, changes = excluded.changes, \
             unavailable = excluded.unavailable"
        ))
        .arg(command.as_str())
        .arg(project.as_str())
        .arg(changes)
        .arg(unavailable)
        .execute(w.exec())
        .await
        .map_err(db(context))?;
        w.commit().await
    }

    async fn changes(&self, command: &CommandId) -> Result<Option<StoredChanges>, StoreError> {
        let query = sqlx::query(
            "SELECT command_id, project_id, recorded_at, changes, unavailable \
         FROM command_changes WHERE command_id = $1",
        )
        .arg(command.as_str());
        self.find_optional(
            query,
            changes_from_row::<D>,
            "reading a command's workspace changes",
        )
        .await
    }
}
