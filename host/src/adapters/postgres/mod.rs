//! PostgreSQL adapter: production, several rdev replicas on one database. Claims use
//! `FOR UPDATE SKIP LOCKED`; triggers `NOTIFY` on `rdev_work` and `rdev_events` (ids only),
//! cancels and outbox writes on `rdev_cancel` and `rdev_webhooks`, and one listener
//! connection per process turns those into in-process wake-ups.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, Row};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::sql::audit::append_audit;
use super::sql::db::{Notice, executors};
use super::sql::events::event_from_row;
use super::sql::projects::insert_project;
use super::sql::{Db, Signals, SqlStore, db, is_foreign_key_violation};
use super::store::{ConnectError, StoreOptions, fenced, lost, rescue_decision};
use crate::domain::{
    AgentRequest, AgentResult, Claim, CommandFilter, CommandId, CommandRecord, CommandRecords,
    CommandStatus, Heartbeat, Lease, NewCommand, NewProject, Outcome, ProjectId, ProviderName,
    QueueConfig, Rescued, StreamEvent,
};
use crate::ports::{CommandQueue, Enqueued, StoreError, StoredEvent, UnknownProject};

mod dialect;
mod setup;
mod webhooks;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Connections per process: claims, heartbeats and event appends are short statements.
const POOL_SIZE: u32 = 16;
/// Connections the pool opens at start and keeps open. Opening one takes ~90 ms here
/// (sqlx 0.9.0 leaves Nagle's algorithm on, so the start-up exchange waits for delayed
/// ACKs: sqlx issue #4335), which lands on whatever query first needs it: with a cold pool,
/// the first commands a worker claimed waited that long (docs/benchmarks.md, queue p99).
const POOL_WARM: u32 = 6;

/// The advisory lock that serializes audit appends, so the chain never forks.
const AUDIT_LOCK: i64 = 0x7264_6576_6175_6469;

/// Most finishes written in one statement. Each commit costs a WAL flush (and, with the
/// work NOTIFY, holds PostgreSQL's global notify lock), so finishes that arrive while one
/// batch is being written go together in the next.
const FINISH_BATCH: usize = 256;

/// First wait before the listener reconnects; doubles up to the poll fallback.
const LISTEN_RETRY_MIN: Duration = Duration::from_millis(50);

macro_rules! command_columns {
    () => {
        "id, project_id, provider, request, status, idempotency_key, submitted_by, \
         cancel_requested, attempts, result, error, created_at, started_at, finished_at, \
         lease_owner, lease_token, lease_expires_at"
    };
}

impl Db for Postgres {
    type State = PgState;
    const APPEND_IN_ONE_STATEMENT: bool = true;

    executors!(PgConnection);

    /// One statement: the event stored earlier under `key` (a retried append) or a new one
    /// numbered by `commands.event_seq`.
    async fn insert_event(
        conn: &mut PgConnection,
        stream: &CommandId,
        event: &StreamEvent,
        key: Option<&str>,
    ) -> Result<StoredEvent, StoreError> {
        let row = sqlx::query(
            "WITH prior AS (SELECT seq, at, event FROM events \
               WHERE stream = $1 AND append_key = $3), \
             next AS (UPDATE commands SET event_seq = event_seq + 1 \
               WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM prior) RETURNING event_seq), \
             inserted AS (INSERT INTO events (stream, seq, event, append_key) \
               SELECT $1, event_seq, $2, $3 FROM next RETURNING seq, at, event) \
             SELECT seq, at, event FROM inserted UNION ALL SELECT seq, at, event FROM prior",
        )
        .bind(stream.as_str())
        .bind(Json(event))
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db("appending an event"))?;
        let row = row.ok_or_else(|| StoreError::NotFound {
            kind: "command",
            id: stream.to_string(),
        })?;
        event_from_row::<Postgres>(stream, &row)
    }

    fn write_lock(_: &PgState) -> Option<&tokio::sync::Mutex<()>> {
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

    /// Sent at commit to every replica's listener. `Work` needs no statement: the commands
    /// trigger sends it with the status change.
    async fn notify(conn: &mut PgConnection, notice: &Notice) -> Result<(), StoreError> {
        let (channel, payload) = match notice {
            Notice::Work => return Ok(()),
            Notice::Deliveries => ("rdev_webhooks", ""),
            Notice::Cancel(id) => ("rdev_cancel", id.as_str()),
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

fn corrupt(table: &'static str) -> impl Fn(String) -> StoreError {
    move |reason| StoreError::Corrupt { table, reason }
}

/// Applies the embedded migrations.
pub async fn migrate(url: &str) -> Result<(), ConnectError> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .map_err(|e| ConnectError::Connect(e.to_string()))?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| ConnectError::Migrate(e.to_string()))?;
    pool.close().await;
    Ok(())
}

/// Every store over one PostgreSQL database. Cheap to clone.
pub type PgStore = SqlStore<Postgres>;

/// What the PostgreSQL store keeps beside the pool.
pub struct PgState {
    /// Feeds the task that writes finishes in batches; it ends when this is dropped.
    finishes: mpsc::UnboundedSender<FinishJob>,
    /// Stops the listener task when the last clone of the store is dropped.
    _listener: DropGuard,
}

/// One `finish` waiting for the batch writer.
struct FinishJob {
    lease: Lease,
    outcome: Outcome,
    reply: oneshot::Sender<Result<CommandRecord, StoreError>>,
}

impl PgStore {
    /// Connects, migrates and starts the notification listener.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, ConnectError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(POOL_WARM)
            .connect(url)
            .await
            .map_err(|e| ConnectError::Connect(e.to_string()))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| ConnectError::Migrate(e.to_string()))?;
        let retry = options.queue.poll_fallback;
        Self::open(pool, options, |pool, signals| {
            let stop = CancellationToken::new();
            tokio::spawn(listen(pool.clone(), signals.clone(), stop.clone(), retry));
            let (finishes, jobs) = mpsc::unbounded_channel();
            tokio::spawn(write_finishes(pool.clone(), jobs));
            PgState {
                finishes,
                _listener: stop.drop_guard(),
            }
        })
        .await
    }

    fn pool_ref(&self) -> &PgPool {
        &self.inner.pool
    }

    fn lease_secs(&self) -> f64 {
        self.inner.config.lease.as_secs_f64()
    }
}

