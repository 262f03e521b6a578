//! One write: SQLite's single-writer lock where the database has one, a connection or a
//! transaction, and what the write announces at its commit (`NOTIFY` sent inside the
//! transaction on PostgreSQL; the store's in-process wake-ups after the commit on SQLite).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Executor, Pool, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use super::db::{Db, Notice};
use super::signals::Signals;
use crate::ports::StoreError;

enum Conn<D: Db> {
    Single(PoolConnection<D>),
    Transaction(Transaction<'static, D>),
}

/// A write in progress. Dropped without [`Write::commit`], its transaction rolls back and
/// nothing is announced.
pub struct Write<'s, D: Db> {
    // Field order is drop order: the transaction ends before the lock is released.
    conn: Conn<D>,
    announced: Vec<Notice>,
    signals: &'s Arc<Signals>,
    context: &'static str,
    /// When the write got its lock and connection, to report writes that hold them long.
    started: Instant,
    _lock: Option<MutexGuard<'s, ()>>,
}

/// A write waiting or holding longer than this is logged: on SQLite every other write of
/// the process waits behind it.
const SLOW_WRITE: Duration = Duration::from_secs(1);

impl<'s, D: Db> Write<'s, D> {
    /// Takes `lock` (if any), then a connection; in a transaction when `transaction`.
    /// `context` names the operation in errors.
    pub async fn begin(
        pool: &Pool<D>,
        signals: &'s Arc<Signals>,
        lock: Option<&'s Mutex<()>>,
        transaction: bool,
        context: &'static str,
    ) -> Result<Self, StoreError> {
        let asked = Instant::now();
        let lock = match lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let locked = asked.elapsed();
        let error = |e| StoreError::backend(context, e);
        let conn = if transaction {
            Conn::Transaction(pool.begin_with(D::BEGIN).await.map_err(error)?)
        } else {
            Conn::Single(pool.acquire().await.map_err(error)?)
        };
        let waited = asked.elapsed();
        if waited >= SLOW_WRITE {
            tracing::warn!(
                context,
                lock_wait_ms = locked.as_millis() as u64,
                connection_wait_ms = (waited - locked).as_millis() as u64,
                idle_connections = pool.num_idle(),
                "a database write waited long to begin"
            );
        }
        Ok(Self {
            conn,
            announced: Vec::new(),
            signals,
            context,
            started: Instant::now(),
            _lock: lock,
        })
    }

    /// The connection (inside the transaction, if any).
    pub fn conn(&mut self) -> &mut D::Connection {
        match &mut self.conn {
            Conn::Single(conn) => conn,
            Conn::Transaction(tx) => tx,
        }
    }

    /// The connection as an executor.
    pub fn exec(&mut self) -> impl Executor<'_, Database = D> {
        D::exec(self.conn())
    }

    /// Announces `notice` when this write commits: a notification inside the transaction
    /// where other processes share the database, else this process's wake-up after the
    /// commit.
    pub async fn announce(&mut self, notice: Notice) -> Result<(), StoreError> {
        if D::NOTIFIES {
            D::notify(self.conn(), &notice).await
        } else {
            self.announced.push(notice);
            Ok(())
        }
    }

    /// Commits (when a transaction), releases the lock and wakes this process's waiters
    /// for what was announced.
    pub async fn commit(self) -> Result<(), StoreError> {
        let Self {
            conn,
            announced,
            signals,
            context,
            started,
            _lock,
        } = self;
        match conn {
            Conn::Transaction(tx) => tx
                .commit()
                .await
                .map_err(|e| StoreError::backend(context, e))?,
            Conn::Single(conn) => drop(conn),
        }
        drop(_lock);
        let held = started.elapsed();
        if held >= SLOW_WRITE {
            tracing::warn!(
                context,
                held_ms = held.as_millis() as u64,
                "a database write held its connection long"
            );
        }
        for notice in announced {
            signals.wake(notice);
        }
        Ok(())
    }
}
