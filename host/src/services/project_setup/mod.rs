//! Creating a project from a template: validate, provision the workspace (a pod and volume
//! with the Kubernetes executor), seed it (clone, render, first commit), record the project
//! with its template and variables, then register it with CI.
//! A CI failure never undoes the project: it is recorded, audited and can be retried.
//!
//! Provisioning or seeding failing (a pod that never becomes Ready, a clone that fails)
//! removes what was created and writes no project record, so the same request can simply be
//! retried; only CI registration happens after the record exists.
//!
//! The HTTP API mounts this service; it depends only on ports, so any executor's seeder and
//! any CI adapter plug in.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::{
    CiRegistration, CiState, IdError, NewAuditEntry, NewProject, NewProjectSetup, Project,
    ProjectId, ProjectSetup,
};
use crate::domain::{RenderReport, RenderedFile, WorkspaceSpec};
use crate::ports::{
    AuditLog, Ci, CiError, ProjectSetupStore, ProjectStore, ProvisionError, SecretResolver,
    SeedError, StoreError, Stores, WebhookStore, WorkspaceProvisioner, WorkspaceSeeder,
};
use crate::services::templates::{
    ResolvedVars, Template, TemplateCatalog, TemplateError, TemplateInfo,
};

mod ci;
pub mod poller;

use ci::check_full_name;
pub use ci::{CiStatus, ObservedPipeline, PollReport, forge_full_name};

/// The `project.created` audit entry: what the project was made from and what was written.
fn created_entry(
    actor: &str,
    id: &ProjectId,
    setup: &ProjectSetup,
    commit: &Option<String>,
    files: &RenderReport,
) -> NewAuditEntry {
    NewAuditEntry {
        actor: actor.to_owned(),
        action: "project.created".to_owned(),
        project_id: Some(id.to_string()),
        command_id: None,
        details: serde_json::json!({
            "template": setup.template,
            "vars": setup.vars,
            "repo": setup.repo,
            "ci_repo": setup.ci_repo,
            "commit": commit,
            "files": files.written.len(),
        }),
    }
}

/// `POST /projects` with a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateProject {
    pub id: String,
    pub template: String,
    /// Strings or booleans, by variable name; missing ones take their defaults.
    #[serde(default)]
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Clone URL to start the workspace from.
    #[serde(default)]
    pub repo: Option<String>,
    /// `owner/name` of the forge repository CI builds; derived from `repo` when absent.
    #[serde(default)]
    pub ci_repo: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// What creation did.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CreatedProject {
    pub project: Project,
    pub setup: ProjectSetup,
    pub files: RenderReport,
    /// The commit that recorded the template, if anything was written.
    pub commit: Option<String>,
}

/// Why a setup operation failed; the API maps it to HTTP in `api::error`.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    InvalidId(#[from] IdError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("CI is not configured on this server")]
    CiNotConfigured,
    #[error("project {0} has no forge repository for CI (give ci_repo or a repo URL)")]
    NoCiRepo(String),
    #[error("CI registration of project {project} failed: {source}")]
    Ci {
        project: String,
        #[source]
        source: CiError,
    },
    #[error("credential {0:?} for a CI secret does not exist")]
    MissingCredential(String),
    /// [`ProjectSetupService::register`] found the id taken.
    #[error("{0}")]
    ProjectExists(String),
}

/// The project-setup service.
#[derive(Clone)]
pub struct ProjectSetupService {
    setups: Arc<dyn ProjectSetupStore>,
    projects: Arc<dyn ProjectStore>,
    audit: Arc<dyn AuditLog>,
    webhooks: Arc<dyn WebhookStore>,
    secrets: Arc<dyn SecretResolver>,
    seeder: Arc<dyn WorkspaceSeeder>,
    provisioner: Arc<dyn WorkspaceProvisioner>,
    ci: Option<Arc<dyn Ci>>,
    templates_dir: Option<PathBuf>,
}

impl std::fmt::Debug for ProjectSetupService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectSetupService")
            .field("ci", &self.ci.is_some())
            .field("templates_dir", &self.templates_dir)
            .finish_non_exhaustive()
    }
}

impl ProjectSetupService {
    /// Wires the service to one database's stores, a seeder and a provisioner for the
    /// configured executor, a CI client (`None`: projects are created without CI) and the
    /// operator's templates dir.
    pub fn new(
        stores: &Stores,
        seeder: Arc<dyn WorkspaceSeeder>,
        provisioner: Arc<dyn WorkspaceProvisioner>,
        ci: Option<Arc<dyn Ci>>,
        templates_dir: Option<PathBuf>,
    ) -> Self {
        let secrets: Arc<dyn SecretResolver> = stores.credentials.clone();
        Self {
            setups: stores.setups.clone(),
            projects: stores.projects.clone(),
            audit: stores.audit.clone(),
            webhooks: stores.webhooks.clone(),
            secrets,
            seeder,
            provisioner,
            ci,
            templates_dir,
        }
    }

    /// The catalog as it is on disk now, so a template dropped into the directory is
    /// available without a restart.
    pub fn catalog(&self) -> TemplateCatalog {
        TemplateCatalog::load(self.templates_dir.as_deref())
    }

    /// `GET /templates`.
    pub fn templates(&self) -> Vec<TemplateInfo> {
        self.catalog().list().map(Template::info).collect()
    }

