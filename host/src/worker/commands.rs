//! Submitting and cancelling commands with their audit entries and stream events, so the
//! API and the CLI do it the same way.

use sha2::{Digest, Sha256};

use crate::domain::{
    AgentRequest, CommandId, CommandRecord, CommandStatus, HostEvent, NewAuditEntry, NewCommand,
    StreamEvent,
};
use crate::ports::{Enqueued, StoreError, Stores};

/// sha256 of the serialized request: identifies what was asked in the audit trail without
/// copying a prompt (which may hold anything) into an undeletable log.
pub fn request_digest(request: &AgentRequest) -> String {
    let bytes = serde_json::to_vec(request).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

/// Queues a command; a new one is audited and its stream opens with a `pending` status.
pub async fn submit_command(stores: &Stores, command: NewCommand) -> Result<Enqueued, StoreError> {
    let actor = command.submitted_by.clone();
    let enqueued = stores.queue.enqueue(command).await?;
    if enqueued.created {
        let record = &enqueued.command;
        stores
            .events
            .append(
                &record.id,
                &StreamEvent::Host(HostEvent::Status {
                    status: CommandStatus::Pending,
                }),
            )
            .await?;
        stores
            .audit
            .append(NewAuditEntry {
                actor,
                action: "command.enqueued".into(),
                project_id: Some(record.project_id.to_string()),
                command_id: Some(record.id.to_string()),
                details: serde_json::json!({
                    "provider": record.provider,
                    "request_digest": request_digest(&record.request),
                    "idempotency_key": record.idempotency_key,
                }),
            })
            .await?;
    }
    Ok(enqueued)
}

/// Cancels a command: a pending one ends now (and its stream gets its `done` event); a
/// running one is flagged and its worker stops it within one heartbeat.
pub async fn cancel_command(
    stores: &Stores,
    id: &CommandId,
    actor: &str,
) -> Result<CommandRecord, StoreError> {
    let record = stores.queue.cancel(id).await?;
    if record.status == CommandStatus::Cancelled {
        stores
            .events
            .append(
                id,
                &StreamEvent::Host(HostEvent::Done {
                    status: CommandStatus::Cancelled,
                    result: None,
                    error: record.error.clone(),
                }),
            )
            .await?;
    }
    stores
        .audit
        .append(NewAuditEntry {
            actor: actor.to_owned(),
            action: "command.cancel_requested".into(),
            project_id: Some(record.project_id.to_string()),
            command_id: Some(record.id.to_string()),
            details: serde_json::json!({"status": record.status}),
        })
        .await?;
    Ok(record)
}
