//! PostgreSQL's part of the shared SQL layer (`impl Db for Postgres`): claims across
//! replicas with `FOR UPDATE SKIP LOCKED`, each batch in one statement; the event append
//! as one data-modifying `WITH`; the audit chain's advisory lock; `NOTIFY`.

use std::time::Duration;

use sqlx::types::Json;
use sqlx::{PgConnection, Postgres};
use tokio::sync::Mutex;

use super::{AUDIT_LOCK, PgState, PgStore};
use crate::adapters::sql::commands::{claim_from_row, command_columns};
use crate::adapters::sql::db::{Notice, executors};
use crate::adapters::sql::events::event_from_row;
use crate::adapters::sql::outbox::ClaimedRow;
use crate::adapters::sql::{Db, db, missing_or_not_running};
use crate::domain::{Claim, CommandId, CommandRecord, DueDelivery, Lease, Outcome, StreamEvent};
use crate::ports::{StoreError, StoredEvent};

impl Db for Postgres {
    type State = PgState;
    const APPEND_IN_ONE_STATEMENT: bool = true;
    const BEGIN: &'static str = "BEGIN";

    executors!(PgConnection);

    fn write_lock(_: &PgState) -> Option<&Mutex<()>> {
        None
    }

    async fn lock_audit(conn: &mut PgConnection) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_LOCK)
            .execute(conn)
            .await
            .map_err(db("locking the audit log"))?;
        Ok(())
    }

    /// One statement: the event stored earlier under `key` (a retried append) or a new one
    /// numbered by `commands.event_seq`. The `running_only` check is on the row the
    /// `UPDATE` locks, so it is re-read after a concurrent finish commits.
    async fn insert_event(
        conn: &mut PgConnection,
        stream: &CommandId,
        event: &StreamEvent,
        key: Option<&str>,
        running_only: bool,
    ) -> Result<StoredEvent, StoreError> {
        let row = sqlx::query(
            "WITH prior AS (SELECT seq, at, event FROM events \
               WHERE stream = $1 AND append_key = $3), \
             next AS (UPDATE commands SET event_seq = event_seq + 1 \
               WHERE id = $1 AND (NOT $4 OR status = 'running') \
               AND NOT EXISTS (SELECT 1 FROM prior) RETURNING event_seq), \
             inserted AS (INSERT INTO events (stream, seq, event, append_key) \
               SELECT $1, event_seq, $2, $3 FROM next RETURNING seq, at, event) \
             SELECT seq, at, event FROM inserted UNION ALL SELECT seq, at, event FROM prior",
        )
        .bind(stream.as_str())
        .bind(Json(event))
        .bind(key)
        .bind(running_only)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db("appending an event"))?;
        let row = row.ok_or_else(|| missing_or_not_running(stream, running_only))?;
        event_from_row::<Postgres>(stream, &row)
    }

    /// One statement for the whole batch. A command is runnable when fewer than the limit of
    /// its project's commands are ahead of it (pending) or running; both counts stop at the
    /// limit, so a deep backlog costs no more than a short one. Rows another claimer has locked
    /// still count as pending ahead, which keeps each project's order across replicas.
    ///
    /// The claim commits without waiting for its WAL flush (`synchronous_commit = off`): a claim
    /// lost in a server crash leaves the command pending, and the worker learns it at
    /// `mark_started`, which is durable and, like every lease write, fenced by owner as well as
    /// token, so a later claimer that drew the same token is never mistaken for it.
    async fn claim(store: &PgStore, owner: &str, max: usize) -> Result<Vec<Claim>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let config = &store.inner.config;
        let limit = config.max_running_per_project.map(i64::from);
        // `set_config(…, true)` lasts until the end of this statement's own transaction, so the
        // claim is one round trip.
        let rows = sqlx::query(concat!(
            "WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true)), \
         picked AS ( \
           SELECT c.id AS picked_id FROM commands c CROSS JOIN async_commit \
           WHERE c.status = 'pending' AND ( \
             $3::bigint IS NULL OR ( \
               (SELECT count(*) FROM (SELECT 1 FROM commands e \
                  WHERE e.project_id = c.project_id AND e.status = 'pending' \
                  AND e.seq < c.seq LIMIT $3) ahead) \
               + (SELECT count(*) FROM (SELECT 1 FROM commands r \
                  WHERE r.project_id = c.project_id AND r.status = 'running' \
                  LIMIT $3) busy) < $3)) \
           ORDER BY c.seq LIMIT $4 FOR UPDATE OF c SKIP LOCKED) \
         UPDATE commands SET status = 'running', lease_owner = $1, \
         lease_token = lease_token + 1, lease_expires_at = now() + make_interval(secs => $2), \
         attempts = attempts + 1, process_started = false, \
         started_at = COALESCE(started_at, now()) \
         FROM picked WHERE id = picked_id AND status = 'pending' RETURNING ",
            command_columns!()
        ))
        .bind(owner)
        .bind(config.lease.as_secs_f64())
        .bind(limit)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(store.pool())
        .await
        .map_err(db("claiming commands"))?;
        rows.iter().map(claim_from_row::<Postgres>).collect()
    }

    /// Handed to the batch writer: alone when the queue is quiet, together with every
    /// finish that arrived meanwhile when it is busy.
    async fn finish(
        store: &PgStore,
        lease: &Lease,
        outcome: Outcome,
    ) -> Result<CommandRecord, StoreError> {
        super::finish::finish(store, lease, outcome).await
    }

    /// One statement: the claim and the join with each webhook's URL and sealed secret.
    async fn claim_deliveries(
        store: &PgStore,
        owner: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let rows: Vec<ClaimedRow> = sqlx::query_as(
            "WITH claimed AS ( \
           UPDATE webhook_deliveries SET lease_owner = $1, \
           lease_expires_at = now() + make_interval(secs => $2), attempts = attempts + 1 \
           WHERE seq IN ( \
             SELECT d.seq FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND w.enabled \
               AND (d.lease_expires_at IS NULL OR d.lease_expires_at < now()) \
             ORDER BY d.next_attempt_at, d.seq LIMIT $3 FOR UPDATE OF d SKIP LOCKED) \
           RETURNING seq, event_id, webhook_id, project_id, event_type, payload, attempts, \
             next_attempt_at) \
         SELECT c.seq, c.event_id, c.webhook_id, c.project_id, c.event_type, c.payload, \
           c.attempts::bigint AS attempts, w.url, w.sealed_secret \
         FROM claimed c JOIN webhooks w ON w.id = c.webhook_id \
         ORDER BY c.next_attempt_at, c.seq",
        )
        .bind(owner)
        .bind(lease.as_secs_f64())
        .bind(i64::from(limit))
        .fetch_all(store.pool())
        .await
        .map_err(db("claiming webhook deliveries"))?;
        rows.into_iter().map(|row| row.into_due(owner)).collect()
    }

    /// Sent at commit to every replica's listener. `Work` needs no statement: the commands
    /// trigger sends it with the status change.
    async fn notify(conn: &mut PgConnection, notice: &Notice) -> Result<(), StoreError> {
        let (channel, payload) = match notice {
            Notice::Work => return Ok(()),
            Notice::Deliveries => ("rdev_webhooks", ""),
            Notice::Cancel(id) => ("rdev_cancel", id.as_str()),
            Notice::Decided(id) => ("rdev_approvals", id.as_str()),
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(conn)
            .await
            .map_err(db("notifying other replicas"))?;
        Ok(())
    }
}