    /// `POST /projects` with a template. CI registration runs at the end when CI is
    /// configured and a forge repository is known; its failure is recorded in the returned
    /// setup (`ci.state == failed`) and does not fail the creation.
    pub async fn create(
        &self,
        actor: &str,
        request: CreateProject,
    ) -> Result<CreatedProject, SetupError> {
        let id = ProjectId::parse(request.id.as_str())?;
        let catalog = self.catalog();
        let template = catalog.get(&request.template)?;
        let vars = template.resolve(&request.vars)?;
        let files = template.render_files(&id, &vars)?;
        let ci_repo = request
            .ci_repo
            .clone()
            .or_else(|| request.repo.as_deref().and_then(forge_full_name));
        if let Some(name) = &ci_repo {
            check_full_name(name)?;
        }
        let settings = &template.manifest.woodpecker;

        self.refuse_existing(&id).await?;
        self.provisioner
            .provision(&id, &template.manifest.workspace)
            .await?;
        if let Err(error) = self
            .seeder
            .create(&id, request.repo.as_deref(), &settings.branch)
            .await
        {
            if !matches!(error, SeedError::Exists(_)) {
                self.release(&id).await;
            }
            return Err(error.into());
        }
        let seeded = self
            .seed_and_record(&id, template, &vars, files, &request, ci_repo)
            .await;
        let (files, commit, project, mut setup) = match seeded {
            Ok(done) => done,
            Err(error) => {
                if let Err(cleanup) = self.seeder.discard(&id).await {
                    tracing::warn!(project = %id, %cleanup, "could not remove a half-created workspace");
                }
                self.release(&id).await;
                return Err(error);
            }
        };
        self.announce(&id, created_entry(actor, &id, &setup, &commit, &files))
            .await?;
        if setup.ci.state == CiState::Pending {
            // The outcome is stored either way; the caller sees it in `setup.ci`.
            let _ = self.register_ci(actor, &id).await;
            setup = self.setups.get_setup(&id).await?;
        }
        Ok(CreatedProject {
            project,
            setup,
            files,
            commit,
        })
    }

    /// Writes and commits the template's files into the provisioned workspace, then records
    /// the project with its setup; the caller cleans up when this fails.
    async fn seed_and_record(
        &self,
        id: &ProjectId,
        template: &Template,
        vars: &ResolvedVars,
        files: Vec<RenderedFile>,
        request: &CreateProject,
        ci_repo: Option<String>,
    ) -> Result<(RenderReport, Option<String>, Project, ProjectSetup), SetupError> {
        let report = self.seeder.write(id, files).await?;
        let message = format!("Create project {id} from template {}", template.name());
        let commit = self.seeder.commit(id, &message).await?;
        let settings = &template.manifest.woodpecker;
        let ci_state = if settings.enabled && self.ci.is_some() && ci_repo.is_some() {
            CiState::Pending
        } else {
            CiState::Disabled
        };
        let setup = NewProjectSetup {
            template: template.name().to_owned(),
            vars: vars
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
                .collect(),
            repo: request.repo.clone(),
            ci_repo,
            ci: CiRegistration {
                state: ci_state,
                ..CiRegistration::pending()
            },
        };
        let project = NewProject {
            id: id.clone(),
            display_name: request.display_name.clone(),
        };
        let (project, setup) = self.setups.create_with_setup(project, setup).await?;
        Ok((report, commit, project, setup))
    }

    /// `POST /projects` without a template: provisions an empty workspace from the
    /// operator's defaults, then records the project. A failure leaves no record and no
    /// workspace behind.
    /// An id already taken is [`SetupError::ProjectExists`].
    pub async fn register(&self, project: NewProject) -> Result<Project, SetupError> {
        self.record_new(project).await.map_err(|error| match error {
            SetupError::Store(StoreError::Conflict(message)) => SetupError::ProjectExists(message),
            other => other,
        })
    }

    async fn record_new(&self, project: NewProject) -> Result<Project, SetupError> {
        let id = project.id.clone();
        self.refuse_existing(&id).await?;
        self.provisioner
            .provision(&id, &WorkspaceSpec::default())
            .await?;
        match self.projects.create(project).await {
            Ok(project) => Ok(project),
            Err(error) => {
                // A conflict means another request recorded the id first: its workspace is
                // the one just found existing by the provisioner, or ours; leave it.
                if !matches!(error, StoreError::Conflict(_)) {
                    self.release(&id).await;
                }
                Err(error.into())
            }
        }
    }

    /// Removes a deleted project's workspace (pod and volume). Safe to repeat, so a `DELETE`
    /// retried after a failure here finishes the job.
    pub async fn remove_workspace(&self, id: &ProjectId) -> Result<(), SetupError> {
        Ok(self.provisioner.deprovision(id).await?)
    }

    /// `Conflict` before anything is provisioned, so a second create never touches the
    /// workspace of the project that owns the id.
    async fn refuse_existing(&self, id: &ProjectId) -> Result<(), SetupError> {
        match self.projects.get(id).await {
            Ok(_) => Err(SetupError::Store(StoreError::Conflict(format!(
                "project {id} already exists"
            )))),
            Err(StoreError::NotFound { .. }) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    /// Best-effort removal of a workspace whose project was not recorded.
    async fn release(&self, id: &ProjectId) {
        if let Err(cleanup) = self.provisioner.deprovision(id).await {
            tracing::warn!(project = %id, %cleanup, "could not release a half-created workspace");
        }
    }

    /// The stored setup of a project created from a template.
    pub async fn setup(&self, id: &ProjectId) -> Result<ProjectSetup, SetupError> {
        Ok(self.setups.get_setup(id).await?)
    }

    async fn audit(&self, entry: NewAuditEntry) -> Result<(), SetupError> {
        self.audit.append(entry).await?;
        Ok(())
    }

    /// A project event: audited and queued for the project's webhooks in one transaction.
    async fn announce(&self, id: &ProjectId, entry: NewAuditEntry) -> Result<(), SetupError> {
        crate::services::webhooks::record_project_event(self.webhooks.as_ref(), id, entry).await?;
        Ok(())
    }
}
