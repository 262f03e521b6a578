//! A project's subscription to webhook events, as stored and as the API shows it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::WebhookSecret;
use crate::domain::ids::ProjectId;

/// The `disabled_reason` of a webhook whose endpoint answered 410 Gone.
pub const GONE_REASON: &str = "the endpoint answered 410 Gone";

/// A subscription as the API shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: String,
    pub project_id: ProjectId,
    pub url: String,
    /// Empty: every event.
    pub event_types: Vec<String>,
    pub description: Option<String>,
    /// False once the endpoint answered 410 Gone: nothing more is delivered to it.
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A subscription to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    pub id: String,
    pub project_id: ProjectId,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub secret: WebhookSecret,
}
