//! SQLite's part of the shared SQL layer (`impl Db for Sqlite`): one claim per statement
//! under the store's write lock (a claim that waited for a finish's write reads the clock
//! after it), the finish that frees the slot, webhook deliveries leased the same way, and
//! the event append in three statements.

use std::time::Duration;

use sqlx::types::Json;
use sqlx::{Sqlite, SqliteConnection};
use tokio::sync::Mutex;

use super::{SqliteState, SqliteStore};
use crate::adapters::sql::columns::{Cols, Span, json};
use crate::adapters::sql::commands::{claim_from_row, command_columns, command_from_row, lost};
use crate::adapters::sql::db::{Notice, executors};
use crate::adapters::sql::dialect::sql;
use crate::adapters::sql::events::event_from_row;
use crate::adapters::sql::outbox::ClaimedRow;
use crate::adapters::sql::usage::record_usage;
use crate::adapters::sql::webhooks::emit_for_command;
use crate::adapters::sql::{Db, db, missing_or_not_running};
use crate::domain::{Claim, CommandId, CommandRecord, DueDelivery, Lease, Outcome, StreamEvent};
use crate::ports::store::claim_one_by_one;
use crate::ports::{StoreError, StoredEvent};

/// The oldest runnable command: pending, no pending command of its project ahead of it,
/// and its project below `max_running_per_project`.
pub(super) async fn claim_one(
    store: &SqliteStore,
    owner: &str,
) -> Result<Option<Claim>, StoreError> {
    let limit = store.inner.config.max_running_per_project.map(i64::from);
    let mut w = store.write("claiming a command").await?;
    let row = sqlx::query(sql!(
        Sqlite,
        concat!(
            "UPDATE commands SET status = 'running', lease_owner = $1, \
             lease_token = lease_token + 1, lease_expires_at = {now} + $2, \
             attempts = attempts + 1, process_started = FALSE, \
             started_at = COALESCE(started_at, {now}) \
             WHERE id = ( \
               SELECT c.id FROM commands c WHERE c.status = 'pending' AND ( \
                 $3 IS NULL OR ( \
                   NOT EXISTS (SELECT 1 FROM commands e WHERE e.project_id = c.project_id \
                               AND e.status = 'pending' AND e.seq < c.seq) \
                   AND (SELECT count(*) FROM commands r WHERE r.project_id = c.project_id \
                        AND r.status = 'running') < $3)) \
               ORDER BY c.seq LIMIT 1) \
             AND status = 'pending' RETURNING ",
            command_columns!()
        )
    ))
    .bind(owner)
    .bind(Span(store.inner.config.lease))
    .bind(limit)
    .fetch_optional(w.exec())
    .await
    .map_err(db("claiming a command"))?;
    w.commit().await?;
    row.as_ref().map(claim_from_row::<Sqlite>).transpose()
}

impl Db for Sqlite {
    type State = SqliteState;
    const APPEND_IN_ONE_STATEMENT: bool = false;
    const BEGIN: &'static str = "BEGIN IMMEDIATE";

    executors!(SqliteConnection);

    fn write_lock(state: &SqliteState) -> Option<&Mutex<()>> {
        Some(&state.write)
    }

    /// The caller holds the write lock.
    async fn lock_audit(_: &mut SqliteConnection) -> Result<(), StoreError> {
        Ok(())
    }

