//! Exporting the audit chain's head: every interval, when the head moved, a checkpoint
//! signed under the master key goes to the server log and, as `audit.checkpoint`, to every
//! project's webhook subscribers. Copies kept off the box are what make a later deletion of
//! the newest entries detectable (`rdev audit verify --against`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::webhook::AUDIT_CHECKPOINT;
use crate::domain::{AuditCheckpoint, WebhookEvent};
use crate::ports::{AuditLog, ProjectStore, StoreError, WebhookStore};

/// Default interval between checkpoints (`RDEV_AUDIT_CHECKPOINT_SECS`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);

/// The stores the exporter reads and writes.
#[derive(Clone)]
pub struct CheckpointExporter {
    pub audit: Arc<dyn AuditLog>,
    pub projects: Arc<dyn ProjectStore>,
    pub webhooks: Arc<dyn WebhookStore>,
}

impl CheckpointExporter {
    /// Exports a checkpoint every `interval` while the head moves, until `shutdown`.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        let mut last: Option<(i64, String)> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            match self.export_if_moved(last.as_ref()).await {
                Ok(Some(head)) => last = Some(head),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "exporting an audit checkpoint failed"),
            }
        }
    }

    /// Signs the head and exports it unless it equals `last`; returns the exported head.
    async fn export_if_moved(
        &self,
        last: Option<&(i64, String)>,
    ) -> Result<Option<(i64, String)>, StoreError> {
        let Some(checkpoint) = self.audit.checkpoint().await? else {
            return Ok(None);
        };
        let head = (checkpoint.seq, checkpoint.head_hash.clone());
        if last == Some(&head) {
            return Ok(None);
        }
        self.export(&checkpoint).await?;
        Ok(Some(head))
    }

    /// One info line with the checkpoint's JSON, and one webhook event per project.
    async fn export(&self, checkpoint: &AuditCheckpoint) -> Result<(), StoreError> {
        let data =
            serde_json::to_value(checkpoint).map_err(|e| StoreError::Invalid(e.to_string()))?;
        tracing::info!(checkpoint = %data, "audit checkpoint");
        for project in self.projects.list().await? {
            let event = WebhookEvent::new(
                uuid::Uuid::now_v7(),
                AUDIT_CHECKPOINT,
                project.id,
                checkpoint.at,
                data.clone(),
            );
            self.webhooks.emit(&event, None).await?;
        }
        Ok(())
    }
}
