//! The one place an executor is chosen and built: [`build_executor`]. `serve`, `worker`,
//! `projects` and `exec` all call it, so a new kind of executor (or a new default, such as
//! the confined local executor) is plugged in here once and every subcommand gets it.

use std::sync::Arc;

use anyhow::Context as _;

use super::config::Config;
use super::kubernetes::describe;
use crate::adapters::kubernetes::{KubernetesExecutor, KubernetesProvisioner, KubernetesSeeder};
use crate::adapters::local::seed::{LocalProvisioner, LocalSeeder};
use crate::adapters::local::{LocalExecutor, WorkspaceLayout, build_local_executor};
use crate::ports::{
    Confinement, Executor, NetworkPolicyStore, SecretResolver, WorkspaceProvisioner,
    WorkspaceSeeder,
};

/// Where commands run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// Processes on this machine, one directory per project under the data dir.
    #[default]
    Local,
    /// Processes in one pod per project, reached through the Kubernetes API server; project
    /// creation provisions the pod and its volume.
    Kubernetes,
}

/// The executor and the matching ways to create and seed workspaces.
pub struct Workspaces {
    /// Runs the providers' processes.
    pub executor: Arc<dyn Executor>,
    /// Writes a template's files into a new workspace.
    pub seeder: Arc<dyn WorkspaceSeeder>,
    /// Creates (and removes) a project's workspace: a directory or a pod.
    pub provisioner: Arc<dyn WorkspaceProvisioner>,
    /// How commands are confined, for /readyz and GET /providers.
    pub confinement: Confinement,
}

/// What the executor is built for, which decides how the local one confines commands (and
/// whether the Kubernetes one may kill what a project's earlier commands left).
pub enum LocalUse {
    /// Running queued commands (`rdev serve`, `rdev worker`): confined as
    /// `config.confinement` says, each project under its own network policy from the store.
    Queue(Arc<dyn NetworkPolicyStore>),
    /// One request in one directory (`rdev exec --dir`): confined as `config.confinement`
    /// says, under the default allow-list (no server, so no stored network policies).
    OneShot,
    /// Provisioning workspaces without running anything in them (`rdev projects`): a plain
    /// executor, since no command of a provider runs.
    Provision,
}

/// Builds the configured executor; with Kubernetes, refuses to start unless the API server
/// answers and the credentials may list pods in the namespace.
pub async fn build_executor(
    config: &Config,
    secrets: Arc<dyn SecretResolver>,
    local: LocalUse,
) -> anyhow::Result<Workspaces> {
    match config.executor {
        ExecutorKind::Local => {
            let root = config.data_dir.join("projects");
            let layout = match &config.local_workspace {
                Some(dir) => WorkspaceLayout::Fixed { dir: dir.clone() },
                None => WorkspaceLayout::PerProject { root: root.clone() },
            };
            let policies = match local {
                LocalUse::Queue(policies) => Some(policies),
                LocalUse::OneShot => None,
                LocalUse::Provision => {
                    let plain = LocalExecutor::new(layout, secrets);
                    return Ok(local_workspaces(
                        plain,
                        root,
                        Confinement::unconfined(Vec::new()),
                    ));
                }
            };
            let (executor, confinement) = build_local_executor(
                layout,
                &config.data_dir,
                secrets,
                &config.confinement,
                policies,
            )?;
            Ok(local_workspaces(executor, root, confinement))
        }
        ExecutorKind::Kubernetes => {
            let queued = matches!(local, LocalUse::Queue(_));
            kubernetes(config, secrets, queued).await
        }
    }
}

/// The local executor with the seeder and provisioner of workspaces under `root`.
fn local_workspaces(
    executor: LocalExecutor,
    root: std::path::PathBuf,
    confinement: Confinement,
) -> Workspaces {
    Workspaces {
        executor: Arc::new(executor),
        seeder: Arc::new(LocalSeeder::new(root)),
        provisioner: Arc::new(LocalProvisioner),
        confinement,
    }
}

/// The Kubernetes executor, checked against the cluster before anything runs. `queued`: it
/// runs the queue's commands (serve, worker), so a project's earlier commands have ended
/// before its next one starts, and what they left in the pod may be killed.
async fn kubernetes(
    config: &Config,
    secrets: Arc<dyn SecretResolver>,
    queued: bool,
) -> anyhow::Result<Workspaces> {
    let settings = &config.kubernetes;
    let credentials = settings.credentials();
    let mut executor = settings.executor.clone();
    executor.reap_leftovers = queued && config.queue.max_running_per_project == Some(1);
    if queued && !executor.reap_leftovers {
        tracing::warn!(
            "max_running_per_project is not 1: processes a dead rdev left in project pods \
             are not killed before the project's next command (another replica may be \
             running one of its commands)"
        );
    }
    let kube = KubernetesExecutor::connect(credentials.clone(), executor, secrets)
        .await
        .with_context(|| {
            format!(
                "the kubernetes executor cannot reach a cluster with {} (choose one with \
                 --kubernetes-api-url, --kubernetes-in-cluster or --kubeconfig, or in the \
                 config file's [kubernetes] table)",
                describe(&credentials)
            )
        })?;
    kube.check_access().await.with_context(|| {
        format!(
            "the kubernetes executor cannot use namespace {} with {}",
            settings.executor.namespace,
            describe(&credentials)
        )
    })?;
    tracing::info!(
        namespace = %settings.executor.namespace,
        cluster = %describe(&credentials),
        "kubernetes executor ready"
    );
    let kube = Arc::new(kube);
    let provisioner =
        KubernetesProvisioner::new(kube.clone(), settings.pod.clone(), settings.ready_timeout)
            .poll_every(settings.ready_poll);
    Ok(Workspaces {
        executor: kube.clone(),
        seeder: Arc::new(KubernetesSeeder::new(kube)),
        provisioner: Arc::new(provisioner),
        confinement: Confinement {
            mode: "kubernetes".to_owned(),
            enforced: vec![
                "one pod per project".to_owned(),
                "process tree killed with its command (environment tag)".to_owned(),
            ],
            missing: Vec::new(),
            default_allow: Vec::new(),
        },
    })
}
