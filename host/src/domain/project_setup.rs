//! How a project was set up: the template and variables it was created from, and where its
//! CI registration stands. Kept beside the project so the API can show it and a failed CI
//! registration can be retried with the same inputs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::ProjectId;

/// Where CI registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CiState {
    /// Not attempted yet.
    Pending,
    /// Repository activated and a pipeline triggered.
    Registered,
    /// The last attempt failed; `error` says why, and registration can be retried.
    Failed,
    /// The template disables CI, or no forge repository is known.
    Disabled,
}

impl CiState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Registered => "registered",
            Self::Failed => "failed",
            Self::Disabled => "disabled",
        }
    }
}

impl std::str::FromStr for CiState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(Self::Pending),
            "registered" => Ok(Self::Registered),
            "failed" => Ok(Self::Failed),
            "disabled" => Ok(Self::Disabled),
            other => Err(format!("unknown CI state {other:?}")),
        }
    }
}

/// The CI half of a setup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CiRegistration {
    pub state: CiState,
    /// The CI server's repository id, once activated.
    pub repo_id: Option<i64>,
    /// Number of the last pipeline rdev triggered.
    pub pipeline: Option<i64>,
    /// That pipeline's last status rdev saw (`pending`, `running`, `success`, …).
    pub pipeline_status: Option<String>,
    /// Why the last attempt failed (no secrets: CI errors are redacted).
    pub error: Option<String>,
}

impl CiRegistration {
    /// Nothing attempted yet.
    pub fn pending() -> Self {
        Self {
            state: CiState::Pending,
            repo_id: None,
            pipeline: None,
            pipeline_status: None,
            error: None,
        }
    }
}

/// What the setup service records when it creates a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewProjectSetup {
    pub template: String,
    /// Resolved variables (defaults filled in), as JSON values.
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Clone URL the workspace started from.
    pub repo: Option<String>,
    /// `owner/name` of the forge repository CI builds.
    pub ci_repo: Option<String>,
    pub ci: CiRegistration,
}

/// A stored setup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectSetup {
    pub project_id: ProjectId,
    pub template: String,
    pub vars: BTreeMap<String, serde_json::Value>,
    pub repo: Option<String>,
    pub ci_repo: Option<String>,
    pub ci: CiRegistration,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
