//! Webhooks at run time: the one helper that records a project event (audit entry and
//! outbox rows in one transaction), the SSRF guard that checks a target before it is stored
//! and again, after DNS resolution, before every delivery, and the dispatcher that delivers
//! the outbox signed per Standard Webhooks. Command events need no helper: the stores write
//! them in the transaction that sets a command's terminal status.

mod dispatcher;
mod guard;

use std::time::Duration;

pub use dispatcher::{DeliveryOutcome, Dispatcher, OutcomeLabel};
pub use guard::{GuardedResolver, check_target_url};

use crate::domain::{NewAuditEntry, ProjectId, RetryPolicy, WebhookEvent};
use crate::ports::{StoreError, WebhookStore};

/// Environment variable that lets webhooks target private, loopback, link-local and
/// unique-local addresses (`true`/`1`).
pub const ALLOW_PRIVATE_ENV: &str = "RDEV_WEBHOOK_ALLOW_PRIVATE";

/// How webhooks are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Admit internal targets (see `TargetClass::allowed`). Off by default: a webhook URL
    /// is chosen by API users and must not reach the operator's internal network.
    pub allow_private: bool,
    /// Per-attempt HTTP timeout, connect included.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// How often an idle dispatcher looks for due deliveries.
    pub poll_interval: Duration,
    /// How long a claimed delivery is reserved for its dispatcher; longer than `timeout`,
    /// so a live dispatcher never loses a delivery it is still sending.
    pub lease: Duration,
    /// Deliveries in flight at once per dispatcher.
    pub concurrency: usize,
}

impl Default for WebhookConfig {
    /// Private targets refused, 10 s timeout, the default retry policy, 1 s poll.
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(60),
            concurrency: 16,
        }
    }
}

impl WebhookConfig {
    /// Reads [`ALLOW_PRIVATE_ENV`] over the current value.
    pub fn with_env(mut self) -> Self {
        if let Ok(value) = std::env::var(ALLOW_PRIVATE_ENV) {
            self.allow_private = matches!(value.trim(), "1" | "true" | "yes");
        }
        self
    }
}

/// THE way to announce a project event (`project.created`, `ci.pipeline.started`,
/// `ci.pipeline.finished`, …): appends `entry` to the audit trail and queues the webhook
/// event in the same transaction, so a subscriber hears of exactly what the audit trail
/// records. The event type is the entry's action; its data is the entry's details plus
/// `project_id`. Project setup uses it, and so should anything else that reports project
/// events (the Woodpecker pipeline poller, for one).
pub async fn record_project_event(
    webhooks: &dyn WebhookStore,
    project: &ProjectId,
    entry: NewAuditEntry,
) -> Result<u64, StoreError> {
    let event = project_event(project, &entry);
    webhooks.emit(&event, Some(entry)).await
}

/// The webhook event announcing what `entry` audits, for a store that writes both in a
/// transaction of its own (see [`record_project_event`] for the rule).
pub fn project_event(project: &ProjectId, entry: &NewAuditEntry) -> WebhookEvent {
    let mut data = entry.details.clone();
    if let Some(map) = data.as_object_mut() {
        map.insert("project_id".into(), serde_json::json!(project));
    }
    WebhookEvent::new(
        uuid::Uuid::now_v7(),
        &entry.action,
        project.clone(),
        chrono::Utc::now(),
        data,
    )
}
