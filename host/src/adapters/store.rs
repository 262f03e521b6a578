//! What the two storage adapters share: choosing one by URL, the master key, in-process
//! wake-ups (the event fan-out itself is `event_fanout`).

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::event_fanout::{EventHub, FetchEvents};
use crate::domain::ChainVerifier;
use crate::domain::{CommandId, CommandStatus, HOST_LOST, Lease, MasterKey, QueueConfig};
use crate::ports::{AuditLog, AuditVerification, StoreError, Stores};

pub use super::event_fanout::{EVENT_FANOUT_CAPACITY, SUBSCRIPTION_PAGE};

/// Environment variable holding the base64 master key.
pub const MASTER_KEY_ENV: &str = "RDEV_MASTER_KEY";

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

/// The master key from `RDEV_MASTER_KEY`, or else from `key_file`, which is created with a
/// fresh random key and mode 0600 when it does not exist (the embedded default).
pub fn load_master_key(key_file: &Path) -> Result<MasterKey, ConnectError> {
    if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
        return MasterKey::from_base64(&text).map_err(|_| ConnectError::KeyEnv);
    }
    let key_error = |reason: String| ConnectError::KeyFile {
        path: key_file.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(key_file) {
        Ok(text) => MasterKey::from_base64(&text).map_err(|e| key_error(e.to_string())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rand::fill(&mut bytes);
            let key = MasterKey::from_bytes(bytes);
            if let Some(parent) = key_file.parent() {
                std::fs::create_dir_all(parent).map_err(|e| key_error(e.to_string()))?;
            }
            write_private(key_file, key.to_base64().as_bytes())
                .map_err(|e| key_error(e.to_string()))?;
            Ok(key)
        }
        Err(error) => Err(key_error(error.to_string())),
    }
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// A fresh 24-byte nonce from the thread's CSPRNG.
pub(crate) fn nonce() -> [u8; 24] {
    let mut nonce = [0u8; 24];
    rand::fill(&mut nonce);
    nonce
}

/// Capacity of the in-process cancel fan-out; a receiver that lags relies on its heartbeat.
pub const CANCEL_FANOUT_CAPACITY: usize = 256;

/// In-process wake-ups: workers waiting for work, subscribers waiting for events, running
/// commands whose cancel was requested and webhook dispatchers waiting for deliveries.
pub(crate) struct Signals {
    pub work: watch::Sender<u64>,
    pub deliveries: watch::Sender<u64>,
    pub events: Arc<EventHub>,
    pub cancels: broadcast::Sender<CommandId>,
}

impl Signals {
    /// `fetch` reads a stream's events for the hub when another replica announced some.
    pub fn new(fetch: FetchEvents) -> Arc<Self> {
        Arc::new(Self {
            work: watch::channel(0).0,
            deliveries: watch::channel(0).0,
            events: EventHub::new(fetch),
            cancels: broadcast::channel(CANCEL_FANOUT_CAPACITY).0,
        })
    }

    /// Never blocks: with no running worker listening the notice is dropped.
    pub fn announce_cancel(&self, id: CommandId) {
        let _ = self.cancels.send(id);
    }

    pub fn wake_workers(&self) {
        self.work
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// Outbox rows were written (or may have been, after a listener reconnect).
    pub fn wake_dispatchers(&self) {
        self.deliveries
            .send_modify(|generation| *generation = generation.wrapping_add(1));
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

/// Rows fetched per page while verifying the audit chain.
const VERIFY_PAGE: u32 = 1000;

/// Walks the whole audit chain page by page and reports the first broken link; the same
/// walk for every adapter, since only `list` differs between databases.
pub(crate) async fn verify_chain(log: &dyn AuditLog) -> Result<AuditVerification, StoreError> {
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    loop {
        let page = log.list(after, VERIFY_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for entry in &page {
            if let Err(broken) = verifier.check(entry) {
                return Ok(AuditVerification {
                    verified: verifier.checked(),
                    first_broken: Some(broken),
                });
            }
        }
    }
    Ok(AuditVerification {
        verified: verifier.checked(),
        first_broken: None,
    })
}
