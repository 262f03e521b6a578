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
use crate::domain::{RenderReport, WorkspaceSpec};
use crate::ports::{
    Announcement, AuditLog, Ci, CiError, CiSecret, FINISHED_STATUSES, LogLine, Pipeline,
    ProjectSetupStore, ProjectStore, ProvisionError, SecretResolver, SeedError, StoreError, Stores,
    WebhookStore, WorkspaceProvisioner, WorkspaceSeeder,
};
use crate::services::templates::{Template, TemplateCatalog, TemplateError, TemplateInfo};

pub mod poller;

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

/// `GET /projects/{id}/ci`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CiStatus {
    pub ci_repo: Option<String>,
    pub registration: CiRegistration,
    /// The last triggered pipeline as CI reports it now.
    pub pipeline: Option<Pipeline>,
    /// Its log lines, when asked for.
    pub logs: Vec<LogLine>,
}

/// A pipeline as [`ProjectSetupService::observe_pipeline`] saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedPipeline {
    pub repo_id: i64,
    /// The registration with the status just seen.
    pub registration: CiRegistration,
    pub pipeline: Pipeline,
}

/// What one pass of [`ProjectSetupService::poll_unfinished`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Pipelines seen finished in this pass.
    pub finished: usize,
    /// Pipelines still running or pending.
    pub watching: usize,
    /// Project and reason for each pipeline CI could not be asked about.
    pub errors: Vec<(String, String)>,
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

