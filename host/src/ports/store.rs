//! Persistence ports: projects, the command queue, the event log, the audit trail and the
//! credential store. The PostgreSQL and SQLite adapters implement all of them and pass one
//! contract test suite (`tests/tests/store_contract.rs`).

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use tokio::sync::{broadcast, watch};

use crate::domain::{
    AnchorFailure, AuditCheckpoint, AuditEntry, BrokenLink, Claim, CommandCursor, CommandFilter,
    CommandId, CommandRecord, CredentialName, Heartbeat, Lease, MasterKey, NewAuditEntry,
    NewCommand, NewProject, Outcome, Project, ProjectId, Provenance, QueueConfig, Redactor,
    Rescued, SealError, StreamEvent, TransitionError,
};

use super::secrets::{SecretResolver, SecretValue};

/// Why a storage operation failed. Typed so that the API can map each case to a status code
/// and the worker can tell a lost lease from a broken database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {id:?} does not exist")]
    NotFound { kind: &'static str, id: String },
    #[error("conflict: {0}")]
    Conflict(String),
    #[error(transparent)]
    IllegalTransition(#[from] TransitionError),
    /// The lease expired and the command was rescued or claimed by another worker: the
    /// holder of this (older) fencing token must not write anything more about it.
    #[error("lease on {command} (token {token}) is no longer held")]
    LeaseLost { command: String, token: i64 },
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A stored row could not be decoded.
    #[error("corrupt row in {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
    /// The database failed or is unreachable; `context` names the operation.
    #[error("database error while {context}: {message}")]
    Backend {
        context: &'static str,
        message: String,
    },
}

impl StoreError {
    /// Wraps a backend error with the operation that failed.
    pub fn backend(context: &'static str, error: impl std::fmt::Display) -> Self {
        Self::Backend {
            context,
            message: error.to_string(),
        }
    }
}

/// Registered projects.
#[async_trait]
pub trait ProjectStore: Send + Sync {
    /// Registers a project; `Conflict` when the id is taken.
    async fn create(&self, project: NewProject) -> Result<Project, StoreError>;
    /// Registers the project unless it exists, and returns it either way.
    async fn ensure(&self, project: NewProject) -> Result<Project, StoreError>;
    async fn get(&self, id: &ProjectId) -> Result<Project, StoreError>;
    /// All projects, ordered by id.
    async fn list(&self) -> Result<Vec<Project>, StoreError>;
    /// Removes a project and its finished commands and events. `Conflict` while any of its
    /// commands is pending or running; `NotFound` for an unknown id.
    async fn delete(&self, id: &ProjectId) -> Result<(), StoreError>;
}

/// A new enqueue or the command an earlier enqueue with the same idempotency key created.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    pub command: CommandRecord,
    /// False when the idempotency key matched an existing command.
    pub created: bool,
}

/// What `CommandQueue::submit` does when the command's project is not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownProject {
    /// Registers it (without a display name) in the submission's transaction: the API
    /// registers a project on its first command.
    Register,
    /// Refuses the command with `NotFound`.
    Refuse,
}

/// The durable work queue. Status changes are checked against the domain state machine
/// (`CommandStatus::check_transition`) before anything is written.
#[async_trait]
pub trait CommandQueue: Send + Sync {
    fn config(&self) -> &QueueConfig;

    /// Queues a command behind the project's earlier ones and records nothing else: the bare
    /// queue insert, for queue tests and benchmarks. Submissions use `submit`. `NotFound` for
    /// an unknown project.
    async fn enqueue(&self, command: NewCommand) -> Result<Enqueued, StoreError>;

    /// Queues a command and, in the same transaction, opens its stream with the `pending`
    /// event and appends its `command.enqueued` audit entry (`CommandRecord::enqueued_records`;
    /// with `Register`, the project is registered first), so a crash leaves all of it or
    /// none. An idempotency-key replay returns the earlier command and writes nothing.
    async fn submit(
        &self,
        command: NewCommand,
        project: UnknownProject,
    ) -> Result<Enqueued, StoreError>;

    async fn get(&self, id: &CommandId) -> Result<CommandRecord, StoreError>;

