//! Submitting and cancelling commands with their audit entries and stream events, so the
//! API and the CLI do it the same way. The store writes each in one transaction.

use crate::domain::{CommandId, CommandRecord, NewCommand};
use crate::ports::{Enqueued, StoreError, Stores, UnknownProject};

pub use crate::domain::request_digest;

/// Queues a command; a new one is audited and its stream opens with a `pending` status, in
/// the transaction that queues it (`CommandQueue::submit`).
pub async fn submit_command(
    stores: &Stores,
    command: NewCommand,
    project: UnknownProject,
) -> Result<Enqueued, StoreError> {
    stores.queue.submit(command, project).await
}

/// Cancels a command: a pending one ends now (and its stream gets its `done` event); a
/// running one is flagged and its worker stops it within one heartbeat. The audit entry
/// commits with the cancel.
pub async fn cancel_command(
    stores: &Stores,
    id: &CommandId,
    actor: &str,
) -> Result<CommandRecord, StoreError> {
    stores.queue.cancel(id, actor).await
}
