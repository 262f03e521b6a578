//! Choosing the database by URL: `connect` opens the stores of the one a URL names
//! (`postgres://…` or `sqlite://…`), `migrate` only applies its migrations. The stores
//! themselves are the SQL layer (`adapters/sql/`). The master key and fan-out constants are
//! re-exported here, where callers have always found them.

use crate::domain::{MasterKey, QueueConfig};
use crate::ports::Stores;

pub use super::event_fanout::{EVENT_FANOUT_CAPACITY, SUBSCRIPTION_PAGE};
pub use super::master_key::{KeyFile, MASTER_KEY_ENV, load_master_key, staged_key};
pub use super::sql::signals::CANCEL_FANOUT_CAPACITY;

/// Which database and how the queue behaves.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub queue: QueueConfig,
    pub master_key: MasterKey,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("database URL must start with postgres:// or sqlite:// (got scheme {0:?})")]
    UnknownScheme(String),
    #[error("could not connect to the database: {0}")]
    Connect(String),
    #[error("could not apply migrations: {0}")]
    Migrate(String),
    #[error("master key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("{MASTER_KEY_ENV} is not a base64-encoded 32-byte key")]
    KeyEnv,
}

impl ConnectError {
    pub(crate) fn connect(error: impl std::fmt::Display) -> Self {
        Self::Connect(error.to_string())
    }

    pub(crate) fn migrate(error: impl std::fmt::Display) -> Self {
        Self::Migrate(error.to_string())
    }
}

fn scheme(url: &str) -> &str {
    url.split_once(':').map_or(url, |(scheme, _)| scheme)
}

/// Opens the database named by `url` (`postgres://…` or `sqlite://…`), applies pending
/// migrations and returns every store over it.
pub async fn connect(url: &str, options: StoreOptions) -> Result<Stores, ConnectError> {
    match scheme(url) {
        "postgres" | "postgresql" => {
            let store = super::postgres::PgStore::connect(url, options).await?;
            Ok(store.stores())
        }
        "sqlite" => {
            let store = super::sqlite::SqliteStore::connect(url, options).await?;
            Ok(store.stores())
        }
        other => Err(ConnectError::UnknownScheme(other.to_owned())),
    }
}

/// Applies pending migrations only (`rdev migrate`). Returns the adapter's name.
pub async fn migrate(url: &str) -> Result<&'static str, ConnectError> {
    match scheme(url) {
        "postgres" | "postgresql" => {
            super::postgres::migrate(url).await?;
            Ok("postgres")
        }
        "sqlite" => {
            super::sqlite::migrate(url).await?;
            Ok("sqlite")
        }
        other => Err(ConnectError::UnknownScheme(other.to_owned())),
    }
}