    async fn list(&self, filter: &CommandFilter) -> Result<Vec<CommandRecord>, StoreError>;

    /// [`CommandQueue::list`] with each command's cursor, for a caller that pages on: the
    /// next page is the same filter with `before` the last command's cursor.
    async fn list_page(
        &self,
        filter: &CommandFilter,
    ) -> Result<Vec<(CommandRecord, CommandCursor)>, StoreError>;

    /// Takes the oldest runnable command: pending, first of its project, and its project
    /// below `max_running_per_project`. Moves it to `running` under a fresh lease for `owner`.
    /// Never hands one command to two claimers.
    async fn claim(&self, owner: &str) -> Result<Option<Claim>, StoreError>;

    /// Takes up to `max` runnable commands under the same rules as `claim`, so a worker with
    /// several free slots fills them in one round trip where the adapter can (PostgreSQL);
    /// the default claims one at a time. Claims made before an error are still returned.
    async fn claim_batch(&self, owner: &str, max: usize) -> Result<Vec<Claim>, StoreError> {
        claim_one_by_one(max, || self.claim(owner)).await
    }

    /// Records that the provider is about to run. Before this, an expired lease puts the
    /// command back in the queue; after it, the command fails with "host lost" unless
    /// `idempotent` (the provider declared re-running safe). `provenance` records the build
    /// that runs it.
    async fn mark_started(
        &self,
        lease: &Lease,
        idempotent: bool,
        provenance: &Provenance,
    ) -> Result<(), StoreError>;

    /// Extends the lease by the configured duration and reports whether a cancel was
    /// requested. `LeaseLost` when the token is stale.
    async fn heartbeat(&self, lease: &Lease) -> Result<Heartbeat, StoreError>;

    /// Writes the terminal status and result, fenced by the lease token.
    async fn finish(&self, lease: &Lease, outcome: Outcome) -> Result<CommandRecord, StoreError>;

    /// Cancels a pending command at once; for a running one sets the flag and announces it
    /// on `cancel_signal` of every replica (the next heartbeat reports the flag too, in case
    /// the announcement is lost). The `done` event of a now-cancelled command and `actor`'s
    /// `command.cancel_requested` audit entry (`CommandRecord::cancel_records`) are written
    /// in the same transaction. `IllegalTransition` for a finished command.
    async fn cancel(&self, id: &CommandId, actor: &str) -> Result<CommandRecord, StoreError>;

    /// Ids of running commands whose cancel was just requested on any replica, so the
    /// worker running one stops it at once instead of at its next heartbeat. Best effort:
    /// a lagging receiver or a lost notification leaves the heartbeat to notice.
    fn cancel_signal(&self) -> broadcast::Receiver<CommandId>;

    /// Handles every expired lease: not started (or idempotent) → pending; started →
    /// failed "host lost"; cancel requested → cancelled.
    async fn rescue_expired(&self) -> Result<Vec<Rescued>, StoreError>;

    /// Changes whenever work may have become available (an enqueue, a finished command, on
    /// any replica). Mark the value seen before claiming, wait for a change after finding
    /// nothing, and still re-check every `poll_fallback` in case a notification was lost.
    fn work_signal(&self) -> watch::Receiver<u64>;
}

/// `CommandQueue::claim_batch`'s default, for an adapter that claims one at a time on some
/// databases only: calls `claim` until `max` claims or none is left. Claims made before an
/// error are still returned.
pub async fn claim_one_by_one<F, C>(max: usize, mut claim: C) -> Result<Vec<Claim>, StoreError>
where
    C: FnMut() -> F,
    F: std::future::Future<Output = Result<Option<Claim>, StoreError>>,
{
    let mut claims = Vec::new();
    while claims.len() < max {
        match claim().await {
            Ok(Some(claim)) => claims.push(claim),
            Ok(None) => break,
            Err(error) if claims.is_empty() => return Err(error),
            Err(_) => break,
        }
    }
    Ok(claims)
}

/// One persisted event of a command's stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub stream: CommandId,
    /// 1, 2, 3… per stream; the SSE id.
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub event: StreamEvent,
}

