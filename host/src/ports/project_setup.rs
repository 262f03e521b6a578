//! What creating a project from a template needs besides the template itself: a place to
//! record the setup, and a workspace to seed (a local directory or, with the Kubernetes
//! executor, a pod's volume).

use async_trait::async_trait;

use super::store::StoreError;
use crate::domain::{
    CiRegistration, NewProject, NewProjectSetup, Project, ProjectId, ProjectSetup,
};
use crate::templates::{RenderReport, RenderedFile};

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
    /// poller and a reader) observe it at the same time.
    async fn record_pipeline_status(
        &self,
        id: &ProjectId,
        pipeline: i64,
        seen: Option<&str>,
        status: &str,
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
