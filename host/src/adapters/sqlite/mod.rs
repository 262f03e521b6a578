//! SQLite: the embedded default, one rdev process. The shared SQL layer (`adapters/sql/`)
//! runs on it with what SQLite does its own way: writes serialized by an in-process lock
//! (SQLite has one writer anyway, and waiting here avoids busy errors), claims one command
//! at a time in single statements (`db.rs`), wake-ups as in-process signals after each
//! commit.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tokio::sync::Mutex;

use super::sql::SqlStore;
use super::store::{ConnectError, StoreOptions};

mod db;
mod dialect;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Readers run in parallel in WAL mode; the writer is one at a time.
const POOL_SIZE: u32 = 8;

/// Every store over one SQLite file. Cheap to clone.
pub type SqliteStore = SqlStore<Sqlite>;

/// What the SQLite store keeps beside the pool.
pub struct SqliteState {
    /// Serializes writes: SQLite has one writer anyway, and waiting here avoids busy errors.
    write: Mutex<()>,
}

/// A pool of `size` connections on the file `url` names (created, with its directory, if
/// missing), the embedded migrations applied.
async fn migrated(url: &str, size: u32) -> Result<SqlitePool, ConnectError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(ConnectError::connect)?
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
    let pool = SqlitePoolOptions::new()
        .max_connections(size)
        .connect_with(options)
        .await
        .map_err(ConnectError::connect)?;
    MIGRATOR.run(&pool).await.map_err(ConnectError::migrate)?;
    Ok(pool)
}

/// Applies the embedded migrations.
pub async fn migrate(url: &str) -> Result<(), ConnectError> {
    migrated(url, 1).await?.close().await;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, ConnectError> {
        let pool = migrated(url, POOL_SIZE).await?;
        Self::open(pool, options, |_, _| SqliteState {
            write: Mutex::new(()),
        })
        .await
    }
}