/// Turns NOTIFYs from any replica into in-process signals; reconnects when the connection
/// drops (backing off from 50 ms up to `retry`, so a restarted server is found again within
/// moments), and wakes every worker after a reconnect since notifications may have been lost.
async fn listen(pool: PgPool, signals: Arc<Signals>, stop: CancellationToken, retry: Duration) {
    let mut backoff = LISTEN_RETRY_MIN;
    while !stop.is_cancelled() {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener
                .listen_all(["rdev_work", "rdev_events", "rdev_cancel", "rdev_webhooks"])
                .await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            () = stop.cancelled() => return,
            result = connected => match result {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "postgres listener cannot connect; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {
                            backoff = (backoff * 2).min(retry.max(LISTEN_RETRY_MIN));
                            continue;
                        }
                    }
                }
            },
        };
        backoff = LISTEN_RETRY_MIN;
        signals.wake_workers();
        signals.wake_dispatchers();
        signals.events.resync_all();
        loop {
            let notification = tokio::select! {
                () = stop.cancelled() => return,
                notification = listener.recv() => notification,
            };
            match notification {
                Ok(n) if n.channel() == "rdev_work" => signals.wake_workers(),
                Ok(n) if n.channel() == "rdev_webhooks" => signals.wake_dispatchers(),
                Ok(n) if n.channel() == "rdev_cancel" => {
                    if let Ok(id) = CommandId::parse(n.payload()) {
                        signals.announce_cancel(id);
                    }
                }
                Ok(n) => {
                    if let Some((stream, seq)) = n.payload().rsplit_once(':')
                        && let Ok(seq) = seq.parse()
                        && let Ok(stream) = CommandId::parse(stream)
                    {
                        signals.events.remote_append(&stream, seq);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "postgres listener lost its connection");
                    break;
                }
            }
        }
    }
}

fn command_from_row(row: &PgRow) -> Result<CommandRecord, StoreError> {
    let bad = corrupt("commands");
    let get_err = |e: sqlx::Error| bad(e.to_string());
    let id: String = row.try_get("id").map_err(get_err)?;
    let project: String = row.try_get("project_id").map_err(get_err)?;
    let provider: String = row.try_get("provider").map_err(get_err)?;
    let status: String = row.try_get("status").map_err(get_err)?;
    let Json(request): Json<AgentRequest> = row.try_get("request").map_err(get_err)?;
    let result: Option<Json<AgentResult>> = row.try_get("result").map_err(get_err)?;
    let attempts: i32 = row.try_get("attempts").map_err(get_err)?;
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
        created_at: row.try_get("created_at").map_err(get_err)?,
        started_at: row.try_get("started_at").map_err(get_err)?,
        finished_at: row.try_get("finished_at").map_err(get_err)?,
    })
}

