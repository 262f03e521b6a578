//! Continuous integration as the project-setup service needs it: register a forge repository,
//! give it secrets, start a pipeline and read back its status and logs. The Woodpecker adapter
//! implements it; the service never sees HTTP.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::secrets::SecretValue;

/// Why a CI call failed. HTTP failures carry the method, the path (never the host's token or
/// query secrets), the status and an excerpt of the body with secret values removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CiError {
    #[error("{method} {path} answered {status}: {body}")]
    Status {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
    #[error("{method} {path} failed: {reason}")]
    Transport {
        method: String,
        path: String,
        reason: String,
    },
    #[error("{method} {path}: unexpected response body: {reason}")]
    Decode {
        method: String,
        path: String,
        reason: String,
    },
    #[error("forge repository {0:?} is not visible to the CI user")]
    RepoNotFound(String),
    #[error("CI credential problem: {0}")]
    Credential(String),
}

/// A repository as CI knows it once activated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiRepo {
    /// CI's own id (`/api/repos/{id}`).
    pub id: i64,
    /// `owner/name` on the forge.
    pub full_name: String,
    pub forge_remote_id: String,
}

/// A repository secret to create or update.
#[derive(Debug, Clone)]
pub struct CiSecret {
    pub name: String,
    pub value: SecretValue,
    /// Pipeline events that may read it.
    pub events: Vec<String>,
}

/// A pipeline's state. `status` is CI's word (`pending`, `running`, `success`, `failure`,
/// `killed`, `error`, …); [`Pipeline::is_finished`] says whether it can still change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pipeline {
    pub number: i64,
    pub status: String,
    pub branch: String,
    pub event: String,
    /// Unix seconds; 0 when not reached yet.
    pub created: i64,
    pub started: i64,
    pub finished: i64,
    pub steps: Vec<PipelineStep>,
}

/// One step of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineStep {
    pub id: i64,
    pub name: String,
    pub state: String,
    pub exit_code: i64,
}

/// One line of a step's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogLine {
    pub step: String,
    pub line: i64,
    pub text: String,
}

/// Pipeline statuses that can no longer change.
pub const FINISHED_STATUSES: &[&str] = &[
    "success", "failure", "killed", "error", "declined", "skipped",
];

impl Pipeline {
    /// True once the status can no longer change.
    pub fn is_finished(&self) -> bool {
        Self::status_is_finished(&self.status)
    }

    /// True for a status that can no longer change.
    pub fn status_is_finished(status: &str) -> bool {
        FINISHED_STATUSES.contains(&status)
    }
}

/// A CI server.
#[async_trait]
pub trait Ci: Send + Sync {
    /// Finds `full_name` among the forge repositories the CI user sees and activates it
    /// (nothing to do when it is already active).
    async fn activate(&self, full_name: &str) -> Result<CiRepo, CiError>;
    /// Creates or updates a repository secret.
    async fn set_secret(&self, repo: i64, secret: &CiSecret) -> Result<(), CiError>;
    /// Starts a pipeline on `branch` with pipeline variables.
    async fn trigger(
        &self,
        repo: i64,
        branch: &str,
        variables: &BTreeMap<String, String>,
    ) -> Result<Pipeline, CiError>;
    async fn pipeline(&self, repo: i64, number: i64) -> Result<Pipeline, CiError>;
    /// Every step's log lines, in step order.
    async fn logs(&self, repo: i64, number: i64) -> Result<Vec<LogLine>, CiError>;
}
