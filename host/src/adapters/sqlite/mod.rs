//! SQLite adapter: the embedded default, one rdev process. Writes are serialized by an
//! in-process lock (SQLite has one writer anyway, and this avoids busy errors), single
//! statements make claims atomic, and wake-ups are in-process signals.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use sqlx::types::Json;
use sqlx::{Row, SqliteConnection};
use tokio::sync::{Mutex, broadcast, watch};

use super::event_fanout::{FetchEvents, SUBSCRIPTION_PAGE, follow};
use super::store::{
    ConnectError, Signals, StoreOptions, fenced, from_millis, lost, millis, nonce, rescue_decision,
    verify_chain,
};
use crate::domain::{
    AgentRequest, AgentResult, AuditEntry, Claim, CommandFilter, CommandId, CommandRecord,
    CommandRecords, CommandStatus, CredentialName, Heartbeat, Lease, MasterKey, NewAuditEntry,
    NewCommand, NewProject, Outcome, Project, ProjectId, ProviderName, QueueConfig, Redactor,
    Rescued, StreamEvent, audit::GENESIS_HASH,
};
use crate::ports::{
    AuditLog, AuditVerification, CommandQueue, CredentialInfo, CredentialStore, Enqueued, EventLog,
    EventSubscription, ProjectStore, SecretError, SecretResolver, SecretValue, StoreError,
    StoredEvent, Stores, UnknownProject,
};

mod setup;
mod tokens;
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

fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| StoreError::backend(context, error)
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
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    config: QueueConfig,
    signals: Arc<Signals>,
    key: ArcSwap<MasterKey>,
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
        // Plaintext webhook secrets from before migration 0050 are sealed here (idempotent).
        let sealing = |e: StoreError| ConnectError::Migrate(e.to_string());
        let mut tx = pool
            .begin()
            .await
            .map_err(|e| sealing(StoreError::backend("sealing webhook secrets", e)))?;
        webhooks::seal_secrets(&mut tx, None, &options.master_key)
            .await
            .map_err(sealing)?;
        tx.commit()
            .await
            .map_err(|e| sealing(StoreError::backend("sealing webhook secrets", e)))?;
        let signals = Signals::new(fetch_events(pool.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config: options.queue,
                signals,
                key: ArcSwap::from_pointee(options.master_key),
                write: Mutex::new(()),
            }),
        })
    }

    /// The same store behind each port.
    pub fn stores(&self) -> Stores {
        Stores {
            projects: Arc::new(self.clone()),
            queue: Arc::new(self.clone()),
            events: Arc::new(self.clone()),
            audit: Arc::new(self.clone()),
            credentials: Arc::new(self.clone()),
            setups: Arc::new(self.clone()),
            tokens: Arc::new(self.clone()),
            webhooks: Arc::new(self.clone()),
        }
    }

    /// The connection pool, for tests that inspect rows directly.
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
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

fn project_from_row(row: &SqliteRow) -> Result<Project, StoreError> {
    let bad = corrupt("projects");
    let id: String = row.try_get("id").map_err(|e| bad(e.to_string()))?;
    let created: i64 = row.try_get("created_at").map_err(|e| bad(e.to_string()))?;
    Ok(Project {
        id: ProjectId::parse(id).map_err(|e| bad(e.to_string()))?,
        display_name: row
            .try_get("display_name")
            .map_err(|e| bad(e.to_string()))?,
        created_at: from_millis("projects", created)?,
    })
}

fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.kind() == sqlx::error::ErrorKind::ForeignKeyViolation)
}

/// Registers `project` on `conn` unless its id is taken (then `None`), so a submission can
/// register its project in its own transaction. The caller holds the write lock.
pub(super) async fn insert_project(
    conn: &mut SqliteConnection,
    project: &NewProject,
) -> Result<Option<Project>, StoreError> {
    let row = sqlx::query(
        "INSERT INTO projects (id, display_name, created_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (id) DO NOTHING RETURNING id, display_name, created_at",
    )
    .bind(project.id.as_str())
    .bind(&project.display_name)
    .bind(millis(Utc::now()))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db("creating a project"))?;
    row.as_ref().map(project_from_row).transpose()
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
        Some(event) => Some(insert_event(&mut *conn, stream, event, None).await?),
        None => None,
    };
    append_audit(conn, records.audit, None).await?;
    Ok(event)
}

