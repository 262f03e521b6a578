//! Creating and deleting a project's pod and its workspace volume.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

use async_trait::async_trait;

use super::template::PodTemplate;
use super::{KubernetesExecutor, policy};
use crate::domain::ProjectId;
use crate::domain::WorkspaceSpec;
use crate::ports::{ExecError, ProvisionError, WorkspaceProvisioner};

/// The pod's writable scratch directory (an emptyDir), also `TMPDIR`; the exec wrapper's
/// default state directory.
const TMP_DIR: &str = "/tmp";

impl KubernetesExecutor {
    /// The pod and volume names of a project.
    pub fn project_pod_name(project: &ProjectId) -> (String, String) {
        let pod = format!("rdev-{}", project.as_str());
        let pvc = format!("{pod}-workspace");
        (pod, pvc)
    }

    /// Creates the project's workspace volume, NetworkPolicy and pod (in that order, so the
    /// pod never runs unconfined) and waits until the pod is Running and Ready, polling every
    /// `poll` up to `timeout`. Returns the pod's name. Every object is built before the first
    /// is created, so a template the API types refuse creates nothing. `Exists` when one of
    /// them is already there, leaving it alone; on any failure what this call created is
    /// deleted again.
    pub async fn provision(
        &self,
        project: &ProjectId,
        template: &PodTemplate,
        poll: Duration,
        timeout: Duration,
    ) -> Result<String, ProvisionError> {
        let (pod_name, pvc_name) = Self::project_pod_name(project);
        let selector = self.project_labels(project);
        let mut labels = template.labels.clone();
        labels.extend(selector.clone());
        if template.run_as_user <= 0 {
            return Err(provision_failed(
                project,
                format!(
                    "run_as_user must be a non-root uid, not {}",
                    template.run_as_user
                ),
            ));
        }
        let spec_error = |what: &str, e: serde_json::Error| {
            provision_failed(project, format!("{what} spec: {e}"))
        };
        let volume =
            volume_object(&pvc_name, &labels, template).map_err(|e| spec_error("volume", e))?;
        let network_policy: NetworkPolicy = serde_json::from_value(policy::network_policy(
            &pod_name,
            &labels,
            &selector,
            &template.ingress_from,
            &template.egress,
        ))
        .map_err(|e| spec_error("NetworkPolicy", e))?;
        let pod = self
            .pod_object(&pod_name, &pvc_name, &labels, template)
            .map_err(|e| spec_error("pod", e))?;

        let post = PostParams::default();
        self.volumes()
            .create(&post, &volume)
            .await
            .map_err(|e| creation_failed(project, "the workspace volume", e))?;
        let created = match self.network_policies().create(&post, &network_policy).await {
            Ok(_) => self
                .pods
                .create(&post, &pod)
                .await
                .map(drop)
                .map_err(|e| (true, creation_failed(project, "the pod", e))),
            Err(e) => Err((false, creation_failed(project, "the NetworkPolicy", e))),
        };
        if let Err((policy_is_ours, error)) = created {
            // A conflicting object belongs to someone else: only delete what this call made.
            self.undo(project, &pod_name, &pvc_name, policy_is_ours)
                .await;
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

    /// The labels every object of the project carries and its pod is found by.
    fn project_labels(&self, project: &ProjectId) -> BTreeMap<String, String> {
        BTreeMap::from([
            (self.config.project_label.clone(), "true".to_owned()),
            (
                self.config.project_id_label.clone(),
                project.as_str().to_owned(),
            ),
        ])
    }

    /// Deletes the volume (and the NetworkPolicy when `policy` says this call created it)
    /// after the pod could not be created.
    async fn undo(&self, project: &ProjectId, policy_name: &str, pvc_name: &str, policy: bool) {
        let delete = DeleteParams::default();
        if policy && let Err(cleanup) = self.network_policies().delete(policy_name, &delete).await {
            tracing::warn!(%project, %cleanup, "could not remove the NetworkPolicy");
        }
        if let Err(cleanup) = self.volumes().delete(pvc_name, &delete).await {
            tracing::warn!(%project, %cleanup, "could not remove the workspace volume");
        }
    }

    fn volumes(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.pods.clone().into_client(), &self.config.namespace)
    }

    fn network_policies(&self) -> Api<NetworkPolicy> {
        Api::namespaced(self.pods.clone().into_client(), &self.config.namespace)
    }

    /// The pod: non-root with a fixed uid, no capabilities, no privilege escalation, the
    /// runtime's default seccomp profile, no service-account token or service links, the
    /// image's filesystem read-only (unless the template needs it writable) with the
    /// workspace volume and an emptyDir `/tmp` as the writable places, and equal requests and
    /// limits.
    fn pod_object(
        &self,
        pod_name: &str,
        pvc_name: &str,
        labels: &BTreeMap<String, String>,
        template: &PodTemplate,
    ) -> Result<Pod, serde_json::Error> {
        let resources = json!({"cpu": template.cpu, "memory": template.memory});
        let seccomp = json!({"type": "RuntimeDefault"});
        let uid = template.run_as_user;
        let mut spec = json!({
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": uid,
                "runAsGroup": uid,
                "fsGroup": uid,
                "fsGroupChangePolicy": "OnRootMismatch",
                "seccompProfile": seccomp,
            },
            "containers": [{
                "name": self.config.container.clone().unwrap_or_else(|| "workspace".to_owned()),
                "image": template.image,
                "command": template.command,
                "workingDir": self.config.workspace_dir,
                "env": [
                    {"name": "HOME", "value": self.config.home_dir},
                    {"name": "TMPDIR", "value": TMP_DIR},
                ],
                "resources": {"requests": resources, "limits": resources},
                "securityContext": {
                    "runAsNonRoot": true,
                    "allowPrivilegeEscalation": false,
                    "privileged": false,
                    "readOnlyRootFilesystem": template.read_only_root,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": seccomp,
                },
                "volumeMounts": [
                    {"name": "workspace", "mountPath": self.config.workspace_dir},
                    {"name": "tmp", "mountPath": TMP_DIR},
                ],
            }],
            "volumes": [
                {"name": "workspace", "persistentVolumeClaim": {"claimName": pvc_name}},
                {"name": "tmp", "emptyDir": {"sizeLimit": template.tmp_size}},
            ],
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
                Ok((name, _)) => return Ok(name),
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

    /// Deletes the project's pod, its workspace volume and its NetworkPolicy (last, so the
    /// pod never runs without it); missing ones are not an error.
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
        )?;
        ignore_missing(
            "the NetworkPolicy",
            self.network_policies()
                .delete(&pod_name, &DeleteParams::default())
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
        let template = self
            .defaults
            .merged(spec)
            .map_err(|e| provision_failed(project, e.to_string()))?;
        self.executor
            .provision(project, &template, self.poll, self.timeout)
            .await
            .map(drop)
    }

    async fn deprovision(&self, project: &ProjectId) -> Result<(), ProvisionError> {
        self.executor.deprovision(project).await
    }
}
