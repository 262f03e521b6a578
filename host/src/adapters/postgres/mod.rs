//! PostgreSQL: production, several rdev replicas on one database. The shared SQL layer
//! (`adapters/sql/`) runs on it with what only PostgreSQL does: claims with
//! `FOR UPDATE SKIP LOCKED` (`db.rs`), finishes written in batches (`finish.rs`), audit
//! appends under an advisory lock, and `NOTIFY`: triggers send `rdev_work` and
//! `rdev_events` (ids only), writes send `rdev_cancel` and `rdev_webhooks`, and one listener
//! connection per process turns them into in-process wake-ups (`listen.rs`).

use sqlx::Postgres;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::sql::SqlStore;
use super::store::{ConnectError, StoreOptions};

mod db;
mod dialect;
mod finish;
mod listen;

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

/// A pool on `url` made with `options`, the embedded migrations applied.
async fn migrated(url: &str, options: PgPoolOptions) -> Result<PgPool, ConnectError> {
    let pool = options.connect(url).await.map_err(ConnectError::connect)?;
    MIGRATOR.run(&pool).await.map_err(ConnectError::migrate)?;
    Ok(pool)
}

/// Applies the embedded migrations.
pub async fn migrate(url: &str) -> Result<(), ConnectError> {
    let options = PgPoolOptions::new().max_connections(1);
    migrated(url, options).await?.close().await;
    Ok(())
}

/// Every store over one PostgreSQL database. Cheap to clone.
pub type PgStore = SqlStore<Postgres>;

/// What the PostgreSQL store keeps beside the pool.
pub struct PgState {
    /// Feeds the task that writes finishes in batches; it ends when this is dropped.
    finishes: mpsc::UnboundedSender<finish::FinishJob>,
    /// Stops the listener task when the last clone of the store is dropped.
    _listener: DropGuard,
}

impl PgStore {
    /// Connects, migrates and starts the notification listener and the finish writer.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, ConnectError> {
        let options_pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(POOL_WARM);
        let pool = migrated(url, options_pool).await?;
        let retry = options.queue.poll_fallback;
        Self::open(pool, options, |pool, signals| {
            let stop = CancellationToken::new();
            let listener = listen::listen(pool.clone(), signals.clone(), stop.clone(), retry);
            tokio::spawn(listener);
            let (finishes, jobs) = mpsc::unbounded_channel();
            tokio::spawn(finish::write_finishes(pool.clone(), signals.clone(), jobs));
            PgState {
                finishes,
                _listener: stop.drop_guard(),
            }
        })
        .await
    }
}
