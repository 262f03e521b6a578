//! A project: the unit that owns a workspace, a queue position and an event history.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::ProjectId;

/// A registered project. Commands can only be queued for projects that exist, so a typo in
/// a URL cannot create an orphan queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Project {
    pub id: ProjectId,
    /// Human-readable name; the id stays the stable key.
    pub display_name: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What a caller supplies to register a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewProject {
    pub id: ProjectId,
    #[serde(default)]
    pub display_name: Option<String>,
}
