//! `rdev serve`: the HTTP API, the worker and the plugin registry in one process. With
//! nothing configured it runs on one machine: SQLite and workspaces under `./rdev-data`,
//! the local executor, the bundled plugins and a generated admin token printed once.
//!
//! Precedence: flags, then `RDEV_*` environment variables, then the TOML file named by
//! `--config`, then the defaults. SIGHUP reloads the plugins (as `POST /providers/reload`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::adapters::kubernetes::{Credentials, EgressRule};
use crate::adapters::local::ConfinementConfig;
use crate::adapters::woodpecker::WoodpeckerConfig;
use crate::api::AppState;
use crate::api::providers::reload_and_audit;
use crate::server::{ExecutorKind, KubernetesServeConfig, ServeConfig, Server, write_atomically};

/// Arguments of `rdev serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (`host:port`; port 0 picks a free one) [default: 127.0.0.1:8080].
    #[arg(long, env = "RDEV_LISTEN")]
    pub listen: Option<String>,
    /// Database, master key, caches and project workspaces [default: ./rdev-data].
    #[arg(long, env = "RDEV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Directory of `<name>.toml` + `<name>.wasm` plugins, watched for changes
    /// [default: target/plugins if present, else <data-dir>/plugins].
    #[arg(long, env = "RDEV_PLUGINS_DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// `postgres://…` or `sqlite://…` [default: SQLite at <data-dir>/rdev.db].
    #[arg(long, env = "RDEV_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where commands run [default: local].
    #[arg(long, env = "RDEV_EXECUTOR", value_enum)]
    pub executor: Option<ExecutorKind>,
    #[command(flatten)]
    pub confinement: ConfinementArgs,
    /// An admin bearer token to accept (stored hashed). Without one, a token is generated
    /// on first start and printed once.
    #[arg(long, env = "RDEV_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// TOML file with any of: listen, data_dir, plugins_dir, database_url, executor,
    /// admin_token, max_running_per_project, ci_poll_interval_secs, a [kubernetes] table
    /// (see docs/kubernetes.md) and a [webhooks] table (see docs/webhooks.md).
    #[arg(long, env = "RDEV_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
    /// Written with the bound address (`host:port`) once the server accepts requests.
    #[arg(long, env = "RDEV_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Seconds between polls of unfinished CI pipelines (with Woodpecker configured through
    /// `RDEV_WOODPECKER_URL`) [default: 15].
    #[arg(long, env = "RDEV_CI_POLL_INTERVAL_SECS")]
    pub ci_poll_interval_secs: Option<u64>,
}

/// How the local executor confines commands (docs/sandbox.md).
#[derive(Debug, Default, Args)]
pub struct ConfinementArgs {
    /// Run commands without the local sandbox, as rdev's own user. Only for hosts that lack
    /// a mechanism the sandbox needs (rdev refuses to start otherwise); logged loudly and
    /// shown on /readyz and GET /providers.
    #[arg(long, env = "RDEV_UNCONFINED")]
    pub unconfined: bool,
    /// A destination commands may also reach (`host`, `host:port`, `*.domain[:port]`),
    /// added to the default allow-list; repeatable, comma-separated in the variable.
    #[arg(long = "allow-host", env = "RDEV_ALLOW_HOSTS", value_delimiter = ',')]
    pub allow_hosts: Vec<String>,
}

impl ConfinementArgs {
    /// Flags/environment over the file's `unconfined` and `allow_hosts` (which replaces
    /// the built-in allow-list) over the defaults.
    pub fn resolve(
        self,
        unconfined: Option<bool>,
        allow_hosts: Option<Vec<String>>,
    ) -> ConfinementConfig {
        let mut config = ConfinementConfig {
            unconfined: self.unconfined || unconfined.unwrap_or(false),
            ..ConfinementConfig::default()
        };
        if let Some(hosts) = allow_hosts {
            config.allow_hosts = hosts;
        }
        config.allow_hosts.extend(self.allow_hosts);
        config
    }
}