#[async_trait]
impl ProjectStore for SqliteStore {
    async fn create(&self, project: NewProject) -> Result<Project, StoreError> {
        let _write = self.inner.write.lock().await;
        let mut conn = self
            .pool_ref()
            .acquire()
            .await
            .map_err(db("creating a project"))?;
        insert_project(&mut conn, &project)
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("project {} already exists", project.id)))
    }

    async fn ensure(&self, project: NewProject) -> Result<Project, StoreError> {
        match ProjectStore::create(self, project.clone()).await {
            Err(StoreError::Conflict(_)) => ProjectStore::get(self, &project.id).await,
            other => other,
        }
    }

    async fn get(&self, id: &ProjectId) -> Result<Project, StoreError> {
        let row = sqlx::query("SELECT id, display_name, created_at FROM projects WHERE id = ?1")
            .bind(id.as_str())
            .fetch_optional(self.pool_ref())
            .await
            .map_err(db("reading a project"))?;
        row.map_or_else(
            || {
                Err(StoreError::NotFound {
                    kind: "project",
                    id: id.to_string(),
                })
            },
            |row| project_from_row(&row),
        )
    }

    async fn list(&self) -> Result<Vec<Project>, StoreError> {
        let rows = sqlx::query("SELECT id, display_name, created_at FROM projects ORDER BY id")
            .fetch_all(self.pool_ref())
            .await
            .map_err(db("listing projects"))?;
        rows.iter().map(project_from_row).collect()
    }
    async fn delete(&self, id: &ProjectId) -> Result<(), StoreError> {
        self.delete_project(id).await
    }
}

#[async_trait]
impl CommandQueue for SqliteStore {
    fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    async fn enqueue(&self, command: NewCommand) -> Result<Enqueued, StoreError> {
        let id = CommandId::from_uuid(uuid::Uuid::now_v7());
        let write = self.inner.write.lock().await;
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
        let write = self.inner.write.lock().await;
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
            insert_project(&mut tx, &new).await?;
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
        let _write = self.inner.write.lock().await;
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
        let _write = self.inner.write.lock().await;
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
        let _write = self.inner.write.lock().await;
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
        let write = self.inner.write.lock().await;
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
        let write = self.inner.write.lock().await;
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
        let write = self.inner.write.lock().await;
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

fn event_from_row(stream: &CommandId, row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    let bad = corrupt("events");
    let Json(event): Json<StreamEvent> = row.try_get("event").map_err(|e| bad(e.to_string()))?;
    let at: i64 = row.try_get("at").map_err(|e| bad(e.to_string()))?;
    Ok(StoredEvent {
        stream: stream.clone(),
        seq: row.try_get("seq").map_err(|e| bad(e.to_string()))?,
        at: from_millis("events", at)?,
        event,
    })
}

/// Up to `limit` events of `stream` after `after`; shared by `EventLog::read` and the
/// fan-out's fetch.
async fn read_events(
    pool: &SqlitePool,
    stream: &CommandId,
    after: i64,
    limit: u32,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, at, event FROM events WHERE stream = ?1 AND seq > ?2 \
         ORDER BY seq LIMIT ?3",
    )
    .bind(stream.as_str())
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db("reading events"))?;
    rows.iter().map(|row| event_from_row(stream, row)).collect()
}

/// The fan-out's fetch over the pool (not the store, which owns the fan-out).
fn fetch_events(pool: SqlitePool) -> FetchEvents {
    Arc::new(move |stream, after| {
        let pool = pool.clone();
        Box::pin(async move { read_events(&pool, &stream, after, SUBSCRIPTION_PAGE).await })
    })
}

