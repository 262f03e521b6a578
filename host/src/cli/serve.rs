//! `rdev serve`: the HTTP API, the worker and the plugin registry in one process. With
//! nothing configured it runs on one machine: SQLite and workspaces under `./rdev-data`,
//! the local executor, the bundled plugins and a generated admin token printed once.
//!
//! Configuration comes from the one resolution in [`crate::wiring`] (flags, then `RDEV_*`,
//! then the TOML file, then the defaults). SIGHUP reloads the plugins (as
//! `POST /providers/reload`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};

use crate::api::AppState;
use crate::api::providers::reload_and_audit;
use crate::server::{ServeConfig, Server, write_atomically};
use crate::wiring::{CommonArgs, ExecutorArgs, RunnerArgs};

/// Arguments of `rdev serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (`host:port`; port 0 picks a free one) [default: 127.0.0.1:8080].
    #[arg(long, env = "RDEV_LISTEN")]
    pub listen: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub runner: RunnerArgs,
    #[command(flatten)]
    pub executor: ExecutorArgs,
    /// An admin bearer token to accept (stored hashed). Without one, a token is generated
    /// on first start and printed once.
    #[arg(long, env = "RDEV_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Written with the bound address (`host:port`) once the server accepts requests.
    #[arg(long, env = "RDEV_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Seconds between polls of unfinished CI pipelines (with Woodpecker configured through
    /// `RDEV_WOODPECKER_URL`) [default: 15].
    #[arg(long, env = "RDEV_CI_POLL_INTERVAL_SECS")]
    pub ci_poll_interval_secs: Option<u64>,
    /// Seconds between signed audit checkpoints exported to the log and the
    /// `audit.checkpoint` webhook, when the chain's head moved [default: 600].
    #[arg(long, env = "RDEV_AUDIT_CHECKPOINT_SECS")]
    pub audit_checkpoint_secs: Option<u64>,
}

impl ServeArgs {
    /// Merges flags/environment over the file over the defaults.
    pub fn resolve(self) -> anyhow::Result<ServeConfig> {
        let (config, file) = ServeConfig::resolve(&self.common, self.executor, &self.runner)?;
        let mut config = config.with_woodpecker_from_env()?;
        if let Some(listen) = self.listen.or(file.listen) {
            config.listen = listen;
        }
        config.admin_token = self.admin_token.or(file.admin_token);
        config.connections = file.connections.apply(config.connections)?;
        if let Some(secs) = self.ci_poll_interval_secs.or(file.ci_poll_interval_secs) {
            anyhow::ensure!(secs > 0, "the CI poll interval must be at least 1 second");
            config.ci_poll.interval = Duration::from_secs(secs);
        }
        let checkpoint_secs = self
            .audit_checkpoint_secs
            .or(file.audit_checkpoint_interval_secs);
        if let Some(secs) = checkpoint_secs {
            anyhow::ensure!(
                secs > 0,
                "the audit checkpoint interval must be at least 1 second"
            );
            config.audit_checkpoint_interval = Duration::from_secs(secs);
        }
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

    use crate::adapters::kubernetes::Credentials;
    use crate::adapters::local::ConfinementConfig;
    use crate::server::ExecutorKind;

    fn empty() -> ServeArgs {
        ServeArgs {
            listen: None,
            common: CommonArgs::default(),
            runner: RunnerArgs::default(),
            executor: ExecutorArgs::default(),
            admin_token: None,
            ready_file: None,
            ci_poll_interval_secs: None,
            audit_checkpoint_secs: None,
        }
    }

    /// Arguments naming `path` as the configuration file, written with `toml`.
    fn from_file(path: &std::path::Path, toml: &str) -> ServeArgs {
        std::fs::write(path, toml).expect("write the configuration file");
        let mut args = empty();
        args.common.config = Some(path.to_owned());
        args
    }

    #[test]
    fn the_file_replaces_the_default_allow_list_and_flags_add_to_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rdev.toml");
        let mut args = from_file(&path, "allow_hosts = [\"llm.internal:8443\"]\n");
        args.runner.confinement.allow_hosts = vec!["127.0.0.1:9999".into()];
        let config = args.resolve().expect("valid");
        assert_eq!(
            config.confinement.allow_hosts,
            ["llm.internal:8443", "127.0.0.1:9999"]
        );
        assert!(!config.confinement.unconfined, "confined unless asked");

        let args = from_file(&dir.path().join("u.toml"), "unconfined = true\n");
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
        let mut args = from_file(
            &path,
            "executor = \"kubernetes\"\n\
             [kubernetes]\nkubeconfig = \"/etc/rdev/kubeconfig\"\ncontext = \"prod\"\n\
             namespace = \"projects\"\nready_timeout_secs = 60\n\
             [kubernetes.pod]\nimage = \"ghcr.io/acme/ws:1\"\ncpu = \"2\"\n\
             egress = [\"10.0.0.0/8:443\"]\nlabels = { team = \"dev\" }\n",
        );
        args.executor.kubernetes.namespace = Some("from-flag".into());
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
        let args = from_file(
            &path,
            "[kubernetes.pod]\negress = [\"api.anthropic.com:443\"]\n",
        );
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
        args.executor.kubernetes.api_url = Some("http://127.0.0.1:8001".into());
        args.executor.kubernetes.in_cluster = true;
        let config = args.resolve().expect("valid");
        assert_eq!(
            config.kubernetes.credentials,
            Some(Credentials::Url("http://127.0.0.1:8001".into()))
        );
    }

    #[test]
    fn the_connections_table_sets_the_listener_limits_and_refuses_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rdev.toml");
        let args = from_file(
            &path,
            "[connections]\nheader_read_timeout_secs = 5\nidle_timeout_secs = 30\n\
             max_connections = 100\nmax_connections_per_peer = 10\n",
        );
        let limits = args.resolve().expect("valid").connections;
        assert_eq!(limits.header_read_timeout, Duration::from_secs(5));
        assert_eq!(limits.idle_timeout, Duration::from_secs(30));
        assert_eq!(
            (limits.max_connections, limits.max_connections_per_peer),
            (100, 10)
        );
        let args = from_file(&path, "[connections]\nmax_connections = 0\n");
        let error = format!("{:#}", args.resolve().expect_err("zero refused"));
        assert!(error.contains("max_connections"), "{error}");
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rdev.toml");
        let mut args = from_file(
            &path,
            "listen = \"127.0.0.1:9999\"\ndata_dir = \"/srv/rdev\"\nmax_running_per_project = 0\n",
        );
        args.listen = Some("127.0.0.1:0".into());
        let config = args.resolve().expect("valid");
        assert_eq!(config.listen, "127.0.0.1:0");
        assert_eq!(config.data_dir, PathBuf::from("/srv/rdev"));
        assert_eq!(config.queue.max_running_per_project, None);
        assert_eq!(config.database_url(), "sqlite:///srv/rdev/rdev.db");
    }
}