/// Where the Kubernetes executor finds the cluster; only read with `--executor kubernetes`.
/// One source is used: the API URL, else in-cluster, else a kubeconfig (path and/or
/// context), else in-cluster when running in a pod and the default kubeconfig otherwise.
#[derive(Debug, Default, Args)]
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

/// The `[kubernetes]` table of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesFile {
    pub namespace: Option<String>,
    pub in_cluster: Option<bool>,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub api_url: Option<String>,
    /// Label marking project pods (value `true`).
    pub project_label: Option<String>,
    /// Label carrying the project id.
    pub project_id_label: Option<String>,
    /// Container to exec into, for pods with sidecars.
    pub container: Option<String>,
    pub workspace_dir: Option<String>,
    pub home_dir: Option<String>,
    pub state_dir: Option<String>,
    /// How long project creation waits for a pod to become Ready [default: 300].
    pub ready_timeout_secs: Option<u64>,
    #[serde(default)]
    pub pod: PodFile,
}

/// `[kubernetes.pod]`: the operator's defaults for project pods.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodFile {
    pub image: Option<String>,
    pub command: Option<Vec<String>>,
    pub storage: Option<String>,
    pub storage_class: Option<String>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub tmp_size: Option<String>,
    pub service_account: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub run_as_user: Option<i64>,
    pub read_only_root: Option<bool>,
    pub egress: Option<Vec<EgressRule>>,
    pub ingress_from: Option<BTreeMap<String, String>>,
}

