//! Creating and deleting a project's pod and its workspace volume.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

use async_trait::async_trait;

use super::KubernetesExecutor;
use crate::domain::ProjectId;
use crate::domain::WorkspaceSpec;
use crate::ports::{ExecError, ProvisionError, WorkspaceProvisioner};

/// What a project pod is made of (the project template's part, with operator defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTemplate {
    pub image: String,
    /// The container's command; the image must keep running for exec to reach it.
    pub command: Vec<String>,
    /// Size of the workspace volume (which also holds HOME), e.g. `10Gi`.
    pub storage: String,
    pub storage_class: Option<String>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    /// A service account without API access; its token is never mounted.
    pub service_account: Option<String>,
    /// Extra labels on the pod and its volume (cost allocation, policies); the project
    /// labels the executor selects by always win.
    pub labels: BTreeMap<String, String>,
}

impl PodTemplate {
    /// An image that sleeps forever, with a 10 GiB workspace.
    pub fn new(image: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            command: vec!["sleep".to_owned(), "infinity".to_owned()],
            storage: "10Gi".to_owned(),
            storage_class: None,
            cpu: None,
            memory: None,
            service_account: None,
            labels: BTreeMap::new(),
        }
    }

    /// The template's workspace wishes over these operator defaults.
    pub fn merged(&self, spec: &WorkspaceSpec) -> Self {
        let mut merged = self.clone();
        if let Some(image) = &spec.image {
            merged.image = image.clone();
        }
        if let Some(storage) = &spec.storage {
            merged.storage = storage.clone();
        }
        if spec.cpu.is_some() {
            merged.cpu = spec.cpu.clone();
        }
        if spec.memory.is_some() {
            merged.memory = spec.memory.clone();
        }
        merged
    }
}

impl KubernetesExecutor {
    /// The pod and volume names of a project.
    pub fn project_pod_name(project: &ProjectId) -> (String, String) {
        let pod = format!("rdev-{}", project.as_str());
        let pvc = format!("{pod}-workspace");
        (pod, pvc)
    }

    /// Creates the project's workspace volume and pod and waits until the pod is Running and
    /// Ready, polling every `poll` up to `timeout`. Returns the pod's name. `Exists` when the
    /// volume or pod is already there, leaving those alone; on any failure what this call
    /// created is deleted again.
    pub async fn provision(
        &self,
        project: &ProjectId,
        template: &PodTemplate,
        poll: Duration,
        timeout: Duration,
    ) -> Result<String, ProvisionError> {
        let (pod_name, pvc_name) = Self::project_pod_name(project);
        let mut labels = template.labels.clone();
        labels.insert(self.config.project_label.clone(), "true".to_owned());
        labels.insert(
            self.config.project_id_label.clone(),
            project.as_str().to_owned(),
        );
        let pvcs = self.volumes();
        let volume = volume_object(&pvc_name, &labels, template)
            .map_err(|e| provision_failed(project, format!("volume spec: {e}")))?;
        pvcs.create(&PostParams::default(), &volume)
            .await
            .map_err(|e| creation_failed(project, "the workspace volume", e))?;

        let pod = self
            .pod_object(&pod_name, &pvc_name, &labels, template)
            .map_err(|e| provision_failed(project, format!("pod spec: {e}")));
        let created = match pod {
            Ok(pod) => self
                .pods
                .create(&PostParams::default(), &pod)
                .await
                .map(drop)
                .map_err(|e| creation_failed(project, "the pod", e)),
            Err(e) => Err(e),
        };
        if let Err(error) = created {
            // Only the volume is ours; a conflicting pod belongs to someone else.
            if let Err(cleanup) = pvcs.delete(&pvc_name, &DeleteParams::default()).await {
                tracing::warn!(%project, %cleanup, "could not remove the workspace volume");
            }
            return Err(error);
        }

        let ready = self.wait_ready(project, &pod_name, poll, timeout).await;
        if ready.is_err()
            && let Err(cleanup) = self.deprovision(project).await
        {
            tracing::warn!(%project, %cleanup, "could not remove a workspace that never became ready");
        }
        ready
    }

