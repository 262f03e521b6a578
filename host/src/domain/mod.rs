//! Pure types and rules of rdev. Nothing in here performs I/O or depends on a runtime, so
//! every rule can be unit-tested and shared by the API, the worker and the storage adapters.

pub mod approval;
pub mod audit;
pub mod changes;
pub mod command;
pub mod credential;
pub mod event;
pub mod ids;
pub mod interaction;
pub mod mcp;
pub mod network;
pub mod output;
pub mod project;
pub mod provider;
pub mod queue;
pub mod redact;
pub mod request;
pub mod result;
pub mod usage;

pub use approval::{
    Approval, ApprovalStatus, NewApproval, Policy, PolicyMode, PolicyRule, Resolution, RuleAction,
    Verdict,
};
pub use audit::{
    AnchorFailure, AuditCheckpoint, AuditEntry, BrokenLink, ChainVerifier, CheckpointError,
    NewAuditEntry,
};
pub use changes::{ChangeKind, ChangeLimits, ChangeSet, DiffParseError, FileChange};
pub use command::{CommandStatus, TransitionError};
pub use credential::{CredentialName, MasterKey, SealError, SealOwner};
pub use event::{AgentEvent, HostEvent, OutputStream, StreamEvent, Usage};
pub use ids::{CommandId, IdError, ProjectId, ProviderName};
pub use output::{Admitted, OnOutputLimit, OutputGuard, OutputLimitError, OutputLimits, json_size};
pub use project::{NewProject, Project};
pub use provider::{AgentProvider, Capabilities, Provenance};
pub use queue::{
    Claim, CommandCursor, CommandFilter, CommandRecord, CommandRecords, CursorError, HOST_LOST,
    Heartbeat, Lease, NewCommand, Outcome, QueueConfig, Rescued, request_digest,
};
pub use redact::{Redactor, StreamRedactor};
pub use request::{AgentRequest, RequestError};
pub use result::{AgentResult, ResultStatus};
pub use usage::{Budget, CommandUsage, DayRange, UsageBucket, UsageError};
pub mod project_setup;
pub use project_setup::{CiRegistration, CiState, NewProjectSetup, ProjectSetup};
pub mod session;
pub use session::{NewUiSession, UiSession};
pub mod token;
pub use token::{AccessError, ApiToken, NewToken, Principal, TokenRole, token_digest};
pub mod webhook;
pub mod workspace;
pub use webhook::{
    Delivery, DeliveryAttempt, DeliveryStatus, DueDelivery, NewWebhook, NextStep, RetryPolicy,
    SealedWebhookSecret, SecretOfWebhook, Webhook, WebhookError, WebhookEvent, WebhookSecret,
};
pub use workspace::{RenderReport, RenderedFile, WorkspaceSpec, check_relative_path};
pub mod oci;
pub use oci::{ContentDigest, OciReference, ReferenceError};