impl KubernetesArgs {
    /// Flags/environment over the file's table over the defaults.
    fn resolve(self, file: KubernetesFile) -> KubernetesServeConfig {
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
        if let Some(namespace) = self.namespace.or(file.namespace) {
            executor.namespace = namespace;
        }
        let set = |target: &mut String, value: Option<String>| {
            if let Some(value) = value {
                *target = value;
            }
        };
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

/// The optional TOML configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub plugins_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub executor: Option<ExecutorKind>,
    pub admin_token: Option<String>,
    /// Run commands without the local sandbox [default: false].
    pub unconfined: Option<bool>,
    /// The default egress allow-list, replacing the built-in one.
    pub allow_hosts: Option<Vec<String>>,
    /// Running commands per project; 0 removes the limit [default: 1].
    pub max_running_per_project: Option<u32>,
    /// Seconds between polls of unfinished CI pipelines [default: 15].
    pub ci_poll_interval_secs: Option<u64>,
    #[serde(default)]
    pub kubernetes: KubernetesFile,
    /// Webhook delivery settings.
    #[serde(default)]
    pub webhooks: WebhookFileConfig,
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

impl ServeArgs {
    /// Merges flags/environment over the file over the defaults.
    pub fn resolve(self) -> anyhow::Result<ServeConfig> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let mut config = ServeConfig::new();
        if let Some(listen) = self.listen.or(file.listen) {
            config.listen = listen;
        }
        if let Some(dir) = self.data_dir.or(file.data_dir) {
            config.data_dir = dir;
        }
        config.plugins_dir = self.plugins_dir.or(file.plugins_dir);
        config.database_url = self.database_url.or(file.database_url);
        config.executor = self.executor.or(file.executor).unwrap_or_default();
        config.confinement = self.confinement.resolve(file.unconfined, file.allow_hosts);
        config.kubernetes = self.kubernetes.resolve(file.kubernetes);
        config.admin_token = self.admin_token.or(file.admin_token);
        let hooks = &file.webhooks;
        let webhooks = &mut config.webhooks;
        if let Some(allow) = hooks.allow_private {
            webhooks.allow_private = allow;
        }
        if let Some(secs) = hooks.timeout_secs {
            webhooks.timeout = Duration::from_secs(secs.max(1));
            webhooks.lease = webhooks.lease.max(webhooks.timeout * 2);
        }
        if let Some(attempts) = hooks.max_attempts {
            webhooks.retry.max_attempts = attempts.max(1);
        }
        if let Some(secs) = hooks.backoff_base_secs {
            webhooks.retry.base = Duration::from_secs(secs);
        }
        if let Some(secs) = hooks.backoff_max_secs {
            webhooks.retry.max_delay = Duration::from_secs(secs);
        }
        config.webhooks = config.webhooks.clone().with_env();
        if let Some(limit) = file.max_running_per_project {
            config.queue.max_running_per_project = (limit > 0).then_some(limit);
        }
        if let Some(secs) = self.ci_poll_interval_secs.or(file.ci_poll_interval_secs) {
            anyhow::ensure!(secs > 0, "the CI poll interval must be at least 1 second");
            config.ci_poll.interval = Duration::from_secs(secs);
        }
        config.woodpecker =
            WoodpeckerConfig::from_env().context("reading the Woodpecker configuration")?;
        Ok(config)
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RDEV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Runs the server until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn run(args: ServeArgs) -> anyhow::Result<i32> {
    init_tracing();
    let ready_file = args.ready_file.clone();
    let config = args.resolve()?;
    let server = Server::start(config).await?;
    let addr = server.local_addr();
    if let Some(token) = server.generated_admin_token() {
        println!("admin token (shown once, stored hashed; keep it): {token}");
    }
    println!("rdev listening on http://{addr}");
    if let Some(path) = ready_file {
        write_atomically(&path, &addr.to_string())
            .with_context(|| format!("writing ready file {}", path.display()))?;
    }
    let stop = server.shutdown_token();
    let reloads = tokio::spawn(reload_on_sighup(server.state().clone()));
    tokio::select! {
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            server.shutdown().await;
        }
        () = stop.cancelled() => server.wait().await,
    }
    reloads.abort();
    Ok(0)
}

/// The actor SIGHUP reloads are audited as.
pub const SIGHUP_ACTOR: &str = "operator (SIGHUP)";

/// Reloads the provider registry on every SIGHUP, audited like `POST /providers/reload`.
async fn reload_on_sighup(state: Arc<AppState>) {
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP; reload plugins over the API");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        match reload_and_audit(&state, SIGHUP_ACTOR.to_owned()).await {
            Ok(summary) => tracing::info!(?summary, "plugins reloaded on SIGHUP"),
            Err(error) => tracing::error!(%error, "reloading plugins on SIGHUP failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> ServeArgs {
        ServeArgs {
            listen: None,
            data_dir: None,
            plugins_dir: None,
            database_url: None,
            executor: None,
            confinement: ConfinementArgs::default(),
            admin_token: None,
            config: None,
            kubernetes: KubernetesArgs::default(),
            ready_file: None,
            ci_poll_interval_secs: None,
        }
    }

    #[test]
    fn the_file_replaces_the_default_allow_list_and_flags_add_to_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rdev.toml");
        std::fs::write(&path, "allow_hosts = [\"llm.internal:8443\"]\n").expect("write");
        let mut args = empty();
        args.config = Some(path);
        args.confinement.allow_hosts = vec!["127.0.0.1:9999".into()];
        let config = args.resolve().expect("valid");
        assert_eq!(
            config.confinement.allow_hosts,
            ["llm.internal:8443", "127.0.0.1:9999"]
        );
        assert!(!config.confinement.unconfined, "confined unless asked");

        std::fs::write(dir.path().join("u.toml"), "unconfined = true\n").expect("write");
        let mut args = empty();
        args.config = Some(dir.path().join("u.toml"));
        let config = args.resolve().expect("valid");
        assert!(config.confinement.unconfined);
        assert_eq!(
            config.confinement.allow_hosts,
            ConfinementConfig::default().allow_hosts
        );
    }

    #[test]
    fn the_kubernetes_table_configures_cluster_namespace_and_pod_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rdev.toml");
        std::fs::write(
            &path,
            "executor = \"kubernetes\"\n\
             [kubernetes]\nkubeconfig = \"/etc/rdev/kubeconfig\"\ncontext = \"prod\"\n\
             namespace = \"projects\"\nready_timeout_secs = 60\n\
             [kubernetes.pod]\nimage = \"ghcr.io/acme/ws:1\"\ncpu = \"2\"\n\
             egress = [\"10.0.0.0/8:443\"]\nlabels = { team = \"dev\" }\n",
        )
        .expect("write");
        let mut args = empty();
        args.config = Some(path.clone());
        args.kubernetes.namespace = Some("from-flag".into());
        let config = args.resolve().expect("valid");
        assert_eq!(config.executor, ExecutorKind::Kubernetes);
        let kube = &config.kubernetes;
        assert_eq!(kube.executor.namespace, "from-flag");
        assert_eq!(
            kube.credentials,
            Some(Credentials::Kubeconfig {
                path: Some("/etc/rdev/kubeconfig".into()),
                context: Some("prod".into()),
            })
        );
        assert_eq!(kube.ready_timeout, Duration::from_secs(60));
        assert_eq!(kube.pod.image, "ghcr.io/acme/ws:1");
        assert_eq!(kube.pod.cpu, "2");
        assert_eq!(kube.pod.memory, crate::adapters::kubernetes::DEFAULT_MEMORY);
        assert_eq!(kube.pod.egress.len(), 1);
        assert_eq!(kube.pod.egress[0].to_string(), "10.0.0.0/8:443");
        assert_eq!(kube.pod.labels["team"], "dev");

        // NetworkPolicy cannot express a host name: loading says so instead of ignoring it.
        std::fs::write(
            &path,
            "[kubernetes.pod]\negress = [\"api.anthropic.com:443\"]\n",
        )
        .expect("write");
        let mut args = empty();
        args.config = Some(path);
        let error = format!("{:#}", args.resolve().expect_err("host names refused"));
        assert!(error.contains("egress proxy"), "{error}");
    }