    /// The event stored earlier under `key`, else the next number from `commands.event_seq`
    /// and the insert (three statements: SQLite has no data-modifying `WITH`).
    async fn insert_event(
        conn: &mut SqliteConnection,
        stream: &CommandId,
        event: &StreamEvent,
        key: Option<&str>,
        running_only: bool,
    ) -> Result<StoredEvent, StoreError> {
        let context = "appending an event";
        if let Some(key) = key {
            // A retried append whose first attempt did commit: that event, not a second copy.
            let prior = sqlx::query(
                "SELECT seq, at, event FROM events WHERE stream = $1 AND append_key = $2",
            )
            .bind(stream.as_str())
            .bind(key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db(context))?;
            if let Some(row) = prior {
                return event_from_row::<Sqlite>(stream, &row);
            }
        }
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE commands SET event_seq = event_seq + 1 \
             WHERE id = $1 AND (NOT $2 OR status = 'running') RETURNING event_seq",
        )
        .bind(stream.as_str())
        .bind(running_only)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db(context))?;
        let seq = seq.ok_or_else(|| missing_or_not_running(stream, running_only))?;
        let row = sqlx::query(sql!(
            Sqlite,
            "INSERT INTO events (stream, seq, at, event, append_key) \
             VALUES ($1, $2, {now}, $3, $4) RETURNING at"
        ))
        .bind(stream.as_str())
        .bind(seq)
        .bind(json(event)?)
        .bind(key)
        .fetch_one(&mut *conn)
        .await
        .map_err(db(context))?;
        Ok(StoredEvent {
            stream: stream.clone(),
            seq,
            at: Cols::<Sqlite>::new(&row, "events").time("at")?,
            event: event.clone(),
        })
    }

    /// One claim at a time, each under the write lock.
    async fn claim(store: &SqliteStore, owner: &str, max: usize) -> Result<Vec<Claim>, StoreError> {
        claim_one_by_one(max, || claim_one(store, owner)).await
    }

    /// The terminal status, fenced by the lease token, its webhook events and its usage row
    /// in one transaction; then the workers are woken for the freed slot.
    async fn finish(
        store: &SqliteStore,
        lease: &Lease,
        outcome: Outcome,
    ) -> Result<CommandRecord, StoreError> {
        let context = "finishing a command";
        let mut w = store.transaction(context).await?;
        let row = sqlx::query(sql!(
            Sqlite,
            concat!(
                "UPDATE commands SET status = $3, result = $4, error = $5, finished_at = {now}, \
                 lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = $1 AND lease_token = $2 AND status = 'running' RETURNING ",
                command_columns!()
            )
        ))
        .bind(lease.command_id.as_str())
        .bind(lease.token)
        .bind(outcome.status.as_str())
        .bind(outcome.result.as_ref().map(json).transpose()?)
        .bind(&outcome.error)
        .fetch_optional(w.exec())
        .await
        .map_err(db(context))?;
        let record = command_from_row::<Sqlite>(&row.ok_or_else(|| lost(lease))?)?;
        emit_for_command(&mut w, &record).await?;
        record_usage::<Sqlite>(w.conn(), &record, &outcome.usage).await?;
        w.announce(Notice::Work).await?;
        w.commit().await?;
        Ok(record)
    }

    /// Leases due deliveries with one `UPDATE … RETURNING seq`, then reads them joined with
    /// their webhook (SQLite's `RETURNING` cannot reach another table), in one transaction.
    async fn claim_deliveries(
        store: &SqliteStore,
        owner: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let context = "claiming webhook deliveries";
        let mut w = store.transaction(context).await?;
        let seqs: Vec<i64> = sqlx::query_scalar(sql!(
            Sqlite,
            "UPDATE webhook_deliveries SET lease_owner = $1, lease_expires_at = {now} + $2, \
             attempts = attempts + 1 \
             WHERE seq IN ( \
               SELECT d.seq FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
               WHERE d.status = 'pending' AND d.next_attempt_at <= {now} AND w.enabled \
                 AND (d.lease_expires_at IS NULL OR d.lease_expires_at < {now}) \
               ORDER BY d.next_attempt_at, d.seq LIMIT $3) \
             RETURNING seq"
        ))
        .bind(owner)
        .bind(Span(lease))
        .bind(i64::from(limit))
        .fetch_all(w.exec())
        .await
        .map_err(db(context))?;
        let rows: Vec<ClaimedRow> = sqlx::query_as(
            "SELECT d.seq, d.event_id, d.webhook_id, d.project_id, d.event_type, d.payload, \
             d.attempts, w.url, w.sealed_secret \
             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.seq IN (SELECT value FROM json_each($1)) \
             ORDER BY d.next_attempt_at, d.seq",
        )
        .bind(Json(&seqs))
        .fetch_all(w.exec())
        .await
        .map_err(db(context))?;
        w.commit().await?;
        rows.into_iter().map(|row| row.into_due(owner)).collect()
    }

    /// Never called: SQLite serves one process, which `Write::commit` wakes directly.
    async fn notify(_: &mut SqliteConnection, _: &Notice) -> Result<(), StoreError> {
        Ok(())
    }
}
