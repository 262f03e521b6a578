//! What the two storage adapters share: choosing one by URL, the master key, in-process
//! wake-ups (the event fan-out itself is `event_fanout`).

use crate::domain::{CommandStatus, HOST_LOST, Lease, MasterKey, QueueConfig};
use crate::ports::{StoreError, Stores};

pub use super::event_fanout::{EVENT_FANOUT_CAPACITY, SUBSCRIPTION_PAGE};
pub use super::master_key::{MASTER_KEY_ENV, load_master_key};
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

/// Milliseconds since the epoch, for the columns SQLite stores as integers.
pub(crate) fn millis(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_millis()
}

/// Reverses [`millis`].
pub(crate) fn from_millis(
    table: &'static str,
    value: i64,
) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    chrono::DateTime::from_timestamp_millis(value).ok_or(StoreError::Corrupt {
        table,
        reason: format!("timestamp {value} out of range"),
    })
}

/// The rescue rule, checked against the state machine: a cancel wins; a command whose
/// process never started (or whose provider is idempotent) is queued again; otherwise it
/// failed because its host was lost.
pub(crate) fn rescue_decision(
    cancel_requested: bool,
    started: bool,
    idempotent: bool,
) -> Result<(CommandStatus, &'static str), StoreError> {
    let decision = if cancel_requested {
        (CommandStatus::Cancelled, "cancelled; its host was lost")
    } else if !started || idempotent {
        CommandStatus::Running.check_requeue()?;
        return Ok((CommandStatus::Pending, "lease expired; queued again"));
    } else {
        (CommandStatus::Failed, HOST_LOST)
    };
    CommandStatus::Running.check_transition(decision.0)?;
    Ok(decision)
}

pub(crate) fn fenced(rows: u64, lease: &Lease) -> Result<(), StoreError> {
    if rows == 1 { Ok(()) } else { Err(lost(lease)) }
}

pub(crate) fn lost(lease: &Lease) -> StoreError {
    StoreError::LeaseLost {
        command: lease.command_id.to_string(),
        token: lease.token,
    }
}
