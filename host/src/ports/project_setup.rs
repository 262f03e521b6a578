//! What creating a project from a template needs besides the template itself: a place to
//! record the setup, and a workspace to seed (a local directory or, with the Kubernetes
//! executor, a pod's volume).

use async_trait::async_trait;

use super::store::StoreError;
use crate::domain::{
    CiRegistration, NewAuditEntry, NewProject, NewProjectSetup, Project, ProjectId, ProjectSetup,
    RenderReport, RenderedFile, WebhookEvent, WorkspaceSpec,
};

/// A project event to record with a state change: its audit entry and the webhook event
/// built from it (`webhooks::project_event`).
#[derive(Debug, Clone)]
pub struct Announcement {
    pub audit: NewAuditEntry,
    pub event: WebhookEvent,
}

/// Setups, stored beside the projects they describe.
#[async_trait]
pub trait ProjectSetupStore: Send + Sync {
    /// Registers the project and its setup in one transaction; `Conflict` when the id is
    /// taken (and then nothing is written).
    async fn create_with_setup(
        &self,
        project: NewProject,
        setup: NewProjectSetup,
    ) -> Result<(Project, ProjectSetup), StoreError>;
    /// `NotFound` for a project that was not created from a template.
    async fn get_setup(&self, id: &ProjectId) -> Result<ProjectSetup, StoreError>;
    /// Records the outcome of a CI registration attempt.
    async fn update_ci(&self, id: &ProjectId, ci: &CiRegistration) -> Result<(), StoreError>;
    /// Registered setups whose last triggered pipeline is not known to have finished (its
    /// last seen status is none of `finished`), oldest first: what the CI poller watches.
    async fn ci_unfinished(&self, finished: &[&str]) -> Result<Vec<ProjectSetup>, StoreError>;
    /// Moves pipeline `pipeline`'s stored status from `seen` to `status` only if it still is
    /// `seen` for that pipeline (compare-and-set). `Ok(true)` for the one caller that made
    /// the change, so a status change is acted on once even when several replicas (or a
    /// poller and a reader) observe it at the same time. That caller's `announce` is
    /// written in the same transaction: a crash cannot record the change without it.
    async fn record_pipeline_status(
        &self,
        id: &ProjectId,
        pipeline: i64,
        seen: Option<&str>,
        status: &str,
        announce: Option<Announcement>,
    ) -> Result<bool, StoreError>;
}

/// Why seeding a workspace failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    #[error("the workspace of project {0} already exists")]
    Exists(String),
    #[error("repository URL {url:?} is refused: {reason}")]
    RepoRefused { url: String, reason: String },
    #[error("{step} failed in the workspace of project {project}: {reason}")]
    Failed {
        project: String,
        step: &'static str,
        reason: String,
    },
}

impl SeedError {
    /// A step that failed in `project`'s workspace; `reason` says why in the step's terms.
    pub fn failed(project: &ProjectId, step: &'static str, reason: impl Into<String>) -> Self {
        Self::Failed {
            project: project.to_string(),
            step,
            reason: reason.into(),
        }
    }
}

/// Author of the commit that records the rendered template.
pub const SEED_AUTHOR_NAME: &str = "rdev";
/// Author e-mail of that commit.
pub const SEED_AUTHOR_EMAIL: &str = "rdev@localhost";

/// Creates and fills new workspaces.
#[async_trait]
pub trait WorkspaceSeeder: Send + Sync {
    /// Creates the workspace, which must not exist yet (`Exists`), as a clone of `repo` when
    /// given, else as a fresh git repository whose first branch is `branch`.
    async fn create(
        &self,
        project: &ProjectId,
        repo: Option<&str>,
        branch: &str,
    ) -> Result<(), SeedError>;
    /// Writes the files, keeping any the workspace already has.
    async fn write(
        &self,
        project: &ProjectId,
        files: Vec<RenderedFile>,
    ) -> Result<RenderReport, SeedError>;
    /// Commits everything as [`SEED_AUTHOR_NAME`]; returns the commit id, or `None` when there
    /// was nothing to commit.
    async fn commit(&self, project: &ProjectId, message: &str)
    -> Result<Option<String>, SeedError>;
    /// Removes a workspace whose creation failed half-way.
    async fn discard(&self, project: &ProjectId) -> Result<(), SeedError>;
}

/// Refuses clone URLs a caller could abuse: option-like or control characters always, and
/// the host's filesystem (`file://`, absolute paths) unless `allow_local`, since a caller
/// could otherwise copy any repository the server can read (another project's, for one).
pub fn check_repo_url(url: &str, allow_local: bool) -> Result<(), SeedError> {
    let refused = |reason: &str| SeedError::RepoRefused {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    if url.starts_with('-') || url.chars().any(char::is_control) {
        return Err(refused("not a URL"));
    }
    let network = url.starts_with("https://")
        || url.starts_with("ssh://")
        || (url.starts_with("git@") && url.contains(':'));
    let local = url.starts_with("file://") || url.starts_with('/');
    if network || (local && allow_local) {
        Ok(())
    } else if local {
        Err(refused("cloning from the host's filesystem is disabled"))
    } else {
        Err(refused(
            "only https://, ssh:// and git@host: URLs are accepted",
        ))
    }
}

/// Why a project's workspace could not be provisioned or released.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// Its resources exist already (another project's, or a leftover): nothing was touched.
    #[error("the workspace resources of project {0} already exist")]
    Exists(String),
    #[error(
        "the workspace of project {project} did not become ready within {timeout_secs}s: {reason}"
    )]
    Timeout {
        project: String,
        timeout_secs: u64,
        reason: String,
    },
    #[error("the workspace of project {project} could not be {action}: {reason}")]
    Failed {
        project: String,
        action: &'static str,
        reason: String,
    },
}

/// Creates and removes the compute a project's workspace lives in (a pod and its volume with
/// the Kubernetes executor), so project creation does not depend on which executor runs.
#[async_trait]
pub trait WorkspaceProvisioner: Send + Sync {
    /// Creates the workspace from `spec` (the template's wishes; empty fields take the
    /// operator's defaults) and returns once commands can run in it. On failure nothing is
    /// left behind, except on `Exists`, where nothing was created.
    async fn provision(
        &self,
        project: &ProjectId,
        spec: &WorkspaceSpec,
    ) -> Result<(), ProvisionError>;
    /// Removes the workspace and its data; a missing one is not an error.
    async fn deprovision(&self, project: &ProjectId) -> Result<(), ProvisionError>;
}
