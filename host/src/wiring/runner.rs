//! What a process that runs queued commands starts, shared by `rdev serve` and
//! `rdev worker`: the plugin runtime over the configured executor, the registry of the
//! plugins directory, the approval broker its providers ask, and the worker that claims
//! commands.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::Config;
use super::executor::{LocalUse, Workspaces, build_executor};
use super::stores::open_stores;
use crate::ports::{FinishObserver, Interaction, ProviderLookup, SecretResolver, Stores};
use crate::registry::Registry;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::services::approvals::ApprovalBroker;
use crate::services::changes::ChangeTracker;
use crate::worker::{DrainReport, Worker, WorkerConfig};

/// The parts a command-running process is made of.
pub struct Runner {
    /// The database.
    pub stores: Stores,
    /// The loaded plugins.
    pub registry: Registry,
    /// The executor's workspace creation and seeding (the executor itself is the runtime's).
    pub workspaces: Workspaces,
}

/// Opens the stores, builds the executor and loads the plugins, as configured.
pub async fn start(config: &Config) -> anyhow::Result<Runner> {
    let stores = open_stores(config).await?;
    let secrets: Arc<dyn SecretResolver> = stores.credentials.clone();
    let policies = LocalUse::Queue(stores.network.clone());
    let workspaces = build_executor(config, secrets.clone(), policies).await?;
    let broker = ApprovalBroker::new(stores.approvals.clone(), stores.events.clone());
    let registry = start_registry(
        config,
        workspaces.executor.clone(),
        secrets,
        Arc::new(broker),
    )
    .await?;
    Ok(Runner {
        stores,
        registry,
        workspaces,
    })
}

/// A runtime over `executor` (compile cache under `<data-dir>/cache`) whose providers ask
/// `interaction` for permissions and input, and the registry of the plugins directory,
/// created when missing.
pub async fn start_registry(
    config: &Config,
    executor: Arc<dyn crate::ports::Executor>,
    secrets: Arc<dyn SecretResolver>,
    interaction: Arc<dyn Interaction>,
) -> anyhow::Result<Registry> {
    let mut runtime_config = RuntimeConfig::new(executor, secrets);
    runtime_config.interaction = interaction;
    runtime_config.cache_dir = Some(config.data_dir.join("cache"));
    let runtime = Runtime::new(runtime_config).context("starting the plugin runtime")?;
    let plugins_dir = config.plugins_dir();
    std::fs::create_dir_all(&plugins_dir)
        .with_context(|| format!("creating plugins dir {}", plugins_dir.display()))?;
    let registry = Registry::start(runtime, plugins_dir.clone(), Vec::new())
        .await
        .with_context(|| format!("loading plugins from {}", plugins_dir.display()))?;
    tracing::info!(
        plugins_dir = %plugins_dir.display(),
        providers = registry.statuses().len(),
        "plugins loaded"
    );
    Ok(registry)
}

/// Starts the worker that claims and runs queued commands until `shutdown`, then drains,
/// recording each command's workspace changes through the registry's executor.
pub fn spawn_worker(
    stores: &Stores,
    registry: &Registry,
    config: WorkerConfig,
    observer: Option<Arc<dyn FinishObserver>>,
    shutdown: CancellationToken,
) -> JoinHandle<DrainReport> {
    let providers: Arc<dyn ProviderLookup> = Arc::new(registry.clone());
    let tracker = ChangeTracker::new(
        registry.services().executor().clone(),
        stores.changes.clone(),
    )
    .with_retention(config.change_retention.clone());
    let mut worker = Worker::new(stores, providers, config).with_changes(Arc::new(tracker));
    if let Some(observer) = observer {
        worker = worker.with_observer(observer);
    }
    tokio::spawn(async move {
        let report = worker.run(shutdown).await;
        tracing::info!(
            finished = report.finished,
            cancelled = report.cancelled,
            "worker drained"
        );
        report
    })
}
