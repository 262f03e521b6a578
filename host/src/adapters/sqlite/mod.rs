//! SQLite adapter: the embedded default, one rdev process. Writes are serialized by an
//! in-process lock (SQLite has one writer anyway, and this avoids busy errors), single
//! statements make claims atomic, and wake-ups are in-process signals.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use sqlx::types::Json;
use sqlx::{Row, Sqlite, SqliteConnection};
use tokio::sync::{Mutex, broadcast, watch};

use super::sql::audit::append_audit;
use super::sql::db::{Notice, executors};
use super::sql::events::event_from_row;
use super::sql::projects::insert_project;
use super::sql::{Db, SqlStore, db, is_foreign_key_violation};
use super::store::{
    ConnectError, StoreOptions, fenced, from_millis, lost, millis, rescue_decision,
};
use crate::domain::{
    AgentRequest, AgentResult, Claim, CommandFilter, CommandId, CommandRecord, CommandRecords,
    CommandStatus, Heartbeat, Lease, NewCommand, NewProject, Outcome, ProjectId, ProviderName,
    QueueConfig, Rescued, StreamEvent,
};
use crate::ports::{CommandQueue, Enqueued, StoreError, StoredEvent, UnknownProject};

mod dialect;
mod setup;
mod webhooks;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Readers run in parallel in WAL mode; the writer is one at a time.
const POOL_SIZE: u32 = 8;

macro_rules! command_columns {
    () => {
        "id, project_id, provider, request, status, idempotency_key, submitted_by, \
         cancel_requested, attempts, result, error, created_at, started_at, finished_at, \
         lease_owner, lease_token, lease_expires_at"
    };
}

impl Db for Sqlite {
    type State = SqliteState;
    const APPEND_IN_ONE_STATEMENT: bool = false;

    executors!(SqliteConnection);

    /// The event stored earlier under `key`, else the next number from `commands.event_seq`
    /// and the insert (three statements: SQLite has no data-modifying `WITH`).
    async fn insert_event(
        conn: &mut SqliteConnection,
        stream: &CommandId,
        event: &StreamEvent,
        key: Option<&str>,
    ) -> Result<StoredEvent, StoreError> {
        if let Some(key) = key {
            // A retried append whose first attempt did commit: that event, not a second copy.
            let prior = sqlx::query(
                "SELECT seq, at, event FROM events WHERE stream = $1 AND append_key = $2",
            )
            .bind(stream.as_str())
            .bind(key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db("appending an event"))?;
            if let Some(row) = prior {
                return event_from_row::<Sqlite>(stream, &row);
            }
        }
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE commands SET event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq",
        )
        .bind(stream.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db("appending an event"))?;
        let seq = seq.ok_or_else(|| StoreError::NotFound {
            kind: "command",
            id: stream.to_string(),
        })?;
        let at = millis(Utc::now());
        sqlx::query(
            "INSERT INTO events (stream, seq, at, event, append_key) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(stream.as_str())
        .bind(seq)
        .bind(at)
        .bind(Json(event))
        .bind(key)
        .execute(&mut *conn)
        .await
        .map_err(db("appending an event"))?;
        Ok(StoredEvent {
            stream: stream.clone(),
            seq,
            at: from_millis("events", at)?,
            event: event.clone(),
        })
    }

    fn write_lock(state: &SqliteState) -> Option<&Mutex<()>> {
        Some(&state.write)
    }

    /// The caller holds the write lock.
    async fn lock_audit(_: &mut SqliteConnection) -> Result<(), StoreError> {
        Ok(())
    }

    /// Never called: SQLite serves one process, which `Write::commit` wakes directly.
    async fn notify(_: &mut SqliteConnection, _: &Notice) -> Result<(), StoreError> {
        Ok(())
    }
}

fn corrupt(table: &'static str) -> impl Fn(String) -> StoreError {
    move |reason| StoreError::Corrupt { table, reason }
}

async fn open(url: &str, size: u32) -> Result<SqlitePool, ConnectError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| ConnectError::Connect(e.to_string()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    if let Some(parent) = options.get_filename().parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| ConnectError::Connect(format!("{}: {e}", parent.display())))?;
    }
    SqlitePoolOptions::new()
        .max_connections(size)
        .connect_with(options)
        .await
        .map_err(|e| ConnectError::Connect(e.to_string()))
}

/// Applies the embedded migrations.
pub async fn migrate(url: &str) -> Result<(), ConnectError> {
    let pool = open(url, 1).await?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| ConnectError::Migrate(e.to_string()))?;
    pool.close().await;
    Ok(())
}

