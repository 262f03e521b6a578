//! The durable work queue (`commands`). Claims and finishes are each database's own
//! (`Db::claim`, `Db::finish`: `SKIP LOCKED` batches and a batched finish writer on
//! PostgreSQL, one claim at a time under the write lock on SQLite); the rest is here.

use async_trait::async_trait;
use tokio::sync::{broadcast, watch};

use super::approvals::expire_pending_of;
use super::columns::{Cols, Span, json};
use super::commands::{
    command_columns, command_from_row, fenced, insert_command, lost, rescue_decision, write_records,
};
use super::db::{Arg, Notice, RowsAffected};
use super::dialect::sql;
use super::projects::insert_project;
use super::webhooks::emit_for_command;
use super::{Db, SqlStore, db, not_found};
use crate::domain::{
    Claim, CommandCursor, CommandFilter, CommandId, CommandRecord, CommandStatus, Heartbeat, Lease,
    NewCommand, NewProject, Outcome, ProjectId, Provenance, QueueConfig, Rescued,
};
use crate::ports::{CommandQueue, Enqueued, StoreError, UnknownProject};

impl<D: Db> SqlStore<D> {
    /// The command an earlier enqueue with `command`'s idempotency key created.
    async fn command_of_key(&self, command: &NewCommand) -> Result<Enqueued, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            command_columns!(),
            " FROM commands WHERE project_id = $1 AND idempotency_key = $2"
        ))
        .arg(command.project_id.as_str())
        .arg(&command.idempotency_key)
        .fetch_one(self.exec())
        .await
        .map_err(db("reading the command of an idempotency key"))?;
        Ok(Enqueued {
            command: command_from_row::<D>(&row)?,
            created: false,
        })
    }

    /// The status of command `id` in `w`'s transaction (locked on PostgreSQL).
    async fn locked_status(
        w: &mut super::Write<'_, D>,
        id: &CommandId,
    ) -> Result<CommandStatus, StoreError> {
        let row = sqlx::query(sql!(
            D,
            "SELECT status FROM commands WHERE id = $1{for_update}"
        ))
        .arg(id.as_str())
        .fetch_optional(w.exec())
        .await
        .map_err(db("cancelling a command"))?;
        let row = row.ok_or_else(|| not_found("command", id))?;
        Cols::<D>::new(&row, "commands").parse("status", |s| s.parse::<CommandStatus>())
    }
}

#[async_trait]
impl<D: Db> CommandQueue for SqlStore<D> {
    fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    async fn enqueue(&self, command: NewCommand) -> Result<Enqueued, StoreError> {
        let id = CommandId::from_uuid(uuid::Uuid::now_v7());
        let mut w = self.write("enqueueing a command").await?;
        let Some(record) = insert_command::<D>(w.conn(), &id, &command).await? else {
            drop(w);
            return self.command_of_key(&command).await;
        };
        w.announce(Notice::Work).await?;
        w.commit().await?;
        Ok(Enqueued {
            command: record,
            created: true,
        })
    }

    /// One transaction (one commit instead of three, four with the project's registration),
    /// which announces the work and the stream's first event together.
    async fn submit(
        &self,
        command: NewCommand,
        project: UnknownProject,
    ) -> Result<Enqueued, StoreError> {
        let id = CommandId::from_uuid(uuid::Uuid::now_v7());
        let publish = self.inner.signals.events.begin_append(&id);
        let mut w = self.transaction("submitting a command").await?;
        if project == UnknownProject::Register {
            let new = NewProject {
                id: command.project_id.clone(),
                display_name: None,
            };
            insert_project::<D>(w.conn(), &new).await?;
        }
        let Some(record) = insert_command::<D>(w.conn(), &id, &command).await? else {
            // An idempotency-key replay: the project existed, nothing was written.
            drop(w);
            return self.command_of_key(&command).await;
        };
        let event = write_records::<D>(w.conn(), &id, record.enqueued_records()).await?;
        w.announce(Notice::Work).await?;
        w.commit().await?;
        if let Some(event) = event {
            publish.publish(&event);
        }
        Ok(Enqueued {
            command: record,
            created: true,
        })
    }

