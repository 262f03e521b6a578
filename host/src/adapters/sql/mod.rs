//! The SQL layer both databases share: one store type, [`SqlStore`], generic over the
//! database ([`Db`]), with one module per port it implements. Statements and row mapping
//! are written once; what truly differs (claims, notifications, the finish writer, locks)
//! is each database's `Db` implementation in `adapters/postgres/` and `adapters/sqlite/`.
//! docs/storage.md ("Adding a table") shows how a new table joins.

use std::sync::Arc;

use arc_swap::ArcSwap;
use sqlx::query::Query;
use sqlx::{Executor, Pool};

use db::RowsAffected;

use super::store::{ConnectError, StoreOptions};
use crate::domain::{CommandId, MasterKey, ProjectId, QueueConfig};
use crate::ports::{StoreError, Stores};

pub(crate) mod approvals;
pub(crate) mod audit;
mod changes;
pub(crate) mod columns;
pub(crate) mod commands;
mod credentials;
pub(crate) mod db;
pub(crate) mod dialect;
pub(crate) mod events;
mod mcp;
mod network;
pub(crate) mod outbox;
pub(crate) mod projects;
mod queue;
mod sessions;
mod setup;
pub(crate) mod signals;
mod tokens;
pub(crate) mod usage;
pub(crate) mod webhooks;
mod write;

pub(crate) use db::Db;
use events::fetch_events;
pub(crate) use signals::Signals;
use webhooks::seal_secrets;
pub(crate) use write::Write;

/// Every store over one database. Cheap to clone.
pub struct SqlStore<D: Db> {
    pub(crate) inner: Arc<Inner<D>>,
}

impl<D: Db> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

pub(crate) struct Inner<D: Db> {
    pub pool: Pool<D>,
    pub config: QueueConfig,
    pub signals: Arc<Signals>,
    pub key: ArcSwap<MasterKey>,
    pub state: D::State,
}