/// Every store over one SQLite file. Cheap to clone.
pub type SqliteStore = SqlStore<Sqlite>;

/// What the SQLite store keeps beside the pool.
pub struct SqliteState {
    /// Serializes writes: SQLite has one writer anyway, and waiting here avoids busy errors.
    write: Mutex<()>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, ConnectError> {
        let pool = open(url, POOL_SIZE).await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| ConnectError::Migrate(e.to_string()))?;
        Self::open(pool, options, |_, _| SqliteState {
            write: Mutex::new(()),
        })
        .await
    }

    fn pool_ref(&self) -> &SqlitePool {
        &self.inner.pool
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.inner.config.lease.as_millis()).unwrap_or(i64::MAX)
    }
}

fn command_from_row(row: &SqliteRow) -> Result<CommandRecord, StoreError> {
    let bad = corrupt("commands");
    let get_err = |e: sqlx::Error| bad(e.to_string());
    let id: String = row.try_get("id").map_err(get_err)?;
    let project: String = row.try_get("project_id").map_err(get_err)?;
    let provider: String = row.try_get("provider").map_err(get_err)?;
    let status: String = row.try_get("status").map_err(get_err)?;
    let Json(request): Json<AgentRequest> = row.try_get("request").map_err(get_err)?;
    let result: Option<Json<AgentResult>> = row.try_get("result").map_err(get_err)?;
    let attempts: i64 = row.try_get("attempts").map_err(get_err)?;
    let time = |column: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        let value: Option<i64> = row.try_get(column).map_err(get_err)?;
        value.map(|ms| from_millis("commands", ms)).transpose()
    };
    Ok(CommandRecord {
        id: CommandId::parse(id).map_err(|e| bad(e.to_string()))?,
        project_id: ProjectId::parse(project).map_err(|e| bad(e.to_string()))?,
        provider: ProviderName::parse(provider).map_err(|e| bad(e.to_string()))?,
        request,
        status: status
            .parse()
            .map_err(|e: crate::domain::command::UnknownStatus| bad(e.to_string()))?,
        idempotency_key: row.try_get("idempotency_key").map_err(get_err)?,
        submitted_by: row.try_get("submitted_by").map_err(get_err)?,
        cancel_requested: row.try_get("cancel_requested").map_err(get_err)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        result: result.map(|Json(r)| r),
        error: row.try_get("error").map_err(get_err)?,
        created_at: time("created_at")?.unwrap_or_default(),
        started_at: time("started_at")?,
        finished_at: time("finished_at")?,
    })
}

fn lease_from_row(row: &SqliteRow, command: &CommandRecord) -> Result<Lease, StoreError> {
    let bad = corrupt("commands");
    let owner: Option<String> = row.try_get("lease_owner").map_err(|e| bad(e.to_string()))?;
    let expires: Option<i64> = row
        .try_get("lease_expires_at")
        .map_err(|e| bad(e.to_string()))?;
    Ok(Lease {
        command_id: command.id.clone(),
        owner: owner.unwrap_or_default(),
        token: row.try_get("lease_token").map_err(|e| bad(e.to_string()))?,
        expires_at: from_millis("commands", expires.unwrap_or_default())?,
    })
}

/// Inserts a pending command on `conn`; `None` when its idempotency key is taken in its
/// project, `NotFound` for an unknown project. The caller holds the write lock.
async fn insert_command(
    conn: &mut SqliteConnection,
    id: &CommandId,
    command: &NewCommand,
) -> Result<Option<CommandRecord>, StoreError> {
    let inserted = sqlx::query(concat!(
        "INSERT INTO commands (id, project_id, provider, request, status, idempotency_key, \
         submitted_by, created_at) VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7) \
         ON CONFLICT (project_id, idempotency_key) DO NOTHING RETURNING ",
        command_columns!()
    ))
    .bind(id.as_str())
    .bind(command.project_id.as_str())
    .bind(command.provider.as_str())
    .bind(Json(&command.request))
    .bind(&command.idempotency_key)
    .bind(&command.submitted_by)
    .bind(millis(Utc::now()))
    .fetch_optional(&mut *conn)
    .await;
    match inserted {
        Err(error) if is_foreign_key_violation(&error) => Err(StoreError::NotFound {
            kind: "project",
            id: command.project_id.to_string(),
        }),
        other => other
            .map_err(db("enqueueing a command"))?
            .as_ref()
            .map(command_from_row)
            .transpose(),
    }
}

