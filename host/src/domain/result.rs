//! How a provider execution ended.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::event::Usage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// The provider judged the work a success (for an agent: its own final result).
    Completed,
    /// An error or, for a plain process, a non-zero exit.
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentResult {
    pub status: ResultStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_text: Option<String>,
    /// Why it failed or was cancelled, in words a user can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_turns: Option<u32>,
    /// Wall time of the execution as the host measured it.
    #[serde(rename = "duration_ms", with = "duration_ms")]
    #[schema(value_type = u64)]
    pub duration: Duration,
    /// Provider-specific details (e.g. permission denials), untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl AgentResult {
    /// A result with only a status; providers and the host fill in what they know.
    pub fn new(status: ResultStatus) -> Self {
        Self {
            status,
            exit_code: None,
            session_id: None,
            final_text: None,
            error: None,
            cost_usd: None,
            usage: None,
            num_turns: None,
            duration: Duration::ZERO,
            details: None,
        }
    }

    /// A failure the host itself observed (trap, timeout, lost host).
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            error: Some(error.into()),
            ..Self::new(ResultStatus::Failed)
        }
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}