    fn volumes(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.pods.clone().into_client(), &self.config.namespace)
    }

    fn pod_object(
        &self,
        pod_name: &str,
        pvc_name: &str,
        labels: &BTreeMap<String, String>,
        template: &PodTemplate,
    ) -> Result<Pod, serde_json::Error> {
        let mut resources = serde_json::Map::new();
        if let Some(cpu) = &template.cpu {
            resources.insert("cpu".into(), json!(cpu));
        }
        if let Some(memory) = &template.memory {
            resources.insert("memory".into(), json!(memory));
        }
        let mut spec = json!({
            "automountServiceAccountToken": false,
            "containers": [{
                "name": self.config.container.clone().unwrap_or_else(|| "workspace".to_owned()),
                "image": template.image,
                "command": template.command,
                "workingDir": self.config.workspace_dir,
                "env": [{"name": "HOME", "value": self.config.home_dir}],
                "resources": {"requests": resources.clone(), "limits": resources},
                "volumeMounts": [{"name": "workspace", "mountPath": self.config.workspace_dir}],
            }],
            "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": pvc_name}}],
        });
        if let Some(account) = &template.service_account {
            spec["serviceAccountName"] = json!(account);
        }
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name, "labels": labels},
            "spec": spec,
        }))
    }

    async fn wait_ready(
        &self,
        project: &ProjectId,
        pod_name: &str,
        poll: Duration,
        timeout: Duration,
    ) -> Result<String, ProvisionError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.find_pod(project).await {
                Ok(name) => return Ok(name),
                Err(ExecError::WorkspaceUnavailable { reason, .. })
                    if Instant::now() >= deadline =>
                {
                    return Err(ProvisionError::Timeout {
                        project: project.to_string(),
                        timeout_secs: timeout.as_secs(),
                        reason: format!("pod {pod_name}: {reason}"),
                    });
                }
                Err(ExecError::WorkspaceUnavailable { .. }) => tokio::time::sleep(poll).await,
                Err(other) => return Err(provision_failed(project, other.to_string())),
            }
        }
    }

    /// Deletes the project's pod and its workspace volume; missing ones are not an error.
    pub async fn deprovision(&self, project: &ProjectId) -> Result<(), ProvisionError> {
        let (pod_name, pvc_name) = Self::project_pod_name(project);
        let ignore_missing = |what: &str, result: Result<(), kube::Error>| match result {
            Ok(()) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(ProvisionError::Failed {
                project: project.to_string(),
                action: "removed",
                reason: format!("deleting {what} failed: {e}"),
            }),
        };
        ignore_missing(
            "the pod",
            self.pods
                .delete(&pod_name, &DeleteParams::default())
                .await
                .map(drop),
        )?;
        ignore_missing(
            "the workspace volume",
            self.volumes()
                .delete(&pvc_name, &DeleteParams::default())
                .await
                .map(drop),
        )
    }
}

fn volume_object(
    name: &str,
    labels: &BTreeMap<String, String>,
    template: &PodTemplate,
) -> Result<PersistentVolumeClaim, serde_json::Error> {
    let mut spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": template.storage}},
    });
    if let Some(class) = &template.storage_class {
        spec["storageClassName"] = json!(class);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }))
}

fn provision_failed(project: &ProjectId, reason: String) -> ProvisionError {
    ProvisionError::Failed {
        project: project.to_string(),
        action: "provisioned",
        reason,
    }
}

/// A conflict means the object exists: reported as `Exists` so nobody deletes it.
fn creation_failed(project: &ProjectId, what: &str, error: kube::Error) -> ProvisionError {
    match error {
        kube::Error::Api(status) if status.code == 409 => {
            ProvisionError::Exists(project.to_string())
        }
        error => provision_failed(project, format!("creating {what} failed: {error}")),
    }
}

/// Provisions project pods from the operator's defaults merged with each template's
/// `[workspace]`, for project creation.
pub struct KubernetesProvisioner {
    executor: Arc<KubernetesExecutor>,
    defaults: PodTemplate,
    poll: Duration,
    timeout: Duration,
}

impl KubernetesProvisioner {
    /// Waits up to `timeout` for a new pod to become Ready, checking every second.
    pub fn new(
        executor: Arc<KubernetesExecutor>,
        defaults: PodTemplate,
        timeout: Duration,
    ) -> Self {
        Self {
            executor,
            defaults,
            poll: Duration::from_secs(1),
            timeout,
        }
    }

    /// How often readiness is checked (tests poll faster).
    pub fn poll_every(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
}

#[async_trait]
impl WorkspaceProvisioner for KubernetesProvisioner {
    async fn provision(
        &self,
        project: &ProjectId,
        spec: &WorkspaceSpec,
    ) -> Result<(), ProvisionError> {
        let template = self.defaults.merged(spec);
        self.executor
            .provision(project, &template, self.poll, self.timeout)
            .await
            .map(drop)
    }

    async fn deprovision(&self, project: &ProjectId) -> Result<(), ProvisionError> {
        self.executor.deprovision(project).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_templates_workspace_overrides_only_what_it_names() {
        let mut defaults = PodTemplate::new("buildpack-deps:bookworm-scm");
        defaults.memory = Some("1Gi".into());
        defaults.storage_class = Some("fast".into());
        defaults.labels.insert("team".into(), "dev".into());
        let spec = WorkspaceSpec {
            image: Some("rust:1.95".into()),
            cpu: Some("2".into()),
            memory: None,
            storage: Some("20Gi".into()),
        };
        let merged = defaults.merged(&spec);
        assert_eq!(merged.image, "rust:1.95");
        assert_eq!(merged.cpu.as_deref(), Some("2"));
        assert_eq!(
            merged.memory.as_deref(),
            Some("1Gi"),
            "kept from the defaults"
        );
        assert_eq!(merged.storage, "20Gi");
        assert_eq!(merged.storage_class.as_deref(), Some("fast"));
        assert_eq!(merged.labels["team"], "dev");
        assert_eq!(defaults.merged(&WorkspaceSpec::default()), defaults);
    }
}