    #[test]
    fn the_command_line_selects_the_kubernetes_executor() {
        use clap::{CommandFactory, Parser};
        crate::cli::Cli::command().debug_assert();
        let cli = crate::cli::Cli::try_parse_from([
            "rdev",
            "serve",
            "--executor",
            "kubernetes",
            "--kubernetes-namespace",
            "projects",
            "--kubeconfig",
            "/etc/rdev/kubeconfig",
            "--kubernetes-image",
            "ghcr.io/acme/ws:2",
        ])
        .expect("valid command line");
        let crate::cli::Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        let config = args.resolve().expect("valid");
        assert_eq!(config.executor, ExecutorKind::Kubernetes);
        assert_eq!(config.kubernetes.executor.namespace, "projects");
        assert_eq!(config.kubernetes.pod.image, "ghcr.io/acme/ws:2");
        assert_eq!(
            config.kubernetes.credentials,
            Some(Credentials::Kubeconfig {
                path: Some("/etc/rdev/kubeconfig".into()),
                context: None,
            })
        );
    }

    #[test]
    fn an_api_url_wins_over_other_cluster_sources() {
        let mut args = empty();
        args.kubernetes.api_url = Some("http://127.0.0.1:8001".into());
        args.kubernetes.in_cluster = true;
        let config = args.resolve().expect("valid");
        assert_eq!(
            config.kubernetes.credentials,
            Some(Credentials::Url("http://127.0.0.1:8001".into()))
        );
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rdev.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\ndata_dir = \"/srv/rdev\"\nmax_running_per_project = 0\n",
        )
        .expect("write");
        let mut args = empty();
        args.config = Some(path);
        args.listen = Some("127.0.0.1:0".into());
        let config = args.resolve().expect("valid");
        assert_eq!(config.listen, "127.0.0.1:0");
        assert_eq!(config.data_dir, PathBuf::from("/srv/rdev"));
        assert_eq!(config.queue.max_running_per_project, None);
        assert_eq!(config.database_url(), "sqlite:///srv/rdev/rdev.db");
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rdev.toml");
        std::fs::write(&path, "listn = \"x\"\n").expect("write");
        let mut args = empty();
        args.config = Some(path);
        assert!(args.resolve().is_err());
    }
}