/// An event as a subscription delivers it. Every local subscriber of a stream receives the
/// same allocation, and the first one to encode it for the wire leaves that encoding here
/// for the rest: with a thousand subscribers an event is serialized once, not a thousand
/// times.
#[derive(Debug)]
pub struct DeliveredEvent {
    event: StoredEvent,
    wire: OnceLock<Bytes>,
}

impl DeliveredEvent {
    /// Shares `event` with its (not yet computed) wire encoding.
    pub fn new(event: StoredEvent) -> Arc<Self> {
        Arc::new(Self {
            event,
            wire: OnceLock::new(),
        })
    }

    /// The event's wire encoding: `encode`'s result for the first caller, the same bytes
    /// for every later one. Subscribers of one stream must pass the same encoder.
    pub fn wire(&self, encode: impl FnOnce(&StoredEvent) -> Bytes) -> Bytes {
        self.wire.get_or_init(|| encode(&self.event)).clone()
    }
}

impl std::ops::Deref for DeliveredEvent {
    type Target = StoredEvent;

    fn deref(&self) -> &StoredEvent {
        &self.event
    }
}

/// Events of one stream in order, first the stored ones after the requested sequence
/// number, then new ones as they are appended; ends after the terminal event.
pub type EventSubscription = BoxStream<'static, Result<Arc<DeliveredEvent>, StoreError>>;

/// Per-command event streams.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Appends with the next sequence number of the stream.
    async fn append(
        &self,
        stream: &CommandId,
        event: &StreamEvent,
    ) -> Result<StoredEvent, StoreError>;

    /// Appends like [`EventLog::append`], once per `key` and stream: when an event with this
    /// key is already stored (an earlier attempt committed, but its acknowledgement was lost
    /// with the connection), that event is returned and nothing is written. A writer that
    /// retries passes the same key on every attempt.
    async fn append_once(
        &self,
        stream: &CommandId,
        event: &StreamEvent,
        key: &str,
    ) -> Result<StoredEvent, StoreError>;

    /// Appends like [`EventLog::append_once`], but only while the command is `running`,
    /// atomically with its status: once its final status is written nothing more is
    /// appended this way (`Conflict`). Follow-up input goes through here, so every input
    /// is either stored before the command ended or refused.
    async fn append_while_running(
        &self,
        stream: &CommandId,
        event: &StreamEvent,
        key: &str,
    ) -> Result<StoredEvent, StoreError>;

    /// Up to `limit` events with `seq > after`, in order.
    async fn read(
        &self,
        stream: &CommandId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// The stream's events whose append key starts with `prefix`, in order: the few a
    /// stream's writer marked to find again (follow-up inputs and their deliveries)
    /// without reading the whole stream.
    async fn read_keyed(
        &self,
        stream: &CommandId,
        prefix: &str,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Replays from `after` and then follows the stream. A slow subscriber only falls
    /// behind: it re-reads from the table and never blocks the writer.
    fn subscribe(&self, stream: &CommandId, after: i64) -> EventSubscription;
}

/// Result of walking the audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerification {
    /// Entries that verified before the first broken link (all of them when intact).
    pub verified: u64,
    pub first_broken: Option<BrokenLink>,
}

/// The append-only, hash-chained audit trail.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends after the current last entry, chaining its hash.
    async fn append(&self, entry: NewAuditEntry) -> Result<AuditEntry, StoreError>;
    /// Appends like [`AuditLog::append`], once per `key`: when an entry with this key is
    /// already chained (an earlier attempt committed, but its acknowledgement was lost with
    /// the connection), that entry is returned and nothing is written. A writer that retries
    /// passes the same key on every attempt.
    async fn append_once(&self, entry: NewAuditEntry, key: &str) -> Result<AuditEntry, StoreError>;
    /// Up to `limit` entries with `seq > after`, in order.
    async fn list(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
    /// Walks the whole chain and reports the first broken link.
    async fn verify(&self) -> Result<AuditVerification, StoreError>;
    /// The chain's head (last entry) signed with the master key in use; `None` while the
    /// trail is empty. One indexed read.
    async fn checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError>;
    /// Authenticates `checkpoint` with the master key in use, walks the chain and checks
    /// that it still holds the checkpoint's head, so deleted newest entries show.
    async fn verify_against(
        &self,
        checkpoint: &AuditCheckpoint,
    ) -> Result<AnchoredVerification, StoreError>;
}

