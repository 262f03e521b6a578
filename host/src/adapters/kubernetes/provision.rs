//! Creating and deleting a project's pod and its workspace volume.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

use super::KubernetesExecutor;
use crate::domain::ProjectId;
use crate::ports::ExecError;

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
        }
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
    /// Ready, polling every `poll` up to `timeout`. Returns the pod's name.
    pub async fn provision(
        &self,
        project: &ProjectId,
        template: &PodTemplate,
        poll: Duration,
        timeout: Duration,
    ) -> Result<String, ExecError> {
        let (pod_name, pvc_name) = Self::project_pod_name(project);
        let labels = BTreeMap::from([
            (self.config.project_label.clone(), "true".to_owned()),
            (
                self.config.project_id_label.clone(),
                project.as_str().to_owned(),
            ),
        ]);
        let failed = |what: &str, e: kube::Error| {
            Self::unavailable(project, format!("creating {what} failed: {e}"))
        };
        let mut pvc_spec = json!({
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": template.storage}},
        });
        if let Some(class) = &template.storage_class {
            pvc_spec["storageClassName"] = json!(class);
        }
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": pvc_name, "labels": labels},
            "spec": pvc_spec,
        }))
        .map_err(|e| Self::unavailable(project, format!("volume spec: {e}")))?;
        let pvcs: Api<PersistentVolumeClaim> =
            Api::namespaced(self.pods.clone().into_client(), &self.config.namespace);
        pvcs.create(&PostParams::default(), &pvc)
            .await
            .map_err(|e| failed("the workspace volume", e))?;

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
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name, "labels": labels},
            "spec": spec,
        }))
        .map_err(|e| Self::unavailable(project, format!("pod spec: {e}")))?;
        self.pods
            .create(&PostParams::default(), &pod)
            .await
            .map_err(|e| failed("the pod", e))?;

        let deadline = Instant::now() + timeout;
        loop {
            match self.find_pod(project).await {
                Ok(name) => return Ok(name),
                Err(ExecError::WorkspaceUnavailable { reason, .. })
                    if Instant::now() >= deadline =>
                {
                    return Err(Self::unavailable(
                        project,
                        format!("pod {pod_name} not ready after {timeout:?}: {reason}"),
                    ));
                }
                Err(ExecError::WorkspaceUnavailable { .. }) => tokio::time::sleep(poll).await,
                Err(other) => return Err(other),
            }
        }
    }

    /// Deletes the project's pod and its workspace volume; missing ones are not an error.
    pub async fn deprovision(&self, project: &ProjectId) -> Result<(), ExecError> {
        let (pod_name, pvc_name) = Self::project_pod_name(project);
        let pvcs: Api<PersistentVolumeClaim> =
            Api::namespaced(self.pods.clone().into_client(), &self.config.namespace);
        let ignore_missing = |what: &str, result: Result<(), kube::Error>| match result {
            Ok(()) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(Self::unavailable(
                project,
                format!("deleting {what} failed: {e}"),
            )),
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
            pvcs.delete(&pvc_name, &DeleteParams::default())
                .await
                .map(drop),
        )
    }
}
