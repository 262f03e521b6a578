//! Deliveries: one event for one webhook, its status and its HTTP attempts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::SealedWebhookSecret;
use crate::domain::ids::ProjectId;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Gave up after the last attempt, or the endpoint answered 410 Gone.
    Failed,
    /// Not attempted (again) because its webhook was disabled.
    Cancelled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for DeliveryStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "failed" => Ok(Self::Failed),
            "cancelled" => Ok(Self::Cancelled),
            other => Err(format!("unknown delivery status {other:?}")),
        }
    }
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryAttempt {
    /// 1, 2, 3… per delivery.
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// The endpoint's HTTP status; `None` when no answer arrived.
    pub status_code: Option<u16>,
    /// Why the attempt did not succeed (transport error, non-2xx, refused target).
    pub error: Option<String>,
}

/// One event for one webhook, with its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    /// Increasing; pages of deliveries are ordered by it.
    pub id: i64,
    /// The `webhook-id` header sent with every attempt.
    pub event_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    /// The body sent: `{"type", "timestamp", "data"}`.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub attempts: Vec<DeliveryAttempt>,
}

/// A delivery the dispatcher claimed, with what it needs to send it. Holding it is the
/// right to record attempt number `attempt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub id: i64,
    pub event_id: String,
    pub webhook_id: String,
    pub project_id: ProjectId,
    pub event_type: String,
    pub payload: String,
    pub url: String,
    /// Opened with `WebhookStore::open_secret` only to sign.
    pub secret: SealedWebhookSecret,
    /// The number of this attempt (1 for the first).
    pub attempt: u32,
    pub owner: String,
}
