//! Webhooks as pure rules: subscriptions and their event filters, the events rdev emits, the
//! Standard Webhooks signature, the retry schedule, `Retry-After` and which network targets
//! a webhook may reach. The store writes events to its outbox and the dispatcher delivers
//! them (see `crate::services::webhooks`); everything here is computed without I/O, clocks or
//! randomness, which callers pass in. One module per concept; everything is re-exported
//! here, so `domain::webhook::X` names any of them.

mod delivery;
mod error;
mod events;
mod retry;
mod secret;
mod subscription;
mod target;

pub use delivery::{Delivery, DeliveryAttempt, DeliveryStatus, DueDelivery};
pub use error::WebhookError;
pub use events::{
    ALL_EVENTS, APPROVAL_REQUESTED, AUDIT_CHECKPOINT, BUDGET_EXCEEDED, CI_PIPELINE_FINISHED,
    CI_PIPELINE_STARTED, COMMAND_CANCELLED, COMMAND_COMPLETED, COMMAND_FAILED, EVENT_TYPES,
    PROJECT_CREATED, WebhookEvent, filter_matches, normalize_event_types,
};
pub use retry::{NextStep, RetryPolicy, parse_retry_after};
pub use secret::{
    SECRET_BYTES, SECRET_PREFIX, SealedWebhookSecret, SecretOfWebhook, WebhookSecret,
};
pub use subscription::{GONE_REASON, NewWebhook, Webhook};
pub use target::{MAX_URL_LEN, TargetClass, UrlHost, check_target, check_url};