fn lease_from_row(row: &PgRow, command: &CommandRecord) -> Result<Lease, StoreError> {
    let get_err = |e: sqlx::Error| StoreError::Corrupt {
        table: "commands",
        reason: e.to_string(),
    };
    let owner: Option<String> = row.try_get("lease_owner").map_err(get_err)?;
    let expires: Option<DateTime<Utc>> = row.try_get("lease_expires_at").map_err(get_err)?;
    Ok(Lease {
        command_id: command.id.clone(),
        owner: owner.unwrap_or_default(),
        token: row.try_get("lease_token").map_err(get_err)?,
        expires_at: expires.unwrap_or_default(),
    })
}

/// Inserts a pending command on `conn`; `None` when its idempotency key is taken in its
/// project, `NotFound` for an unknown project.
async fn insert_command(
    conn: &mut PgConnection,
    id: &CommandId,
    command: &NewCommand,
) -> Result<Option<CommandRecord>, StoreError> {
    let inserted = sqlx::query(concat!(
        "INSERT INTO commands (id, project_id, provider, request, status, idempotency_key, \
         submitted_by) VALUES ($1, $2, $3, $4, 'pending', $5, $6) \
         ON CONFLICT (project_id, idempotency_key) DO NOTHING RETURNING ",
        command_columns!()
    ))
    .bind(id.as_str())
    .bind(command.project_id.as_str())
    .bind(command.provider.as_str())
    .bind(Json(&command.request))
    .bind(&command.idempotency_key)
    .bind(&command.submitted_by)
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

impl PgStore {
    /// The command an earlier enqueue with `command`'s idempotency key created.
    async fn command_of_key(&self, command: &NewCommand) -> Result<Enqueued, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            command_columns!(),
            " FROM commands WHERE project_id = $1 AND idempotency_key = $2"
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
/// transaction: the stream event first, then the audit entry, whose advisory lock is thus
/// held for the shortest time. Returns the stored event for the fan-out, to publish after
/// the commit.
async fn write_records(
    conn: &mut PgConnection,
    stream: &CommandId,
    records: CommandRecords,
) -> Result<Option<StoredEvent>, StoreError> {
    let event = match &records.event {
        Some(event) => Some(<Postgres as Db>::insert_event(&mut *conn, stream, event, None).await?),
        None => None,
    };
    append_audit::<Postgres>(conn, records.audit, None).await?;
    Ok(event)
}

#[async_trait]
impl CommandQueue for PgStore {
    fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    async fn enqueue(&self, command: NewCommand) -> Result<Enqueued, StoreError> {
        let id = CommandId::from_uuid(uuid::Uuid::now_v7());
        let mut conn = self
            .pool_ref()
            .acquire()
            .await
            .map_err(db("enqueueing a command"))?;
        match insert_command(&mut conn, &id, &command).await? {
            Some(command) => Ok(Enqueued {
                command,
                created: true,
            }),
            None => self.command_of_key(&command).await,
        }
    }

    /// One transaction; its commit sends the work NOTIFY (commands trigger) and the event's
    /// NOTIFY (events trigger) together.
    async fn submit(
        &self,
        command: NewCommand,
        project: UnknownProject,
    ) -> Result<Enqueued, StoreError> {
        let id = CommandId::from_uuid(uuid::Uuid::now_v7());
        let publish = self.inner.signals.events.begin_append(&id);
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
            insert_project::<Postgres>(&mut tx, &new).await?;
        }
        let Some(record) = insert_command(&mut tx, &id, &command).await? else {
            // An idempotency-key replay: the project existed, nothing was written.
            drop(tx);
            return self.command_of_key(&command).await;
        };
        let event = write_records(&mut tx, &id, record.enqueued_records()).await?;
        tx.commit().await.map_err(db("submitting a command"))?;
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
            " FROM commands WHERE id = $1"
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
            " FROM commands WHERE ($1::text IS NULL OR project_id = $1) \
             AND ($2::text IS NULL OR status = $2) ORDER BY seq DESC LIMIT $3"
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
        Ok(self.claim_batch(owner, 1).await?.pop())
    }

    /// One statement for the whole batch. A command is runnable when fewer than the limit
    /// of its project's commands are ahead of it (pending) or running; both counts stop at
    /// the limit, so a deep backlog costs no more than a short one. Rows another claimer has
    /// locked still count as pending ahead, which keeps each project's order across replicas.
    ///
    /// The claim commits without waiting for its WAL flush (`synchronous_commit = off`): a
    /// claim lost in a server crash leaves the command pending, and the worker learns it at
    /// `mark_started`, which is durable and, like every lease write here, fenced by owner as
    /// well as token, so a later claimer that drew the same token is never mistaken for it.
    async fn claim_batch(&self, owner: &str, max: usize) -> Result<Vec<Claim>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let limit = self.inner.config.max_running_per_project.map(i64::from);
        // `set_config(…, true)` lasts until the end of this statement's own transaction, so
        // the claim is one round trip.
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
        .bind(self.lease_secs())
        .bind(limit)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(self.pool_ref())
        .await
        .map_err(db("claiming commands"))?;
        rows.iter()
            .map(|row| {
                let command = command_from_row(row)?;
                let lease = lease_from_row(row, &command)?;
                Ok(Claim { command, lease })
            })
            .collect()
    }

    async fn mark_started(&self, lease: &Lease, idempotent: bool) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE commands SET process_started = true, idempotent = $3 \
             WHERE id = $1 AND lease_token = $2 AND lease_owner = $4 AND status = 'running'",
        )
        .bind(lease.command_id.as_str())
        .bind(lease.token)
        .bind(idempotent)
        .bind(&lease.owner)
        .execute(self.pool_ref())
        .await
        .map_err(db("marking a command started"))?;
        fenced(done.rows_affected(), lease)
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<Heartbeat, StoreError> {
        let row = sqlx::query(
            "UPDATE commands SET lease_expires_at = now() + make_interval(secs => $3) \
             WHERE id = $1 AND lease_token = $2 AND lease_owner = $4 AND status = 'running' \
             RETURNING cancel_requested, lease_expires_at",
        )
        .bind(lease.command_id.as_str())
        .bind(lease.token)
        .bind(self.lease_secs())
        .bind(&lease.owner)
        .fetch_optional(self.pool_ref())
        .await
        .map_err(db("extending a lease"))?;
        let row = row.ok_or_else(|| lost(lease))?;
        Ok(Heartbeat {
            cancel_requested: row
                .try_get("cancel_requested")
                .map_err(db("reading a lease"))?,
            expires_at: row
                .try_get("lease_expires_at")
                .map_err(db("reading a lease"))?,
        })
    }

    /// Handed to the batch writer (`write_finishes`): alone when the queue is quiet, together
    /// with every finish that arrived meanwhile when it is busy.
    async fn finish(&self, lease: &Lease, outcome: Outcome) -> Result<CommandRecord, StoreError> {
        CommandStatus::Running.check_transition(outcome.status)?;
        let (reply, answer) = oneshot::channel();
        let job = FinishJob {
            lease: lease.clone(),
            outcome,
            reply,
        };
        let stopped = || StoreError::backend("finishing a command", "the batch writer stopped");
        self.inner.state.finishes.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn cancel(&self, id: &CommandId, actor: &str) -> Result<CommandRecord, StoreError> {
        let mut tx = self
            .pool_ref()
            .begin()
            .await
            .map_err(db("cancelling a command"))?;
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM commands WHERE id = $1 FOR UPDATE")
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
        let sql = if status == CommandStatus::Pending {
            concat!(
                "UPDATE commands SET status = 'cancelled', cancel_requested = true, \
                 finished_at = now(), error = 'cancelled before it started' WHERE id = $1 RETURNING ",
                command_columns!()
            )
        } else {
            concat!(
                "UPDATE commands SET cancel_requested = true WHERE id = $1 RETURNING ",
                command_columns!()
            )
        };
        let row = sqlx::query(sql)
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("cancelling a command"))?;
        if status == CommandStatus::Running {
            // Delivered at commit to every replica's listener, the running one's included.
            sqlx::query("SELECT pg_notify('rdev_cancel', $1)")
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db("announcing a cancel"))?;
        }
        let record = command_from_row(&row)?;
        webhooks::emit_for_command(&mut tx, &record).await?;
        let event = write_records(&mut tx, id, record.cancel_records(actor)).await?;
        tx.commit().await.map_err(db("cancelling a command"))?;
        if let (Some(publish), Some(event)) = (publish, event) {
            publish.publish(&event);
        }
        Ok(record)
    }

    async fn rescue_expired(&self) -> Result<Vec<Rescued>, StoreError> {
        let mut tx = self
            .pool_ref()
            .begin()
            .await
            .map_err(db("rescuing leases"))?;
        let rows = sqlx::query(
            "SELECT id, project_id, process_started, idempotent, cancel_requested FROM commands \
             WHERE status = 'running' AND lease_expires_at < now() FOR UPDATE SKIP LOCKED",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db("rescuing leases"))?;
        let mut rescued = Vec::with_capacity(rows.len());
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
            let error = (status != CommandStatus::Pending).then_some(reason);
            let row = sqlx::query(concat!(
                "UPDATE commands SET status = $2, error = $3, lease_owner = NULL, \
                 lease_expires_at = NULL, \
                 finished_at = CASE WHEN $2 = 'pending' THEN NULL ELSE now() END \
                 WHERE id = $1 RETURNING ",
                command_columns!()
            ))
            .bind(&id)
            .bind(status.as_str())
            .bind(error)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("rescuing leases"))?;
            webhooks::emit_for_command(&mut tx, &command_from_row(&row)?).await?;
            let bad = corrupt("commands");
            rescued.push(Rescued {
                command_id: CommandId::parse(id).map_err(|e| bad(e.to_string()))?,
                project_id: ProjectId::parse(project).map_err(|e| bad(e.to_string()))?,
                status,
                reason: reason.to_owned(),
            });
        }
        tx.commit().await.map_err(db("rescuing leases"))?;
        Ok(rescued)
    }

    fn work_signal(&self) -> watch::Receiver<u64> {
        self.inner.signals.work.subscribe()
    }

    fn cancel_signal(&self) -> broadcast::Receiver<CommandId> {
        self.inner.signals.cancels.subscribe()
    }
}

