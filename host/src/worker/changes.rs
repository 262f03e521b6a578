//! The worker's part in tracking workspace changes (see `services::changes`): a snapshot
//! before the provider runs, the diff recorded once its events are stored and before the
//! final status is written, so whoever sees `done` finds the changes there.

use crate::domain::CommandRecord;
use crate::services::changes::Snapshot;

use super::Context;

/// The workspace's state before `command` runs, or why there is none; `None` when this
/// worker does not track changes.
pub(super) async fn before(
    ctx: &Context,
    command: &CommandRecord,
) -> Option<Result<Snapshot, String>> {
    let tracker = ctx.changes.as_ref()?;
    let snapshot = tracker.snapshot(&command.project_id, &command.id).await;
    if let Err(error) = &snapshot {
        tracing::warn!(command = %command.id, %error, "workspace snapshot failed; its changes will not be shown");
    }
    Some(snapshot.map_err(|e| format!("the workspace could not be snapshotted: {e}")))
}

/// Diffs the workspace against `before` and stores the result under `command`.
pub(super) async fn record(
    ctx: &Context,
    command: &CommandRecord,
    before: Option<Result<Snapshot, String>>,
) {
    let (Some(tracker), Some(before)) = (ctx.changes.as_ref(), before) else {
        return;
    };
    if let Err(error) = tracker
        .record(&command.id, &command.project_id, before)
        .await
    {
        tracing::warn!(command = %command.id, %error, "storing the command's workspace changes failed");
    }
}