impl SqliteStore {
    /// The command an earlier enqueue with `command`'s idempotency key created.
    async fn command_of_key(&self, command: &NewCommand) -> Result<Enqueued, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            command_columns!(),
            " FROM commands WHERE project_id = ?1 AND idempotency_key = ?2"
        ))
        .bind(command.project_id.as_str())
        .bind(&command.idempotency_key)
        .fetch_one(self.pool_ref())
        .await
        .map_err(db("reading the command of an idempotency key"))?;
        Ok(Enqueued {
            command: command_from_row(&row)?,
            created: false,
        })
    }
}

/// Writes what a command change records (`CommandRecords`) on `conn`, inside the caller's
/// transaction under the write lock. Returns the stored event for the fan-out, to publish
/// after the commit.
async fn write_records(
    conn: &mut SqliteConnection,
    stream: &CommandId,
    records: CommandRecords,
) -> Result<Option<StoredEvent>, StoreError> {
    let event = match &records.event {
        Some(event) => Some(<Sqlite as Db>::insert_event(&mut *conn, stream, event, None).await?),
        None => None,
    };
    append_audit::<Sqlite>(conn, records.audit, None).await?;
    Ok(event)
}

#[async_trait]
impl CommandQueue for SqliteStore {
    fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    async fn enqueue(&self, command: NewCommand) -> Result<Enqueued, StoreError> {
        let id = CommandId::from_uuid(uuid::Uuid::now_v7());
        let write = self.inner.state.write.lock().await;
        let mut conn = self
            .pool_ref()
            .acquire()
            .await
            .map_err(db("enqueueing a command"))?;
        let inserted = insert_command(&mut conn, &id, &command).await;
        drop(conn);
        drop(write);
        match inserted? {
            Some(command) => {
                self.inner.signals.wake_workers();
                Ok(Enqueued {
                    command,
                    created: true,
                })
            }
            None => self.command_of_key(&command).await,
        }
    }

    /// One transaction under the write lock: one commit instead of three (four with the
    /// project registration the API did first).
    async fn submit(
        &self,
        command: NewCommand,
        project: UnknownProject,
    ) -> Result<Enqueued, StoreError> {
        let id = CommandId::from_uuid(uuid::Uuid::now_v7());
        let publish = self.inner.signals.events.begin_append(&id);
        let write = self.inner.state.write.lock().await;
        let mut tx = self
            .pool_ref()
            .begin()
            .await
            .map_err(db("submitting a command"))?;
        if project == UnknownProject::Register {
            let new = NewProject {
                id: command.project_id.clone(),
                display_name: None,
            };
            insert_project::<Sqlite>(&mut tx, &new).await?;
        }
        let Some(record) = insert_command(&mut tx, &id, &command).await? else {
            // An idempotency-key replay: the project existed, nothing was written.
            drop(tx);
            drop(write);
            return self.command_of_key(&command).await;
        };
        let event = write_records(&mut tx, &id, record.enqueued_records()).await?;
        tx.commit().await.map_err(db("submitting a command"))?;
        drop(write);
        self.inner.signals.wake_workers();
        if let Some(event) = event {
            publish.publish(&event);
        }
        Ok(Enqueued {
            command: record,
            created: true,
        })
    }

