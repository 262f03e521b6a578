//! Traits the core needs from the outside world. Adapters implement them; the API, the
//! worker and the runtime depend only on these.

pub mod approvals;
pub mod code_agent;
pub mod executor;
pub mod interaction;
pub mod master_key;
pub mod mcp;
pub mod network;
pub mod providers;
pub mod secrets;

pub use approvals::ApprovalStore;
pub use code_agent::{AgentError, CodeAgent, EventSink, Execution};
pub use executor::{
    EnvValue, ExecError, Executor, ExitStatus, ProcessControl, ProjectConnection, Signal,
    SpawnSpec, SpawnedProcess,
};
pub use interaction::{Interaction, InteractionContext, InteractionError, NobodyToAsk};
pub use master_key::{KeyCheck, KeyKeeper, KeyKeeperError};
pub use mcp::McpServerStore;
pub use network::{Confinement, NetworkPolicyStore};
pub use providers::{LookupError, ProviderLookup};
pub use secrets::{SecretError, SecretResolver, SecretValue, resolve_env};
pub mod store;
pub use store::{
    AnchoredVerification, AuditLog, AuditVerification, CommandQueue, CredentialInfo,
    CredentialStore, DeliveredEvent, Enqueued, EventLog, EventSubscription, ProjectStore,
    StoreError, StoredEvent, Stores, UnknownProject,
};
pub mod ci;
pub use ci::{Ci, CiError, CiRepo, CiSecret, FINISHED_STATUSES, LogLine, Pipeline, PipelineStep};
pub mod project_setup;
pub use project_setup::{
    Announcement, ProjectSetupStore, ProvisionError, SeedError, WorkspaceProvisioner,
    WorkspaceSeeder,
};
pub mod sessions;
pub use sessions::SessionStore;
pub mod tokens;
pub use tokens::TokenStore;
pub mod webhooks;
pub use webhooks::{DeliveryPage, MAX_DELIVERY_PAGE, WebhookStore};
pub mod observer;
pub use observer::FinishObserver;
pub mod artifacts;
pub use artifacts::{ArtifactError, ArtifactRegistry, PluginArtifact, Pulled, RegistryCredentials};
pub mod usage;
pub use usage::UsageStore;
pub mod changes;
pub use changes::{ChangesOutcome, ChangesStore, StoredChanges};