/// `owner/name` from a clone URL (`https://forge/owner/name.git`, `git@forge:owner/name`).
pub fn forge_full_name(url: &str) -> Option<String> {
    let trimmed = url.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    let mut parts = trimmed.rsplit(['/', ':']);
    let name = parts.next().filter(|s| !s.is_empty())?;
    let owner = parts.next().filter(|s| !s.is_empty() && !s.contains('@'))?;
    Some(format!("{owner}/{name}"))
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
        let seeded = async {
            let report = self.seeder.write(&id, files).await?;
            let message = format!("Create project {id} from template {}", template.name());
            let commit = self.seeder.commit(&id, &message).await?;
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
                ci_repo: ci_repo.clone(),
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
            Ok::<_, SetupError>((report, commit, project, setup))
        }
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
        self.announce(
            &id,
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
            },
        )
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

    /// Activates the project's forge repository, sets the template's secrets and triggers a
    /// pipeline. Also the retry after a failed registration (`POST /projects/{id}/ci`).
    pub async fn register_ci(
        &self,
        actor: &str,
        id: &ProjectId,
    ) -> Result<CiRegistration, SetupError> {
        let ci = self.ci.clone().ok_or(SetupError::CiNotConfigured)?;
        let setup = self.setups.get_setup(id).await?;
        let ci_repo = setup
            .ci_repo
            .clone()
            .ok_or_else(|| SetupError::NoCiRepo(id.to_string()))?;
        let mut registration = setup.ci.clone();
        match self.try_register(ci.as_ref(), id, &setup, &ci_repo).await {
            Ok((repo_id, pipeline)) => {
                registration = CiRegistration {
                    state: CiState::Registered,
                    repo_id: Some(repo_id),
                    pipeline: Some(pipeline.number),
                    pipeline_status: Some(pipeline.status.clone()),
                    error: None,
                };
                self.setups.update_ci(id, &registration).await?;
                self.announce(
                    id,
                    NewAuditEntry {
                        actor: actor.to_owned(),
                        action: "ci.pipeline.started".to_owned(),
                        project_id: Some(id.to_string()),
                        command_id: None,
                        details: serde_json::json!({
                            "ci_repo": ci_repo,
                            "repo_id": repo_id,
                            "pipeline": pipeline.number,
                            "branch": pipeline.branch,
                            "status": pipeline.status,
                        }),
                    },
                )
                .await?;
                Ok(registration)
            }
            Err(error) => {
                registration.state = CiState::Failed;
                registration.error = Some(error.to_string());
                self.setups.update_ci(id, &registration).await?;
                self.audit(NewAuditEntry {
                    actor: actor.to_owned(),
                    action: "ci.registration.failed".to_owned(),
                    project_id: Some(id.to_string()),
                    command_id: None,
                    details: serde_json::json!({ "ci_repo": ci_repo, "error": error.to_string() }),
                })
                .await?;
                Err(error)
            }
        }
    }

    async fn try_register(
        &self,
        ci: &dyn Ci,
        id: &ProjectId,
        setup: &ProjectSetup,
        ci_repo: &str,
    ) -> Result<(i64, Pipeline), SetupError> {
        let catalog = self.catalog();
        let template = catalog.get(&setup.template)?;
        let vars = template.resolve(&setup.vars)?;
        let settings = &template.manifest.woodpecker;
        let ci_error = |source| SetupError::Ci {
            project: id.to_string(),
            source,
        };
        let repo = ci.activate(ci_repo).await.map_err(ci_error)?;
        for spec in &settings.secrets {
            let value = self
                .secrets
                .resolve(spec.credential.as_str())
                .await
                .map_err(|e| SetupError::Ci {
                    project: id.to_string(),
                    source: CiError::Credential(e.to_string()),
                })?
                .ok_or_else(|| SetupError::MissingCredential(spec.credential.to_string()))?;
            let secret = CiSecret {
                name: spec.name.clone(),
                value,
                events: spec.events.clone(),
            };
            ci.set_secret(repo.id, &secret).await.map_err(ci_error)?;
        }
        let variables = template.pipeline_variables(id, &vars)?;
        let pipeline = ci
            .trigger(repo.id, &settings.branch, &variables)
            .await
            .map_err(ci_error)?;
        Ok((repo.id, pipeline))
    }

    /// `GET /projects/{id}/ci`: the registration and, when a pipeline was triggered, its
    /// current state (and logs when `with_logs`). A changed status is stored, and
    /// `ci.pipeline.finished` is audited once (see [`ProjectSetupService::observe_pipeline`]).
    pub async fn ci_status(
        &self,
        actor: &str,
        id: &ProjectId,
        with_logs: bool,
    ) -> Result<CiStatus, SetupError> {
        let setup = self.setups.get_setup(id).await?;
        let Some(observed) = self.observe_pipeline(actor, &setup).await? else {
            return Ok(CiStatus {
                ci_repo: setup.ci_repo,
                registration: setup.ci,
                pipeline: None,
                logs: Vec::new(),
            });
        };
        let logs = match (&self.ci, with_logs) {
            (Some(ci), true) => ci
                .logs(observed.repo_id, observed.pipeline.number)
                .await
                .map_err(|source| SetupError::Ci {
                    project: id.to_string(),
                    source,
                })?,
            _ => Vec::new(),
        };
        Ok(CiStatus {
            ci_repo: setup.ci_repo,
            registration: observed.registration,
            pipeline: Some(observed.pipeline),
            logs,
        })
    }

    /// Asks CI for the state of the setup's last triggered pipeline (`None` without CI or
    /// without a pipeline) and stores a changed status. The store's compare-and-set on the
    /// pipeline number and the previously seen status makes exactly one observer record each
    /// change, so `ci.pipeline.finished` is audited once per pipeline however many replicas,
    /// pollers and `GET /projects/{id}/ci` readers see it finish.
    pub async fn observe_pipeline(
        &self,
        actor: &str,
        setup: &ProjectSetup,
    ) -> Result<Option<ObservedPipeline>, SetupError> {
        let id = &setup.project_id;
        let mut registration = setup.ci.clone();
        let (Some(ci), Some(repo_id), Some(number)) = (
            self.ci.as_ref(),
            registration.repo_id,
            registration.pipeline,
        ) else {
            return Ok(None);
        };
        let pipeline = ci
            .pipeline(repo_id, number)
            .await
            .map_err(|source| SetupError::Ci {
                project: id.to_string(),
                source,
            })?;
        let seen = registration.pipeline_status.clone();
        if seen.as_deref() != Some(pipeline.status.as_str()) {
            let was_finished = seen.as_deref().is_some_and(Pipeline::status_is_finished);
            let announce = (pipeline.is_finished() && !was_finished).then(|| {
                let audit = pipeline_finished_entry(actor, id, repo_id, &pipeline);
                Announcement {
                    event: crate::services::webhooks::project_event(id, &audit),
                    audit,
                }
            });
            self.setups
                .record_pipeline_status(id, number, seen.as_deref(), &pipeline.status, announce)
                .await?;
            registration.pipeline_status = Some(pipeline.status.clone());
        }
        Ok(Some(ObservedPipeline {
            repo_id,
            registration,
            pipeline,
        }))
    }

    /// Observes every registered pipeline not yet known to have finished, for the
    /// background poller. One project's CI failure does not stop the others; the errors
    /// are returned by project.
    pub async fn poll_unfinished(&self, actor: &str) -> Result<PollReport, SetupError> {
        let mut report = PollReport::default();
        if self.ci.is_none() {
            return Ok(report);
        }
        for setup in self.setups.ci_unfinished(FINISHED_STATUSES).await? {
            match self.observe_pipeline(actor, &setup).await {
                Ok(Some(observed)) if observed.pipeline.is_finished() => report.finished += 1,
                Ok(_) => report.watching += 1,
                Err(error) => report
                    .errors
                    .push((setup.project_id.to_string(), error.to_string())),
            }
        }
        Ok(report)
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

/// The audit entry of a finished pipeline, the one place `ci.pipeline.finished` is built;
/// the store writes it (and its webhook event) with the status change that observed it.
fn pipeline_finished_entry(
    actor: &str,
    id: &ProjectId,
    repo_id: i64,
    pipeline: &Pipeline,
) -> NewAuditEntry {
    NewAuditEntry {
        actor: actor.to_owned(),
        action: "ci.pipeline.finished".to_owned(),
        project_id: Some(id.to_string()),
        command_id: None,
        details: serde_json::json!({
            "repo_id": repo_id,
            "pipeline": pipeline.number,
            "status": pipeline.status,
            "started": pipeline.started,
            "finished": pipeline.finished,
        }),
    }
}

/// `owner/name` with forge-safe characters only, since it is matched against CI's list and
/// logged.
fn check_full_name(name: &str) -> Result<(), SetupError> {
    let ok = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    match name.split_once('/') {
        Some((owner, repo)) if ok(owner) && ok(repo) => Ok(()),
        _ => Err(SetupError::Store(StoreError::Invalid(format!(
            "ci_repo {name:?} must be owner/name"
        )))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forge_names_come_from_clone_urls() {
        assert_eq!(
            forge_full_name("https://forge.example/acme/demo.git").as_deref(),
            Some("acme/demo")
        );
        assert_eq!(
            forge_full_name("git@forge.example:acme/demo.git").as_deref(),
            Some("acme/demo")
        );
        assert_eq!(
            forge_full_name("ssh://git@forge.example/acme/demo/").as_deref(),
            Some("acme/demo")
        );
        assert_eq!(forge_full_name("demo"), None);
    }

    #[test]
    fn full_names_are_checked() {
        assert!(check_full_name("acme/demo.rs").is_ok());
        for bad in ["acme", "acme/", "/demo", "a/b/c", "../x", "a b/c"] {
            assert!(check_full_name(bad).is_err(), "{bad}");
        }
    }
}