impl<D: Db> SqlStore<D> {
    /// The store over `pool`, already migrated. First seals the plaintext webhook secrets
    /// migration 0050 left (idempotent: SQL cannot encrypt with the operator's key); `state`
    /// makes this database's part of the store from the pool and the store's wake-ups.
    pub(crate) async fn open(
        pool: Pool<D>,
        options: StoreOptions,
        state: impl FnOnce(&Pool<D>, &Arc<Signals>) -> D::State,
    ) -> Result<Self, ConnectError> {
        let sealing = ConnectError::migrate;
        let context = "sealing webhook secrets";
        let mut tx = pool
            .begin_with(D::BEGIN)
            .await
            .map_err(|e| sealing(db(context)(e)))?;
        seal_secrets::<D>(&mut tx, None, &options.master_key)
            .await
            .map_err(sealing)?;
        tx.commit().await.map_err(|e| sealing(db(context)(e)))?;
        let signals = Signals::new(fetch_events(pool.clone()));
        let state = state(&pool, &signals);
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config: options.queue,
                signals,
                key: ArcSwap::from_pointee(options.master_key),
                state,
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
            approvals: Arc::new(self.clone()),
            network: Arc::new(self.clone()),
            mcp: Arc::new(self.clone()),
            sessions: Arc::new(self.clone()),
            usage: Arc::new(self.clone()),
            changes: Arc::new(self.clone()),
        }
    }

    /// The connection pool, for tests and benchmarks that inspect rows directly.
    pub fn pool(&self) -> &Pool<D> {
        &self.inner.pool
    }

    /// The pool as an executor: one statement on whichever connection is free.
    pub(crate) fn exec(&self) -> impl Executor<'_, Database = D> {
        D::on_pool(&self.inner.pool)
    }

    /// A write of one or more statements on one connection, not in a transaction.
    pub(crate) async fn write(&self, context: &'static str) -> Result<Write<'_, D>, StoreError> {
        self.begin_write(false, context).await
    }

    /// A write in a transaction.
    pub(crate) async fn transaction(
        &self,
        context: &'static str,
    ) -> Result<Write<'_, D>, StoreError> {
        self.begin_write(true, context).await
    }

    /// The row `query` finds on the pool, read by `from_row`, or `NotFound` for the `kind`
    /// of row named `id`. `context` names the operation in errors.
    pub(crate) async fn find<T>(
        &self,
        query: Query<'_, D, D::Arguments>,
        from_row: fn(&D::Row) -> Result<T, StoreError>,
        context: &'static str,
        (kind, id): (&'static str, &str),
    ) -> Result<T, StoreError> {
        self.find_optional(query, from_row, context)
            .await?
            .ok_or_else(|| not_found(kind, id))
    }

    /// The row `query` finds on the pool, read by `from_row`, if there is one.
    pub(crate) async fn find_optional<T>(
        &self,
        query: Query<'_, D, D::Arguments>,
        from_row: fn(&D::Row) -> Result<T, StoreError>,
        context: &'static str,
    ) -> Result<Option<T>, StoreError> {
        let row = query
            .fetch_optional(self.exec())
            .await
            .map_err(db(context))?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every row `query` finds on the pool, read by `from_row`.
    pub(crate) async fn find_all<T>(
        &self,
        query: Query<'_, D, D::Arguments>,
        from_row: fn(&D::Row) -> Result<T, StoreError>,
        context: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let rows = query.fetch_all(self.exec()).await.map_err(db(context))?;
        rows.iter().map(from_row).collect()
    }

    /// Runs `query`, which removes at most one row, as a write of its own; whether it removed
    /// one.
    pub(crate) async fn remove(
        &self,
        query: Query<'_, D, D::Arguments>,
        context: &'static str,
    ) -> Result<bool, StoreError> {
        let mut w = self.write(context).await?;
        let done = query.execute(w.exec()).await.map_err(db(context))?;
        w.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Runs `query`, which stores one setting of `project` and returns its row, as a write of
    /// its own; `NotFound` when the project does not exist (the row's foreign key).
    pub(crate) async fn put_for_project<T>(
        &self,
        query: Query<'_, D, D::Arguments>,
        from_row: fn(&D::Row) -> Result<T, StoreError>,
        context: &'static str,
        project: &ProjectId,
    ) -> Result<T, StoreError> {
        let mut w = self.write(context).await?;
        let row = match query.fetch_one(w.exec()).await {
            Err(error) if is_foreign_key_violation(&error) => {
                return Err(not_found("project", project));
            }
            other => other.map_err(db(context))?,
        };
        w.commit().await?;
        from_row(&row)
    }

    /// Runs `query`, which changes one row, as a write of its own; `NotFound` for the `kind`
    /// of row named `id` when it changed none.
    pub(crate) async fn change_one(
        &self,
        query: Query<'_, D, D::Arguments>,
        context: &'static str,
        (kind, id): (&'static str, &str),
    ) -> Result<(), StoreError> {
        let mut w = self.write(context).await?;
        let done = query.execute(w.exec()).await.map_err(db(context))?;
        w.commit().await?;
        if done.rows_affected() == 0 {
            return Err(not_found(kind, id));
        }
        Ok(())
    }

    async fn begin_write(
        &self,
        transaction: bool,
        context: &'static str,
    ) -> Result<Write<'_, D>, StoreError> {
        let inner = &*self.inner;
        let lock = D::write_lock(&inner.state);
        Write::begin(&inner.pool, &inner.signals, lock, transaction, context).await
    }
}

/// Wraps a database error with the operation that failed.
pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| StoreError::backend(context, error)
}

/// `NotFound` for the `kind` (a project, a command …) named `id`.
pub(crate) fn not_found(kind: &'static str, id: impl ToString) -> StoreError {
    StoreError::NotFound {
        kind,
        id: id.to_string(),
    }
}

/// Why a conditional append wrote nothing: the command is missing, or with `running_only`
/// it is not (or no longer) running.
pub(crate) fn missing_or_not_running(stream: &CommandId, running_only: bool) -> StoreError {
    if running_only {
        StoreError::Conflict(format!("command {stream} is not running"))
    } else {
        not_found("command", stream)
    }
}

/// Like [`db`], but an insert that breaks a unique key is a `Conflict`: the `what` (a token,
/// a session) already exists.
pub(crate) fn db_unique(
    context: &'static str,
    what: &'static str,
) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| {
        let unique = error
            .as_database_error()
            .is_some_and(|e| e.kind() == sqlx::error::ErrorKind::UniqueViolation);
        if unique {
            StoreError::Conflict(format!("the {what} already exists"))
        } else {
            StoreError::backend(context, error)
        }
    }
}

pub(crate) fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.kind() == sqlx::error::ErrorKind::ForeignKeyViolation)
}
