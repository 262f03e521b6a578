//! `rdev worker`: a queue worker process without the HTTP API. Several of them (and
//! `rdev serve` replicas) can share one PostgreSQL database; SIGTERM drains it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::adapters::local::{WorkspaceLayout, build_local_executor};
use crate::adapters::store::{StoreOptions, connect, load_master_key};
use crate::domain::QueueConfig;
use crate::ports::SecretResolver;
use crate::registry::Registry;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::worker::{Worker, WorkerConfig};

use super::migrate::DEFAULT_DATABASE_URL;

/// Arguments of `rdev worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// `postgres://…` or `sqlite://…`.
    #[arg(long, env = "RDEV_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Project workspaces, the compile cache and (embedded) the master key file live here.
    #[arg(long, env = "RDEV_DATA_DIR", default_value = "rdev-data")]
    pub data_dir: PathBuf,
    /// Directory of plugin components and manifests.
    #[arg(long, env = "RDEV_PLUGINS_DIR", default_value = "plugins")]
    pub plugins_dir: PathBuf,
    /// Lease owner name; defaults to `worker-<pid>`.
    #[arg(long)]
    pub worker_id: Option<String>,
    /// Commands run at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Lease length in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub lease_ms: u64,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub heartbeat_ms: u64,
    /// Safety poll when no notification arrives, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub poll_ms: u64,
    /// Running commands per project; 0 removes the limit.
    #[arg(long, default_value_t = 1)]
    pub max_running_per_project: u32,
    /// On SIGTERM, seconds running commands get to finish before they are cancelled.
    #[arg(long, default_value_t = 30)]
    pub drain_secs: u64,
    #[command(flatten)]
    pub confinement: super::serve::ConfinementArgs,
}

/// Runs a worker until SIGTERM or SIGINT, then drains it.
pub async fn run(args: WorkerArgs) -> anyhow::Result<i32> {
    let queue = QueueConfig {
        lease: Duration::from_millis(args.lease_ms),
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        poll_fallback: Duration::from_millis(args.poll_ms),
        max_running_per_project: (args.max_running_per_project > 0)
            .then_some(args.max_running_per_project),
    };
    let master_key = load_master_key(&args.data_dir.join("master.key"))?;
    let stores = connect(&args.database_url, StoreOptions { queue, master_key }).await?;
    let secrets: Arc<dyn SecretResolver> = stores.credentials.clone();
    let layout = WorkspaceLayout::PerProject {
        root: args.data_dir.join("projects"),
    };
    let confinement = args.confinement.resolve(None, None);
    let policies = Some(stores.network.clone());
    let (executor, _) = build_local_executor(
        layout,
        &args.data_dir,
        secrets.clone(),
        &confinement,
        policies,
    )?;
    let executor = Arc::new(executor);
    let mut runtime_config = RuntimeConfig::new(executor, secrets);
    runtime_config.cache_dir = Some(args.data_dir.join("cache"));
    let runtime = Runtime::new(runtime_config)?;
    let registry = Registry::start(runtime, args.plugins_dir.clone(), Vec::new()).await?;
    let id = args
        .worker_id
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let mut config = WorkerConfig::new(id.clone());
    config.concurrency = args.concurrency;
    config.drain_deadline = Duration::from_secs(args.drain_secs);
    let shutdown = CancellationToken::new();
    let worker =
        tokio::spawn(Worker::new(&stores, Arc::new(registry), config).run(shutdown.clone()));
    println!("rdev worker {id} ready");
    wait_for_signal().await?;
    shutdown.cancel();
    let report = worker.await?;
    println!(
        "rdev worker {id} drained: {} finished, {} cancelled",
        report.finished, report.cancelled
    );
    Ok(0)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
