//! Why a webhook definition was refused.

use super::events::EVENT_TYPES;
use super::target::TargetClass;

/// Why a webhook definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("invalid webhook URL: {0}")]
    InvalidUrl(String),
    #[error("webhook target {target} is a {class} address, which is not allowed")]
    TargetForbidden { target: String, class: TargetClass },
    #[error("unknown event type {0:?}; known: {known}", known = EVENT_TYPES.join(", "))]
    UnknownEventType(String),
    #[error("a webhook secret must be whsec_ followed by base64 of at least 24 bytes")]
    InvalidSecret,
}

impl WebhookError {
    /// The stable API error code of this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidUrl(_) => "invalid_webhook_url",
            Self::TargetForbidden { .. } => "webhook_target_forbidden",
            Self::UnknownEventType(_) => "invalid_event_type",
            Self::InvalidSecret => "invalid_webhook_secret",
        }
    }
}
