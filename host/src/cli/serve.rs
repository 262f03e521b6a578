//! `rdev serve`: the HTTP API, the worker and the plugin registry in one process. With
//! nothing configured it runs on one machine: SQLite and workspaces under `./rdev-data`,
//! the local executor, the bundled plugins and a generated admin token printed once.
//!
//! Precedence: flags, then `RDEV_*` environment variables, then the TOML file named by
//! `--config`, then the defaults. SIGHUP reloads the plugins (as `POST /providers/reload`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::adapters::woodpecker::WoodpeckerConfig;
use crate::api::AppState;
use crate::api::providers::reload_and_audit;
use crate::server::{ExecutorKind, ServeConfig, Server, write_atomically};

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
    /// An admin bearer token to accept (stored hashed). Without one, a token is generated
    /// on first start and printed once.
    #[arg(long, env = "RDEV_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// TOML file with any of: listen, data_dir, plugins_dir, database_url, executor,
    /// admin_token, max_running_per_project, ci_poll_interval_secs.
    #[arg(long, env = "RDEV_CONFIG")]
    pub config: Option<PathBuf>,
    /// Written with the bound address (`host:port`) once the server accepts requests.
    #[arg(long, env = "RDEV_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Seconds between polls of unfinished CI pipelines (with Woodpecker configured through
    /// `RDEV_WOODPECKER_URL`) [default: 15].
    #[arg(long, env = "RDEV_CI_POLL_INTERVAL_SECS")]
    pub ci_poll_interval_secs: Option<u64>,
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
    /// Running commands per project; 0 removes the limit [default: 1].
    pub max_running_per_project: Option<u32>,
    /// Seconds between polls of unfinished CI pipelines [default: 15].
    pub ci_poll_interval_secs: Option<u64>,
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
        config.admin_token = self.admin_token.or(file.admin_token);
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
            Ok(summary) => tracing::info!(%summary, "plugins reloaded on SIGHUP"),
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
            admin_token: None,
            config: None,
            ready_file: None,
            ci_poll_interval_secs: None,
        }
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
