//! How rdev reaches a cluster for the Kubernetes executor, from flags/`RDEV_KUBERNETES_*`
//! over the file's `[kubernetes]` table over the defaults. Every subcommand that runs
//! commands takes these flags, so `rdev worker` serves a Kubernetes deployment as
//! `rdev serve` does.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::file::KubernetesFile;
use super::stores::redact_url;
use crate::adapters::kubernetes::{Credentials, KubernetesConfig, PodTemplate};

/// Where the Kubernetes executor finds the cluster; only read with `--executor kubernetes`.
/// One source is used: the API URL, else in-cluster, else a kubeconfig (path and/or
/// context), else in-cluster when running in a pod and the default kubeconfig otherwise.
#[derive(Debug, Default, Clone, Args)]
pub struct KubernetesArgs {
    /// Namespace of the project pods [default: rdev].
    #[arg(long = "kubernetes-namespace", env = "RDEV_KUBERNETES_NAMESPACE")]
    pub namespace: Option<String>,
    /// Use the pod's service account.
    #[arg(long = "kubernetes-in-cluster", env = "RDEV_KUBERNETES_IN_CLUSTER")]
    pub in_cluster: bool,
    /// A kubeconfig file [default: $KUBECONFIG or ~/.kube/config].
    #[arg(long = "kubeconfig", env = "RDEV_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context [default: the current one].
    #[arg(long = "kubernetes-context", env = "RDEV_KUBERNETES_CONTEXT")]
    pub context: Option<String>,
    /// An API server URL used without credentials, as behind `kubectl proxy`.
    #[arg(long = "kubernetes-api-url", env = "RDEV_KUBERNETES_API_URL")]
    pub api_url: Option<String>,
    /// Image of project pods whose template names none [default: buildpack-deps:bookworm-scm].
    #[arg(long = "kubernetes-image", env = "RDEV_KUBERNETES_IMAGE")]
    pub image: Option<String>,
}

/// How rdev reaches the cluster and what it creates there, for the Kubernetes executor.
#[derive(Debug, Clone)]
pub struct KubernetesServeConfig {
    /// `None`: in-cluster when running in a pod (`KUBERNETES_SERVICE_HOST` is set), else the
    /// default kubeconfig and its current context.
    pub credentials: Option<Credentials>,
    /// Namespace, labels and paths inside project pods.
    pub executor: KubernetesConfig,
    /// The operator's pod defaults; a template's `[workspace]` overrides image and resources.
    pub pod: PodTemplate,
    /// How long project creation waits for a new pod to become Ready.
    pub ready_timeout: Duration,
    /// How often readiness is checked meanwhile.
    pub ready_poll: Duration,
}

/// The image project pods get when neither the operator nor the template names one: Debian
/// with git, tar and util-linux, which seeding and the exec wrapper need.
pub const DEFAULT_WORKSPACE_IMAGE: &str = "buildpack-deps:bookworm-scm";

impl Default for KubernetesServeConfig {
    fn default() -> Self {
        Self {
            credentials: None,
            executor: KubernetesConfig::new("rdev"),
            pod: PodTemplate::new(DEFAULT_WORKSPACE_IMAGE),
            ready_timeout: Duration::from_secs(300),
            ready_poll: Duration::from_secs(1),
        }
    }
}

impl KubernetesServeConfig {
    /// The credentials in effect (see [`Self::credentials`]).
    pub fn credentials(&self) -> Credentials {
        self.credentials.clone().unwrap_or_else(|| {
            if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
                Credentials::InCluster
            } else {
                Credentials::Kubeconfig {
                    path: None,
                    context: None,
                }
            }
        })
    }
}

/// Replaces `target` when `value` is set.
fn set(target: &mut String, value: Option<String>) {
    if let Some(value) = value {
        *target = value;
    }
}

impl KubernetesArgs {
    /// Flags/environment over the file's table over the defaults.
    pub fn resolve(self, file: KubernetesFile) -> KubernetesServeConfig {
        let mut config = KubernetesServeConfig::default();
        let url = self.api_url.or(file.api_url);
        let in_cluster = self.in_cluster || file.in_cluster.unwrap_or(false);
        let kubeconfig = self.kubeconfig.or(file.kubeconfig);
        let context = self.context.or(file.context);
        config.credentials = if let Some(url) = url {
            Some(Credentials::Url(url))
        } else if in_cluster {
            Some(Credentials::InCluster)
        } else if kubeconfig.is_some() || context.is_some() {
            Some(Credentials::Kubeconfig {
                path: kubeconfig,
                context,
            })
        } else {
            None
        };
        let executor = &mut config.executor;
        set(&mut executor.namespace, self.namespace.or(file.namespace));
        set(&mut executor.project_label, file.project_label);
        set(&mut executor.project_id_label, file.project_id_label);
        set(&mut executor.workspace_dir, file.workspace_dir);
        set(&mut executor.home_dir, file.home_dir);
        set(&mut executor.state_dir, file.state_dir);
        if file.container.is_some() {
            executor.container = file.container;
        }
        if let Some(secs) = file.ready_timeout_secs {
            config.ready_timeout = Duration::from_secs(secs);
        }
        let pod = &mut config.pod;
        set(&mut pod.image, self.image.or(file.pod.image));
        set(&mut pod.storage, file.pod.storage);
        if let Some(command) = file.pod.command {
            pod.command = command;
        }
        pod.storage_class = file.pod.storage_class;
        set(&mut pod.cpu, file.pod.cpu);
        set(&mut pod.memory, file.pod.memory);
        set(&mut pod.tmp_size, file.pod.tmp_size);
        pod.service_account = file.pod.service_account;
        pod.labels = file.pod.labels;
        pod.run_as_user = file.pod.run_as_user.unwrap_or(pod.run_as_user);
        pod.read_only_root = file.pod.read_only_root.unwrap_or(pod.read_only_root);
        pod.egress = file.pod.egress.unwrap_or_default();
        if let Some(from) = file.pod.ingress_from {
            pod.ingress_from = from;
        }
        config
    }
}

/// Where the credentials point, for start-up errors and logs (never a token).
pub fn describe(credentials: &Credentials) -> String {
    match credentials {
        Credentials::InCluster => "in-cluster credentials".to_owned(),
        Credentials::Kubeconfig { path, context } => format!(
            "kubeconfig {} (context {})",
            path.as_deref().map_or_else(
                || "from $KUBECONFIG or ~/.kube/config".to_owned(),
                |p| p.display().to_string()
            ),
            context.as_deref().unwrap_or("current")
        ),
        Credentials::Url(url) => format!("API server {}", redact_url(url)),
    }
}