/// Writes finishes in batches until every store clone is dropped: takes what has queued up
/// (at most `FINISH_BATCH`, one per command so each row is fenced once), writes it in one
/// statement and answers each caller. A command named twice waits for the next batch.
async fn write_finishes(pool: PgPool, mut jobs: mpsc::UnboundedReceiver<FinishJob>) {
    let mut waiting: Vec<FinishJob> = Vec::new();
    loop {
        if waiting.is_empty() {
            match jobs.recv().await {
                Some(job) => waiting.push(job),
                None => return,
            }
        }
        while waiting.len() < FINISH_BATCH * 2
            && let Ok(job) = jobs.try_recv()
        {
            waiting.push(job);
        }
        let mut batch = Vec::with_capacity(waiting.len().min(FINISH_BATCH));
        let mut later = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for job in waiting.drain(..) {
            if batch.len() < FINISH_BATCH && ids.insert(job.lease.command_id.clone()) {
                batch.push(job);
            } else {
                later.push(job);
            }
        }
        waiting = later;
        let result = finish_batch(&pool, &batch).await;
        for job in batch {
            let answer = match &result {
                Ok(rows) => rows
                    .iter()
                    .find(|r| r.id == job.lease.command_id)
                    .cloned()
                    .ok_or_else(|| lost(&job.lease)),
                Err(error) => Err(error.clone()),
            };
            let _ = job.reply.send(answer);
        }
    }
}