    async fn get(&self, id: &CommandId) -> Result<CommandRecord, StoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            command_columns!(),
            " FROM commands WHERE id = $1"
        ))
        .arg(id.as_str());
        let found = ("command", id.as_str());
        self.find(query, command_from_row::<D>, "reading a command", found)
            .await
    }

    async fn list(&self, filter: &CommandFilter) -> Result<Vec<CommandRecord>, StoreError> {
        let page = self.list_page(filter).await?;
        Ok(page.into_iter().map(|(command, _)| command).collect())
    }

    /// Keyset paging on `seq` (unique, so equal timestamps never split a page wrongly)
    /// through the `(project_id, seq DESC)` index both databases have. Only the filters
    /// given are in the statement: a `$1 IS NULL OR …` term would hide the index and the
    /// `seq` range from SQLite's planner, which then steps over every newer row.
    async fn list_page(
        &self,
        filter: &CommandFilter,
    ) -> Result<Vec<(CommandRecord, CommandCursor)>, StoreError> {
        let limit = i64::from(filter.limit.unwrap_or(100).min(1000));
        let mut conditions = Vec::new();
        let mut placeholder = |column: &str, operator: &str| {
            conditions.push(format!("{column} {operator} ${}", conditions.len() + 1));
        };
        if filter.project_id.is_some() {
            placeholder("project_id", "=");
        }
        if filter.status.is_some() {
            placeholder("status", "=");
        }
        if filter.before.is_some() {
            placeholder("seq", "<");
        }
        let statement = format!(
            concat!(
                "SELECT seq, ",
                command_columns!(),
                " FROM commands {} ORDER BY seq DESC LIMIT ${}"
            ),
            if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            },
            conditions.len() + 1
        );
        // Safe: built from the literals above only; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
        if let Some(project) = &filter.project_id {
            query = query.arg(project.as_str());
        }
        if let Some(status) = filter.status {
            query = query.arg(status.as_str());
        }
        if let Some(before) = filter.before {
            query = query.arg(before.seq());
        }
        let rows = query
            .arg(limit)
            .fetch_all(self.exec())
            .await
            .map_err(db("listing commands"))?;
        rows.iter()
            .map(|row| {
                let seq: i64 = Cols::<D>::new(row, "commands").get("seq")?;
                Ok((command_from_row::<D>(row)?, CommandCursor::from_seq(seq)))
            })
            .collect()
    }

    async fn claim(&self, owner: &str) -> Result<Option<Claim>, StoreError> {
        Ok(D::claim(self, owner, 1).await?.pop())
    }

    async fn claim_batch(&self, owner: &str, max: usize) -> Result<Vec<Claim>, StoreError> {
        D::claim(self, owner, max).await
    }

    async fn mark_started(
        &self,
        lease: &Lease,
        idempotent: bool,
        provenance: &Provenance,
    ) -> Result<(), StoreError> {
        let context = "marking a command started";
        let mut w = self.write(context).await?;
        let done = sqlx::query(
            "UPDATE commands SET process_started = TRUE, idempotent = $3, provenance = $5 \
             WHERE id = $1 AND lease_token = $2 AND lease_owner = $4 AND status = 'running'",
        )
        .arg(lease.command_id.as_str())
        .arg(lease.token)
        .arg(idempotent)
        .arg(lease.owner.as_str())
        .arg(json(provenance)?)
        .execute(w.exec())
        .await
        .map_err(db(context))?;
        w.commit().await?;
        fenced(done.rows_affected(), lease)
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<Heartbeat, StoreError> {
        let mut w = self.write("extending a lease").await?;
        let row = sqlx::query(sql!(
            D,
            "UPDATE commands SET lease_expires_at = {now} + $3 \
             WHERE id = $1 AND lease_token = $2 AND lease_owner = $4 AND status = 'running' \
             RETURNING cancel_requested, lease_expires_at"
        ))
        .arg(lease.command_id.as_str())
        .arg(lease.token)
        .arg(Span(self.inner.config.lease))
        .arg(lease.owner.as_str())
        .fetch_optional(w.exec())
        .await
        .map_err(db("extending a lease"))?;
        w.commit().await?;
        let row = row.ok_or_else(|| lost(lease))?;
        let cols = Cols::<D>::new(&row, "commands");
        Ok(Heartbeat {
            cancel_requested: cols.get("cancel_requested")?,
            expires_at: cols.time("lease_expires_at")?,
        })
    }

    async fn finish(&self, lease: &Lease, outcome: Outcome) -> Result<CommandRecord, StoreError> {
        CommandStatus::Running.check_transition(outcome.status)?;
        D::finish(self, lease, outcome).await
    }

    async fn cancel(&self, id: &CommandId, actor: &str) -> Result<CommandRecord, StoreError> {
        let mut w = self.transaction("cancelling a command").await?;
        let status = Self::locked_status(&mut w, id).await?;
        status.check_transition(CommandStatus::Cancelled)?;
        let pending = status == CommandStatus::Pending;
        // A pending command's stream gets its `done` event in this transaction; a running
        // one only gets the flag, and its finish time stays unset.
        let publish = pending.then(|| self.inner.signals.events.begin_append(id));
        let statement = if pending {
            sql!(
                D,
                concat!(
                    "UPDATE commands SET status = 'cancelled', cancel_requested = TRUE, \
                     finished_at = {now}, error = 'cancelled before it started' \
                     WHERE id = $1 RETURNING ",
                    command_columns!()
                )
            )
        } else {
            concat!(
                "UPDATE commands SET cancel_requested = TRUE WHERE id = $1 RETURNING ",
                command_columns!()
            )
        };
        let row = sqlx::query(statement)
            .arg(id.as_str())
            .fetch_one(w.exec())
            .await
            .map_err(db("cancelling a command"))?;
        let record = command_from_row::<D>(&row)?;
        if status == CommandStatus::Running {
            // Every replica hears it, the one running the command included.
            w.announce(Notice::Cancel(id.clone())).await?;
        }
        emit_for_command(&mut w, &record).await?;
        let event = write_records::<D>(w.conn(), id, record.cancel_records(actor)).await?;
        w.commit().await?;
        if let (Some(publish), Some(event)) = (publish, event) {
            publish.publish(&event);
        }
        Ok(record)
    }

    async fn rescue_expired(&self) -> Result<Vec<Rescued>, StoreError> {
        let context = "rescuing leases";
        let mut w = self.transaction(context).await?;
        let rows = sqlx::query(sql!(
            D,
            "SELECT id, project_id, process_started, idempotent, cancel_requested FROM commands \
             WHERE status = 'running' AND lease_expires_at < {now}{skip_locked}"
        ))
        .fetch_all(w.exec())
        .await
        .map_err(db(context))?;
        let mut rescued = Vec::with_capacity(rows.len());
        for row in &rows {
            let cols = Cols::<D>::new(row, "commands");
            let id = cols.parse("id", CommandId::parse)?;
            let (status, reason) = rescue_decision(
                cols.get("cancel_requested")?,
                cols.get("process_started")?,
                cols.get("idempotent")?,
            )?;
            let row = sqlx::query(sql!(
                D,
                concat!(
                    "UPDATE commands SET status = $2, error = $3, lease_owner = NULL, \
                     lease_expires_at = NULL, \
                     finished_at = CASE WHEN $2 = 'pending' THEN NULL ELSE {now} END \
                     WHERE id = $1 RETURNING ",
                    command_columns!()
                )
            ))
            .arg(id.as_str())
            .arg(status.as_str())
            .arg((status != CommandStatus::Pending).then_some(reason))
            .fetch_one(w.exec())
            .await
            .map_err(db(context))?;
            emit_for_command(&mut w, &command_from_row::<D>(&row)?).await?;
            expire_pending_of::<D>(w.conn(), &id).await?;
            rescued.push(Rescued {
                command_id: id,
                project_id: cols.parse("project_id", ProjectId::parse)?,
                status,
                reason: reason.to_owned(),
            });
        }
        if !rescued.is_empty() {
            w.announce(Notice::Work).await?;
        }
        w.commit().await?;
        Ok(rescued)
    }

    fn work_signal(&self) -> watch::Receiver<u64> {
        self.inner.signals.work.subscribe()
    }

    fn cancel_signal(&self) -> broadcast::Receiver<CommandId> {
        self.inner.signals.cancels.subscribe()
    }
}
