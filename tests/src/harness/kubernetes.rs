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

/// The Kubernetes version whose schemas manifests and provisioned objects are checked
/// against: the one the host's `k8s-openapi` types are built for.
pub const SCHEMA_VERSION: &str = "1.33.0";

/// Runs PyPI's `kubernetes-validate --strict` (offline schemas; an unknown field is an error)
/// on `files`, from PATH or pip's user directory. `Err` says why it could not run.
pub fn kubernetes_validate(files: &[PathBuf]) -> Result<std::process::Output, String> {
    let user_bin = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".local/bin/kubernetes-validate"));
    let candidates = std::iter::once(PathBuf::from("kubernetes-validate")).chain(user_bin);
    for program in candidates {
        let output = std::process::Command::new(&program)
            .args(["--strict", "-k", SCHEMA_VERSION])
            .args(files)
            .output();
        match output {
            Ok(output) => return Ok(output),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("running {}: {e}", program.display())),
        }
    }
    Err("kubernetes-validate is not installed (pip install --user kubernetes-validate)".into())
}

/// How many documents `kubernetes-validate` reported as passing, from its combined output.
pub fn validated_documents(output: &std::process::Output) -> usize {
    let text = [output.stdout.as_slice(), output.stderr.as_slice()].concat();
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|line| line.contains(" passed for resource "))
        .count()
}