/// Appends `event` with the stream's next sequence number on `conn`, inside the caller's
/// transaction under the write lock. The caller publishes the result on the fan-out after
/// its commit (`EventHub::begin_append` before the write).
async fn insert_event(
    conn: &mut SqliteConnection,
    stream: &CommandId,
    event: &StreamEvent,
    key: Option<&str>,
) -> Result<StoredEvent, StoreError> {
    if let Some(key) = key {
        // A retried append whose first attempt did commit: that event, not a second copy.
        let prior =
            sqlx::query("SELECT seq, at, event FROM events WHERE stream = ?1 AND append_key = ?2")
                .bind(stream.as_str())
                .bind(key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db("appending an event"))?;
        if let Some(row) = prior {
            return event_from_row(stream, &row);
        }
    }
    let seq: Option<i64> = sqlx::query_scalar(
        "UPDATE commands SET event_seq = event_seq + 1 WHERE id = ?1 RETURNING event_seq",
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
        "INSERT INTO events (stream, seq, at, event, append_key) VALUES (?1, ?2, ?3, ?4, ?5)",
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

impl SqliteStore {
    async fn append_keyed(
        &self,
        stream: &CommandId,
        event: &StreamEvent,
        key: Option<&str>,
    ) -> Result<StoredEvent, StoreError> {
        let publish = self.inner.signals.events.begin_append(stream);
        let write = self.inner.write.lock().await;
        let mut tx = self
            .pool_ref()
            .begin()
            .await
            .map_err(db("appending an event"))?;
        let stored = insert_event(&mut tx, stream, event, key).await?;
        tx.commit().await.map_err(db("appending an event"))?;
        drop(write);
        publish.publish(&stored);
        Ok(stored)
    }
}

#[async_trait]
impl EventLog for SqliteStore {
    async fn append(
        &self,
        stream: &CommandId,
        event: &StreamEvent,
    ) -> Result<StoredEvent, StoreError> {
        self.append_keyed(stream, event, None).await
    }

    async fn append_once(
        &self,
        stream: &CommandId,
        event: &StreamEvent,
        key: &str,
    ) -> Result<StoredEvent, StoreError> {
        self.append_keyed(stream, event, Some(key)).await
    }

    async fn read(
        &self,
        stream: &CommandId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        read_events(self.pool_ref(), stream, after, limit).await
    }

    fn subscribe(&self, stream: &CommandId, after: i64) -> EventSubscription {
        follow(
            self.clone(),
            &self.inner.signals.events,
            stream,
            after,
            self.inner.config.poll_fallback,
        )
    }
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditEntry, StoreError> {
    let bad = corrupt("audit_log");
    let get = |e: sqlx::Error| bad(e.to_string());
    let details: String = row.try_get("details").map_err(get)?;
    let at: String = row.try_get("at").map_err(get)?;
    Ok(AuditEntry {
        seq: row.try_get("seq").map_err(get)?,
        at: DateTime::parse_from_rfc3339(&at)
            .map_err(|e| bad(e.to_string()))?
            .with_timezone(&Utc),
        actor: row.try_get("actor").map_err(get)?,
        action: row.try_get("action").map_err(get)?,
        project_id: row.try_get("project_id").map_err(get)?,
        command_id: row.try_get("command_id").map_err(get)?,
        details: serde_json::from_str(&details).map_err(|e| bad(e.to_string()))?,
        prev_hash: row.try_get("prev_hash").map_err(get)?,
        hash: row.try_get("hash").map_err(get)?,
    })
}

/// Appends an audit entry on `conn` (inside the caller's transaction, under the write lock),
/// so that the webhook outbox can be written in the same transaction as the audit entry.
/// With a `key` already stored, returns that entry instead.
pub(super) async fn append_audit(
    conn: &mut sqlx::SqliteConnection,
    entry: NewAuditEntry,
    key: Option<&str>,
) -> Result<AuditEntry, StoreError> {
    if let Some(key) = key {
        let stored = sqlx::query(select_audit!("WHERE append_key = ?1"))
            .bind(key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db("reading the audit log"))?;
        if let Some(row) = stored {
            return audit_from_row(&row);
        }
    }
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(db("reading the audit log head"))?;
    let (seq, prev) = last.map_or((1, GENESIS_HASH.to_owned()), |(seq, hash)| (seq + 1, hash));
    let sealed = AuditEntry::seal(&prev, seq, Utc::now(), entry);
    let details =
        serde_json::to_string(&sealed.details).map_err(|e| StoreError::Invalid(e.to_string()))?;
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, action, project_id, command_id, details, \
         prev_hash, hash, append_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .bind(sealed.seq)
    .bind(
        sealed
            .at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )
    .bind(&sealed.actor)
    .bind(&sealed.action)
    .bind(&sealed.project_id)
    .bind(&sealed.command_id)
    .bind(details)
    .bind(&sealed.prev_hash)
    .bind(&sealed.hash)
    .bind(key)
    .execute(&mut *conn)
    .await
    .map_err(db("appending to the audit log"))?;
    Ok(sealed)
}

impl SqliteStore {
    async fn append_audit_entry(
        &self,
        entry: NewAuditEntry,
        key: Option<&str>,
    ) -> Result<AuditEntry, StoreError> {
        let _write = self.inner.write.lock().await;
        let mut tx = self
            .pool_ref()
            .begin()
            .await
            .map_err(db("appending to the audit log"))?;
        let sealed = append_audit(&mut tx, entry, key).await?;
        tx.commit()
            .await
            .map_err(db("appending to the audit log"))?;
        Ok(sealed)
    }
}

#[async_trait]
impl AuditLog for SqliteStore {
    async fn append(&self, entry: NewAuditEntry) -> Result<AuditEntry, StoreError> {
        self.append_audit_entry(entry, None).await
    }

    async fn append_once(&self, entry: NewAuditEntry, key: &str) -> Result<AuditEntry, StoreError> {
        self.append_audit_entry(entry, Some(key)).await
    }

    async fn list(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(select_audit!("WHERE seq > ?1 ORDER BY seq LIMIT ?2"))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(self.pool_ref())
            .await
            .map_err(db("reading the audit log"))?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn verify(&self) -> Result<AuditVerification, StoreError> {
        verify_chain(self).await
    }
}

#[async_trait]
impl SecretResolver for SqliteStore {
    async fn resolve(&self, name: &str) -> Result<Option<SecretValue>, SecretError> {
        let Ok(name) = CredentialName::parse(name) else {
            return Ok(None);
        };
        let sealed: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT sealed FROM credentials WHERE name = ?1")
                .bind(name.as_str())
                .fetch_optional(self.pool_ref())
                .await
                .map_err(|e| SecretError::Unavailable(e.to_string()))?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let value = self
            .inner
            .key
            .load()
            .open(&name, &sealed)
            .map_err(|e| SecretError::Unavailable(e.to_string()))?;
        Ok(Some(SecretValue::new(value)))
    }
}

fn credential_from_row(row: &SqliteRow) -> Result<CredentialInfo, StoreError> {
    let bad = corrupt("credentials");
    let name: String = row.try_get("name").map_err(|e| bad(e.to_string()))?;
    let created: i64 = row.try_get("created_at").map_err(|e| bad(e.to_string()))?;
    let updated: i64 = row.try_get("updated_at").map_err(|e| bad(e.to_string()))?;
    Ok(CredentialInfo {
        name: CredentialName::parse(name)?,
        created_at: from_millis("credentials", created)?,
        updated_at: from_millis("credentials", updated)?,
    })
}

#[async_trait]
impl CredentialStore for SqliteStore {
    async fn put(
        &self,
        name: &CredentialName,
        value: &SecretValue,
    ) -> Result<CredentialInfo, StoreError> {
        let key = self.inner.key.load();
        let sealed = key.seal(name, value.expose(), nonce());
        let _write = self.inner.write.lock().await;
        let row = sqlx::query(
            "INSERT INTO credentials (name, sealed, key_fingerprint, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?4) \
             ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, \
             key_fingerprint = excluded.key_fingerprint, updated_at = excluded.updated_at \
             RETURNING name, created_at, updated_at",
        )
        .bind(name.as_str())
        .bind(sealed)
        .bind(key.fingerprint())
        .bind(millis(Utc::now()))
        .fetch_one(self.pool_ref())
        .await
        .map_err(db("storing a credential"))?;
        credential_from_row(&row)
    }

    async fn list(&self) -> Result<Vec<CredentialInfo>, StoreError> {
        let rows =
            sqlx::query("SELECT name, created_at, updated_at FROM credentials ORDER BY name")
                .fetch_all(self.pool_ref())
                .await
                .map_err(db("listing credentials"))?;
        rows.iter().map(credential_from_row).collect()
    }

    async fn delete(&self, name: &CredentialName) -> Result<(), StoreError> {
        let _write = self.inner.write.lock().await;
        let done = sqlx::query("DELETE FROM credentials WHERE name = ?1")
            .bind(name.as_str())
            .execute(self.pool_ref())
            .await
            .map_err(db("deleting a credential"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                kind: "credential",
                id: name.to_string(),
            });
        }
        Ok(())
    }

    async fn rotate_key(&self, new_key: MasterKey) -> Result<u64, StoreError> {
        let old_key = self.inner.key.load_full();
        let _write = self.inner.write.lock().await;
        let mut tx = self
            .pool_ref()
            .begin()
            .await
            .map_err(db("rotating the master key"))?;
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT name, sealed FROM credentials ORDER BY name")
                .fetch_all(&mut *tx)
                .await
                .map_err(db("rotating the master key"))?;
        for (name, sealed) in &rows {
            let name = CredentialName::parse(name.clone())?;
            let value = old_key.open(&name, sealed)?;
            let resealed = new_key.seal(&name, &value, nonce());
            sqlx::query("UPDATE credentials SET sealed = ?2, key_fingerprint = ?3 WHERE name = ?1")
                .bind(name.as_str())
                .bind(resealed)
                .bind(new_key.fingerprint())
                .execute(&mut *tx)
                .await
                .map_err(db("rotating the master key"))?;
        }
        let secrets = webhooks::seal_secrets(&mut tx, Some(&old_key), &new_key).await?;
        tx.commit().await.map_err(db("rotating the master key"))?;
        self.inner.key.store(Arc::new(new_key));
        Ok(rows.len() as u64 + secrets)
    }

    async fn redactor(&self) -> Result<Redactor, StoreError> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT name, sealed FROM credentials")
            .fetch_all(self.pool_ref())
            .await
            .map_err(db("loading credentials for redaction"))?;
        let key = self.inner.key.load();
        let mut values = Vec::with_capacity(rows.len());
        for (name, sealed) in rows {
            let name = CredentialName::parse(name)?;
            values.push(key.open(&name, &sealed)?);
        }
        Ok(Redactor::new(values))
    }
}
