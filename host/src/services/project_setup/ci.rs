//! The project's CI side of setup: registering its repository, reading its pipeline's
//! status, and the poller's pass over unfinished pipelines.

use serde::Serialize;

use super::{ProjectSetupService, SetupError};
use crate::domain::{CiRegistration, CiState, NewAuditEntry, ProjectId, ProjectSetup};
use crate::ports::{
    Announcement, Ci, CiError, CiSecret, FINISHED_STATUSES, LogLine, Pipeline, StoreError,
};

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

/// `owner/name` from a clone URL (`https://forge/owner/name.git`, `git@forge:owner/name`).
pub fn forge_full_name(url: &str) -> Option<String> {
    let trimmed = url.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    let mut parts = trimmed.rsplit(['/', ':']);
    let name = parts.next().filter(|s| !s.is_empty())?;
    let owner = parts.next().filter(|s| !s.is_empty() && !s.contains('@'))?;
    Some(format!("{owner}/{name}"))
}

impl ProjectSetupService {
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
pub(super) fn check_full_name(name: &str) -> Result<(), SetupError> {
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
