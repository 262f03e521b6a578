//! The TOML configuration file every subcommand reads (`--config` or `RDEV_CONFIG`). It sits
//! below flags and `RDEV_*` variables and above the embedded defaults; unknown keys are
//! refused so a typo is an error rather than a silently ignored setting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

use super::executor::ExecutorKind;
use crate::adapters::kubernetes::EgressRule;
use crate::api::listener::ConnectionLimits;
use crate::domain::OnOutputLimit;

/// The optional TOML configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `host:port` of `rdev serve`.
    pub listen: Option<String>,
    /// Database, master key, caches and project workspaces.
    pub data_dir: Option<PathBuf>,
    /// Plugin components and manifests.
    pub plugins_dir: Option<PathBuf>,
    /// `postgres://…` or `sqlite://…`.
    pub database_url: Option<String>,
    /// Where commands run.
    pub executor: Option<ExecutorKind>,
    /// An admin bearer token `rdev serve` accepts (stored hashed).
    pub admin_token: Option<String>,
    /// Run commands without the local sandbox [default: false].
    pub unconfined: Option<bool>,
    /// The default egress allow-list, replacing the built-in one.
    pub allow_hosts: Option<Vec<String>>,
    /// Commands one `rdev serve` or `rdev worker` process runs at once [default: 4].
    pub concurrency: Option<usize>,
    /// Running commands per project; 0 removes the limit [default: 1].
    pub max_running_per_project: Option<u32>,
    /// Largest stored event in bytes [default: 1048576].
    pub max_event_bytes: Option<usize>,
    /// Largest total of one command's stored events in bytes [default: 67108864].
    pub max_output_bytes: Option<u64>,
    /// Largest result in bytes [default: 1048576].
    pub max_result_bytes: Option<usize>,
    /// `truncate` or `fail` [default: truncate].
    pub on_output_limit: Option<OnOutputLimit>,
    /// Seconds between polls of unfinished CI pipelines [default: 15].
    pub ci_poll_interval_secs: Option<u64>,
    /// Seconds between exported audit checkpoints [default: 600].
    pub audit_checkpoint_interval_secs: Option<u64>,
    /// Where the Kubernetes executor finds the cluster and what it creates there.
    #[serde(default)]
    pub kubernetes: KubernetesFile,
    /// Webhook delivery settings.
    #[serde(default)]
    pub webhooks: WebhookFileConfig,
    /// The HTTP listener's timeouts and connection caps (`rdev serve`).
    #[serde(default)]
    pub connections: ConnectionsFile,
}

/// The `[connections]` table: what one client may hold of `rdev serve`'s listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsFile {
    /// Seconds a client may take to send a request's headers [default: 10].
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a connection may send nothing while the server waits on it [default: 60].
    pub idle_timeout_secs: Option<u64>,
    /// Connections held at once [default: half the open-file limit, 32 to 16384].
    pub max_connections: Option<usize>,
    /// Connections held at once from one address [default: a quarter of the total].
    pub max_connections_per_peer: Option<usize>,
}

impl ConnectionsFile {
    /// The table over `limits`; zero is refused (it would refuse or cut every client).
    pub fn apply(&self, mut limits: ConnectionLimits) -> anyhow::Result<ConnectionLimits> {
        let secs = |value: Option<u64>, name: &str| -> anyhow::Result<Option<Duration>> {
            match value {
                Some(0) => anyhow::bail!("[connections] {name} must be at least 1"),
                other => Ok(other.map(Duration::from_secs)),
            }
        };
        if let Some(t) = secs(self.header_read_timeout_secs, "header_read_timeout_secs")? {
            limits.header_read_timeout = t;
        }
        if let Some(t) = secs(self.idle_timeout_secs, "idle_timeout_secs")? {
            limits.idle_timeout = t;
        }
        for (value, name, field) in [
            (
                self.max_connections,
                "max_connections",
                &mut limits.max_connections,
            ),
            (
                self.max_connections_per_peer,
                "max_connections_per_peer",
                &mut limits.max_connections_per_peer,
            ),
        ] {
            match value {
                Some(0) => anyhow::bail!("[connections] {name} must be at least 1"),
                Some(n) => *field = n,
                None => {}
            }
        }
        Ok(limits)
    }
}

impl FileConfig {
    /// Reads and parses `path`; no path gives the empty file (every value from elsewhere).
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }
}

/// The `[kubernetes]` table of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesFile {
    /// Namespace of the project pods.
    pub namespace: Option<String>,
    /// Use the pod's service account.
    pub in_cluster: Option<bool>,
    /// A kubeconfig file.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context.
    pub context: Option<String>,
    /// An API server URL used without credentials, as behind `kubectl proxy`.
    pub api_url: Option<String>,
    /// Label marking project pods (value `true`).
    pub project_label: Option<String>,
    /// Label carrying the project id.
    pub project_id_label: Option<String>,
    /// Container to exec into, for pods with sidecars.
    pub container: Option<String>,
    /// The workspace path inside project pods.
    pub workspace_dir: Option<String>,
    /// `HOME` of processes in project pods.
    pub home_dir: Option<String>,
    /// Where the exec wrapper keeps its state inside project pods.
    pub state_dir: Option<String>,
    /// How long project creation waits for a pod to become Ready [default: 300].
    pub ready_timeout_secs: Option<u64>,
    /// The operator's defaults for project pods.
    #[serde(default)]
    pub pod: PodFile,
}

/// `[kubernetes.pod]`: the operator's defaults for project pods.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodFile {
    /// Image of pods whose template names none.
    pub image: Option<String>,
    /// The pod's command (it must keep the pod running).
    pub command: Option<Vec<String>>,
    /// Size of the workspace volume.
    pub storage: Option<String>,
    /// Storage class of the workspace volume.
    pub storage_class: Option<String>,
    /// CPU request and limit.
    pub cpu: Option<String>,
    /// Memory request and limit.
    pub memory: Option<String>,
    /// Size of the pod's `/tmp` volume.
    pub tmp_size: Option<String>,
    /// Service account of project pods.
    pub service_account: Option<String>,
    /// Extra labels on project pods.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The user id processes in project pods run as.
    pub run_as_user: Option<i64>,
    /// Whether the container's root filesystem is read-only.
    pub read_only_root: Option<bool>,
    /// Where project pods may connect (CIDR[:port]; host names are refused).
    pub egress: Option<Vec<EgressRule>>,
    /// Pod labels allowed to connect to project pods.
    pub ingress_from: Option<BTreeMap<String, String>>,
}

/// `[webhooks]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFileConfig {
    /// Allow private, loopback, link-local and unique-local targets [default: false];
    /// `RDEV_WEBHOOK_ALLOW_PRIVATE` overrides it.
    pub allow_private: Option<bool>,
    /// Per-attempt timeout in seconds [default: 10].
    pub timeout_secs: Option<u64>,
    /// Attempts per delivery [default: 8].
    pub max_attempts: Option<u32>,
    /// Delay before the first retry in seconds; doubles each time [default: 5].
    pub backoff_base_secs: Option<u64>,
    /// Longest delay between attempts in seconds [default: 3600].
    pub backoff_max_secs: Option<u64>,
}
