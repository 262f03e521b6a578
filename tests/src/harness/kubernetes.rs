//! A Kubernetes executor against the loopback API-server double, with one project pod.

use std::path::PathBuf;
use std::sync::Arc;

use rdev::adapters::kubernetes::{Credentials, KubernetesConfig, KubernetesExecutor};
use rdev::ports::SecretResolver;

use crate::doubles::kube_api::FakeKubeApi;

/// The namespace the helpers put project pods in.
pub const NAMESPACE: &str = "rdev-projects";

/// The labels that make pod `ws-<project>` the workspace of `project`.
pub fn project_labels(project: &str) -> [(&'static str, String); 2] {
    [
        ("rdev.orchard9.ai/project", "true".to_owned()),
        ("rdev.orchard9.ai/project-id", project.to_owned()),
    ]
}

/// The double, an executor talking to it, and the pod's workspace directory.
pub struct KubeProject {
    pub executor: KubernetesExecutor,
    pub api: FakeKubeApi,
    pub workspace: PathBuf,
}

/// Starts the double with one Running, Ready pod for `project` whose workspace and state
/// directories exist, and an executor configured for it.
pub async fn project_pod(project: &str, secrets: Arc<dyn SecretResolver>) -> KubeProject {
    let api = FakeKubeApi::start().expect("API double starts");
    let labels = project_labels(project);
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let pod_dir = api
        .add_pod(
            NAMESPACE,
            &format!("ws-{project}"),
            &labels,
            "Running",
            true,
        )
        .expect("pod");
    let workspace = pod_dir.join("workspace");
    std::fs::create_dir_all(&workspace).expect("workspace");
    std::fs::create_dir_all(pod_dir.join("tmp")).expect("state dir");
    let mut config = KubernetesConfig::new(NAMESPACE);
    config.workspace_dir = workspace.display().to_string();
    config.home_dir = workspace.join(".rdev/home").display().to_string();
    config.state_dir = pod_dir.join("tmp").display().to_string();
    let executor = KubernetesExecutor::connect(Credentials::Url(api.url()), config, secrets)
        .await
        .expect("client builds");
    KubeProject {
        executor,
        api,
        workspace,
    }
}
