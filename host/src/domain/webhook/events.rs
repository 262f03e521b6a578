//! The events rdev announces to webhooks: their types, a subscription's filter over them,
//! and the outbox event with its exact body.

use chrono::{DateTime, Utc};

use super::WebhookError;
use crate::domain::ids::ProjectId;
use crate::domain::queue::CommandRecord;

/// A command finished successfully.
pub const COMMAND_COMPLETED: &str = "command.completed";
/// A command failed (an error, a non-zero exit, a timeout or a lost host).
pub const COMMAND_FAILED: &str = "command.failed";
/// A command was cancelled.
pub const COMMAND_CANCELLED: &str = "command.cancelled";
/// A project was created from a template.
pub const PROJECT_CREATED: &str = "project.created";
/// A CI pipeline of the project was triggered.
pub const CI_PIPELINE_STARTED: &str = "ci.pipeline.started";
/// A CI pipeline of the project reached a final status.
pub const CI_PIPELINE_FINISHED: &str = "ci.pipeline.finished";

/// A running command's tool call waits for a person's decision (`POST /approvals/{id}`).
pub const APPROVAL_REQUESTED: &str = "approval.requested";

/// A signed audit checkpoint (`AuditCheckpoint`), sent to every project's subscribers so
/// the chain's head is kept off the box; emitted periodically, only when the head moved.
pub const AUDIT_CHECKPOINT: &str = "audit.checkpoint";

/// A project's month-to-date cost reached its monthly budget: sent once per project and
/// month (again after the budget is changed).
pub const BUDGET_EXCEEDED: &str = "budget.exceeded";

/// Every event type a subscription may name; `*` (or an empty filter) means all of them.
pub const EVENT_TYPES: [&str; 9] = [
    COMMAND_COMPLETED,
    COMMAND_FAILED,
    COMMAND_CANCELLED,
    PROJECT_CREATED,
    CI_PIPELINE_STARTED,
    CI_PIPELINE_FINISHED,
    APPROVAL_REQUESTED,
    AUDIT_CHECKPOINT,
    BUDGET_EXCEEDED,
];

/// The filter entry that matches every event type.
pub const ALL_EVENTS: &str = "*";

/// Checks a subscription's filter: known types or `*`, without duplicates, sorted so that
/// equal filters compare equal. Empty means every event.
pub fn normalize_event_types(types: &[String]) -> Result<Vec<String>, WebhookError> {
    let mut out = Vec::with_capacity(types.len());
    for t in types {
        let t = t.trim();
        if t != ALL_EVENTS && !EVENT_TYPES.contains(&t) {
            return Err(WebhookError::UnknownEventType(t.to_owned()));
        }
        out.push(t.to_owned());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Whether a subscription with `filter` receives `event_type`. The adapters evaluate the
/// same rule in SQL when they fan an event out; this is its reference.
pub fn filter_matches(filter: &[String], event_type: &str) -> bool {
    filter.is_empty() || filter.iter().any(|t| t == ALL_EVENTS || t == event_type)
}

/// One event for the outbox. `id` becomes the `webhook-id` header and stays the same on
/// every retry, so receivers can drop duplicates.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    pub id: String,
    pub event_type: String,
    pub project_id: ProjectId,
    pub timestamp: DateTime<Utc>,
    pub data: serde_json::Value,
}

impl WebhookEvent {
    /// An event with a fresh id (`msg_` + the caller's UUIDv7).
    pub fn new(
        uuid: uuid::Uuid,
        event_type: &str,
        project_id: ProjectId,
        timestamp: DateTime<Utc>,
        data: serde_json::Value,
    ) -> Self {
        Self {
            id: format!("msg_{}", uuid.simple()),
            event_type: event_type.to_owned(),
            project_id,
            timestamp,
            data,
        }
    }

    /// The event of a command that reached a terminal status; `None` for any other status.
    pub fn for_command(uuid: uuid::Uuid, command: &CommandRecord) -> Option<Self> {
        use crate::domain::command::CommandStatus;
        let event_type = match command.status {
            CommandStatus::Completed => COMMAND_COMPLETED,
            CommandStatus::Failed => COMMAND_FAILED,
            CommandStatus::Cancelled => COMMAND_CANCELLED,
            CommandStatus::Pending | CommandStatus::Running => return None,
        };
        let finished = command.finished_at.unwrap_or(command.created_at);
        let duration_ms = command
            .started_at
            .map(|started| (finished - started).num_milliseconds().max(0));
        let data = serde_json::json!({
            "command_id": command.id,
            "project_id": command.project_id,
            "provider": command.provider,
            "status": command.status,
            "exit_code": command.result.as_ref().and_then(|r| r.exit_code),
            "error": command.error,
            "attempts": command.attempts,
            "created_at": command.created_at,
            "started_at": command.started_at,
            "finished_at": command.finished_at,
            "duration_ms": duration_ms,
        });
        Some(Self::new(
            uuid,
            event_type,
            command.project_id.clone(),
            finished,
            data,
        ))
    }

    /// The exact request body: `{"type", "timestamp", "data"}`. Stored once in the outbox
    /// so that every retry signs and sends the same bytes.
    pub fn body(&self) -> String {
        serde_json::json!({
            "type": self.event_type,
            "timestamp": self.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": self.data,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_listed_types_star_or_everything_when_empty() {
        let list = normalize_event_types(&[
            COMMAND_FAILED.into(),
            COMMAND_COMPLETED.into(),
            COMMAND_FAILED.into(),
        ])
        .expect("known");
        assert_eq!(list, vec![COMMAND_COMPLETED, COMMAND_FAILED]);
        assert!(filter_matches(&list, COMMAND_FAILED));
        assert!(!filter_matches(&list, PROJECT_CREATED));
        assert!(filter_matches(&[], PROJECT_CREATED));
        assert!(filter_matches(&["*".into()], CI_PIPELINE_FINISHED));
        assert_eq!(
            normalize_event_types(&["command.exploded".into()]).map_err(|e| e.code()),
            Err("invalid_event_type")
        );
    }
}
