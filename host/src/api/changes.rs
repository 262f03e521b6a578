//! `GET /commands/{id}/changes`: what a command changed in its project's workspace, as the
//! worker recorded it when the run was over (see `services::changes`).

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::commands::accessible_command;
use super::doc_parts::CommandPath;
use super::error::{ApiError, ApiPath};
use super::state::AppState;
use crate::domain::{CommandId, FileChange, ProjectId};
use crate::ports::{ChangesOutcome, StoredChanges};

/// A command's workspace changes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommandChanges {
    pub command_id: CommandId,
    pub project_id: ProjectId,
    /// When the run was over and the workspace was diffed.
    pub recorded_at: DateTime<Utc>,
    /// False when the workspace could not be snapshotted or diffed (`reason` says why, e.g.
    /// no `git` in the workspace); `files` is then empty.
    pub available: bool,
    pub reason: Option<String>,
    /// Added, modified and deleted files, by path, each with its line counts and unified
    /// diff (binary files: neither).
    pub files: Vec<FileChange>,
    /// Changed files not listed (over 1000).
    pub omitted_files: u64,
    /// Something was cut: a diff over 256 KiB, the diffs past 1 MiB in all, or the list.
    pub truncated: bool,
}

impl From<StoredChanges> for CommandChanges {
    fn from(stored: StoredChanges) -> Self {
        let (set, reason) = match stored.outcome {
            ChangesOutcome::Recorded(set) => (set, None),
            ChangesOutcome::Unavailable(reason) => (Default::default(), Some(reason)),
        };
        Self {
            command_id: stored.command_id,
            project_id: stored.project_id,
            recorded_at: stored.recorded_at,
            available: reason.is_none(),
            reason,
            files: set.files,
            omitted_files: set.omitted_files,
            truncated: set.truncated,
        }
    }
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(read_changes))
}

/// What the command changed in its project's workspace.
#[utoipa::path(get, path = "/commands/{id}/changes", tag = "commands", security(("bearer" = [])),
    params(CommandPath), responses(
    (status = 200, description = "The files the command added, modified and deleted, with their diffs", body = CommandChanges),
    (status = 403, description = "The token may not access the command's project"),
    (status = 404, description = "No such command, or it ended without its changes recorded (`changes_not_recorded`)"),
    (status = 409, description = "The command has not finished yet (`changes_pending`)"),
))]
async fn read_changes(
    Caller { state, principal }: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CommandChanges>, ApiError> {
    let command = accessible_command(&state, &principal, &id).await?;
    if let Some(stored) = state.stores.changes.changes(&command.id).await? {
        return Ok(Json(stored.into()));
    }
    if !command.status.is_terminal() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "changes_pending",
            "the command's changes are recorded when its run is over",
        ));
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "changes_not_recorded",
        "the command ended without its workspace changes recorded (it never ran, or ran \
         on an rdev that did not record them)",
    ))
}