/// The batch's rows in one UPDATE; each row is written only under its own lease token, and
/// a command missing from the result lost its lease.
async fn finish_batch(
    pool: &PgPool,
    batch: &[FinishJob],
) -> Result<Vec<CommandRecord>, StoreError> {
    let mut ids = Vec::with_capacity(batch.len());
    let mut tokens = Vec::with_capacity(batch.len());
    let mut owners = Vec::with_capacity(batch.len());
    let mut statuses = Vec::with_capacity(batch.len());
    let mut results = Vec::with_capacity(batch.len());
    let mut errors = Vec::with_capacity(batch.len());
    for job in batch {
        ids.push(job.lease.command_id.as_str().to_owned());
        tokens.push(job.lease.token);
        owners.push(job.lease.owner.as_str());
        statuses.push(job.outcome.status.as_str());
        results.push(
            job.outcome
                .result
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::Invalid(e.to_string()))?,
        );
        errors.push(job.outcome.error.clone());
    }
    // The terminal status and its webhook events commit together: a crash cannot lose one.
    let mut tx = pool.begin().await.map_err(db("finishing commands"))?;
    let rows = sqlx::query(concat!(
        "UPDATE commands SET status = f_status, result = f_result::jsonb, error = f_error, \
         finished_at = now(), lease_owner = NULL, lease_expires_at = NULL \
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[]) \
           AS f(f_id, f_token, f_status, f_result, f_error, f_owner) \
         WHERE id = f_id AND lease_token = f_token AND lease_owner = f_owner \
         AND status = 'running' RETURNING ",
        command_columns!()
    ))
    .bind(ids)
    .bind(tokens)
    .bind(statuses)
    .bind(results)
    .bind(errors)
    .bind(owners)
    .fetch_all(&mut *tx)
    .await
    .map_err(db("finishing commands"))?;
    let records = rows
        .iter()
        .map(command_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    for record in &records {
        webhooks::emit_for_command(&mut tx, record).await?;
    }
    tx.commit().await.map_err(db("finishing commands"))?;
    Ok(records)
}