    async fn get(&self, id: &CommandId) -> Result<CommandRecord, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            command_columns!(),
            " FROM commands WHERE id = ?1"
        ))
        .bind(id.as_str())
        .fetch_optional(self.pool_ref())
        .await
        .map_err(db("reading a command"))?;
        row.map_or_else(
            || {
                Err(StoreError::NotFound {
                    kind: "command",
                    id: id.to_string(),
                })
            },
            |row| command_from_row(&row),
        )
    }

    async fn list(&self, filter: &CommandFilter) -> Result<Vec<CommandRecord>, StoreError> {
        let limit = i64::from(filter.limit.unwrap_or(100).min(1000));
        let rows = sqlx::query(concat!(
            "SELECT ",
            command_columns!(),
            " FROM commands WHERE (?1 IS NULL OR project_id = ?1) \
             AND (?2 IS NULL OR status = ?2) ORDER BY seq DESC LIMIT ?3"
        ))
        .bind(filter.project_id.as_ref().map(ProjectId::as_str))
        .bind(filter.status.map(CommandStatus::as_str))
        .bind(limit)
        .fetch_all(self.pool_ref())
        .await
        .map_err(db("listing commands"))?;
        rows.iter().map(command_from_row).collect()
    }

    async fn claim(&self, owner: &str) -> Result<Option<Claim>, StoreError> {
        let limit = self.inner.config.max_running_per_project.map(i64::from);
        let _write = self.inner.state.write.lock().await;
        // Read the clock under the lock: a claim that waited for a finish's write must not
        // record a start earlier than that finish.
        let now = millis(Utc::now());
        let row = sqlx::query(concat!(
            "UPDATE commands SET status = 'running', lease_owner = ?1, \
             lease_token = lease_token + 1, lease_expires_at = ?2 + ?3, \
             attempts = attempts + 1, process_started = 0, \
             started_at = COALESCE(started_at, ?2) \
             WHERE id = ( \
               SELECT c.id FROM commands c WHERE c.status = 'pending' AND ( \
                 ?4 IS NULL OR ( \
                   NOT EXISTS (SELECT 1 FROM commands e WHERE e.project_id = c.project_id \
                               AND e.status = 'pending' AND e.seq < c.seq) \
                   AND (SELECT count(*) FROM commands r WHERE r.project_id = c.project_id \
                        AND r.status = 'running') < ?4)) \
               ORDER BY c.seq LIMIT 1) \
             AND status = 'pending' RETURNING ",
            command_columns!()
        ))
        .bind(owner)
        .bind(now)
        .bind(self.lease_ms())
        .bind(limit)
        .fetch_optional(self.pool_ref())
        .await
        .map_err(db("claiming a command"))?;
        let Some(row) = row else { return Ok(None) };
        let command = command_from_row(&row)?;
        let lease = lease_from_row(&row, &command)?;
        Ok(Some(Claim { command, lease }))
    }

    async fn mark_started(&self, lease: &Lease, idempotent: bool) -> Result<(), StoreError> {
        let _write = self.inner.state.write.lock().await;
        let done = sqlx::query(
            "UPDATE commands SET process_started = 1, idempotent = ?3 \
             WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
        )
        .bind(lease.command_id.as_str())
        .bind(lease.token)
        .bind(idempotent)
        .execute(self.pool_ref())
        .await
        .map_err(db("marking a command started"))?;
        fenced(done.rows_affected(), lease)
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<Heartbeat, StoreError> {
        let _write = self.inner.state.write.lock().await;
        let expires = millis(Utc::now()) + self.lease_ms();
        let row = sqlx::query(
            "UPDATE commands SET lease_expires_at = ?3 \
             WHERE id = ?1 AND lease_token = ?2 AND status = 'running' \
             RETURNING cancel_requested",
        )
        .bind(lease.command_id.as_str())
        .bind(lease.token)
        .bind(expires)
        .fetch_optional(self.pool_ref())
        .await
        .map_err(db("extending a lease"))?;
        let row = row.ok_or_else(|| lost(lease))?;
        Ok(Heartbeat {
            cancel_requested: row
                .try_get("cancel_requested")
                .map_err(db("reading a lease"))?,
            expires_at: from_millis("commands", expires)?,
        })
    }

    async fn finish(&self, lease: &Lease, outcome: Outcome) -> Result<CommandRecord, StoreError> {
        CommandStatus::Running.check_transition(outcome.status)?;
        let write = self.inner.state.write.lock().await;
        let mut tx = self
            .pool_ref()
            .begin()
            .await
            .map_err(db("finishing a command"))?;
        let row = sqlx::query(concat!(
            "UPDATE commands SET status = ?3, result = ?4, error = ?5, finished_at = ?6, \
             lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = ?1 AND lease_token = ?2 AND status = 'running' RETURNING ",
            command_columns!()
        ))
        .bind(lease.command_id.as_str())
        .bind(lease.token)
        .bind(outcome.status.as_str())
        .bind(outcome.result.as_ref().map(Json))
        .bind(&outcome.error)
        .bind(millis(Utc::now()))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("finishing a command"))?;
        let record = command_from_row(&row.ok_or_else(|| lost(lease))?)?;
        let queued = webhooks::emit_for_command(&mut tx, &record).await?;
        tx.commit().await.map_err(db("finishing a command"))?;
        drop(write);
        self.inner.signals.wake_workers();
        if queued > 0 {
            self.inner.signals.wake_dispatchers();
        }
        Ok(record)
    }

    async fn cancel(&self, id: &CommandId, actor: &str) -> Result<CommandRecord, StoreError> {
        let write = self.inner.state.write.lock().await;
        let mut tx = self
            .pool_ref()
            .begin()
            .await
            .map_err(db("cancelling a command"))?;
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM commands WHERE id = ?1")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("cancelling a command"))?;
        let status: CommandStatus = status
            .ok_or_else(|| StoreError::NotFound {
                kind: "command",
                id: id.to_string(),
            })?
            .parse()
            .map_err(
                |e: crate::domain::command::UnknownStatus| StoreError::Corrupt {
                    table: "commands",
                    reason: e.to_string(),
                },
            )?;
        status.check_transition(CommandStatus::Cancelled)?;
        // A pending command's stream gets its `done` event in this transaction.
        let publish =
            (status == CommandStatus::Pending).then(|| self.inner.signals.events.begin_append(id));
        // A running command only gets the flag; its finish time stays unset.
        let finished = (status == CommandStatus::Pending).then(|| millis(Utc::now()));
        let row = sqlx::query(concat!(
            "UPDATE commands SET cancel_requested = 1, \
             status = CASE WHEN ?2 IS NULL THEN status ELSE 'cancelled' END, \
             finished_at = ?2, \
             error = CASE WHEN ?2 IS NULL THEN error ELSE 'cancelled before it started' END \
             WHERE id = ?1 RETURNING ",
            command_columns!()
        ))
        .bind(id.as_str())
        .bind(finished)
        .fetch_one(&mut *tx)
        .await
        .map_err(db("cancelling a command"))?;
        let record = command_from_row(&row)?;
        let queued = webhooks::emit_for_command(&mut tx, &record).await?;
        let event = write_records(&mut tx, id, record.cancel_records(actor)).await?;
        tx.commit().await.map_err(db("cancelling a command"))?;
        drop(write);
        if queued > 0 {
            self.inner.signals.wake_dispatchers();
        }
        if let (Some(publish), Some(event)) = (publish, event) {
            publish.publish(&event);
        }
        if record.status == CommandStatus::Running {
            self.inner.signals.announce_cancel(record.id.clone());
        }
        Ok(record)
    }

    async fn rescue_expired(&self) -> Result<Vec<Rescued>, StoreError> {
        let write = self.inner.state.write.lock().await;
        let now = millis(Utc::now());
        let mut tx = self
            .pool_ref()
            .begin()
            .await
            .map_err(db("rescuing leases"))?;
        let rows = sqlx::query(
            "SELECT id, project_id, process_started, idempotent, cancel_requested FROM commands \
             WHERE status = 'running' AND lease_expires_at < ?1",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("rescuing leases"))?;
        let mut rescued = Vec::with_capacity(rows.len());
        let mut queued = 0;
        for row in rows {
            let id: String = row.try_get("id").map_err(db("rescuing leases"))?;
            let project: String = row.try_get("project_id").map_err(db("rescuing leases"))?;
            let started: bool = row
                .try_get("process_started")
                .map_err(db("rescuing leases"))?;
            let idempotent: bool = row.try_get("idempotent").map_err(db("rescuing leases"))?;
            let cancel: bool = row
                .try_get("cancel_requested")
                .map_err(db("rescuing leases"))?;
            let (status, reason) = rescue_decision(cancel, started, idempotent)?;
            let pending = status == CommandStatus::Pending;
            let row = sqlx::query(concat!(
                "UPDATE commands SET status = ?2, error = ?3, lease_owner = NULL, \
                 lease_expires_at = NULL, finished_at = ?4 WHERE id = ?1 RETURNING ",
                command_columns!()
            ))
            .bind(&id)
            .bind(status.as_str())
            .bind((!pending).then_some(reason))
            .bind((!pending).then_some(now))
            .fetch_one(&mut *tx)
            .await
            .map_err(db("rescuing leases"))?;
            queued += webhooks::emit_for_command(&mut tx, &command_from_row(&row)?).await?;
            let bad = corrupt("commands");
            rescued.push(Rescued {
                command_id: CommandId::parse(id).map_err(|e| bad(e.to_string()))?,
                project_id: ProjectId::parse(project).map_err(|e| bad(e.to_string()))?,
                status,
                reason: reason.to_owned(),
            });
        }
        tx.commit().await.map_err(db("rescuing leases"))?;
        drop(write);
        if !rescued.is_empty() {
            self.inner.signals.wake_workers();
        }
        if queued > 0 {
            self.inner.signals.wake_dispatchers();
        }
        Ok(rescued)
    }

    fn work_signal(&self) -> watch::Receiver<u64> {
        self.inner.signals.work.subscribe()
    }

    fn cancel_signal(&self) -> broadcast::Receiver<CommandId> {
        self.inner.signals.cancels.subscribe()
    }
}
