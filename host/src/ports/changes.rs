//! Where each command's workspace changes are kept once its run is over, so they outlive
//! whatever happens to the workspace afterwards.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::{ChangeSet, CommandId, ProjectId};

/// What tracking a command's changes gave: the changes, or why there are none to show
/// (git missing in the workspace, a snapshot that failed or timed out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangesOutcome {
    Recorded(ChangeSet),
    Unavailable(String),
}

/// A command's stored changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChanges {
    pub command_id: CommandId,
    pub project_id: ProjectId,
    pub recorded_at: DateTime<Utc>,
    pub outcome: ChangesOutcome,
}

#[async_trait]
pub trait ChangesStore: Send + Sync {
    /// Stores (or replaces, for a command run again after a rescue) the command's changes.
    async fn record_changes(
        &self,
        command: &CommandId,
        project: &ProjectId,
        outcome: &ChangesOutcome,
    ) -> Result<(), StoreError>;

    /// The command's changes, if its run recorded any.
    async fn changes(&self, command: &CommandId) -> Result<Option<StoredChanges>, StoreError>;
}