/// Result of [`AuditLog::verify_against`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchoredVerification {
    /// The chain walk (not done when the checkpoint is untrusted: `verified` 0).
    pub chain: AuditVerification,
    /// Whether the chain still reaches the checkpoint's head.
    pub anchor: Result<(), AnchorFailure>,
}

/// A credential as listings show it: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialInfo {
    pub name: CredentialName,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Credentials, encrypted at rest. Values go in and come out only through
/// `SecretResolver::resolve` (for the executor at spawn time) and `redactor`.
#[async_trait]
pub trait CredentialStore: SecretResolver {
    /// Creates or overwrites (rotates) a value.
    async fn put(
        &self,
        name: &CredentialName,
        value: &SecretValue,
    ) -> Result<CredentialInfo, StoreError>;
    async fn list(&self) -> Result<Vec<CredentialInfo>, StoreError>;
    async fn delete(&self, name: &CredentialName) -> Result<(), StoreError>;
    /// Re-encrypts every value, and every webhook signing secret, under `new_key` in one
    /// transaction and switches to it. Returns how many values and secrets were re-encrypted.
    async fn rotate_key(&self, new_key: MasterKey) -> Result<u64, StoreError>;
    /// A redactor holding every current value, for scrubbing a command's output.
    async fn redactor(&self) -> Result<Redactor, StoreError>;
    /// Whether the key in use opens what is stored: the fingerprints of every credential
    /// and webhook secret, and one credential decrypted. Two small reads, so `/readyz` can
    /// ask on every probe.
    async fn check_key(&self) -> Result<super::master_key::KeyCheck, StoreError>;
}

/// Every store of one database, as `adapters::store::connect` returns them.
#[derive(Clone)]
pub struct Stores {
    pub projects: Arc<dyn ProjectStore>,
    pub queue: Arc<dyn CommandQueue>,
    pub events: Arc<dyn EventLog>,
    pub audit: Arc<dyn AuditLog>,
    pub credentials: Arc<dyn CredentialStore>,
    pub setups: Arc<dyn super::project_setup::ProjectSetupStore>,
    pub tokens: Arc<dyn super::tokens::TokenStore>,
    pub webhooks: Arc<dyn super::webhooks::WebhookStore>,
    pub approvals: Arc<dyn super::approvals::ApprovalStore>,
    /// Per-project egress allow-lists (migration 0110).
    pub network: Arc<dyn super::network::NetworkPolicyStore>,
    /// Per-project MCP servers (migration 0140).
    pub mcp: Arc<dyn super::mcp::McpServerStore>,
    /// Dashboard sign-in sessions (migration 0130).
    pub sessions: Arc<dyn super::sessions::SessionStore>,
    /// Usage totals and budgets (migration 0120).
    pub usage: Arc<dyn super::usage::UsageStore>,
    /// Each command's workspace changes (migration 0150).
    pub changes: Arc<dyn super::changes::ChangesStore>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stores")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgentEvent, OutputStream};

    #[test]
    fn a_delivered_event_is_encoded_once_for_every_subscriber() {
        let event = DeliveredEvent::new(StoredEvent {
            stream: CommandId::from_uuid(uuid::Uuid::now_v7()),
            seq: 7,
            at: Utc::now(),
            event: StreamEvent::Agent(AgentEvent::Output {
                stream: OutputStream::Stdout,
                text: "hi".into(),
            }),
        });
        let encodings = std::cell::Cell::new(0);
        let encode = |e: &StoredEvent| {
            encodings.set(encodings.get() + 1);
            Bytes::from(format!("id: {}", e.seq))
        };
        let first = event.wire(encode);
        let again = event.wire(encode);
        assert_eq!((first, again), (Bytes::from("id: 7"), Bytes::from("id: 7")));
        assert_eq!(encodings.get(), 1);
    }
}
