//! `rdev worker`: a queue worker process without the HTTP API. Several of them (and
//! `rdev serve` replicas) can share one PostgreSQL database; SIGTERM drains it. It is
//! configured like `rdev serve` (same flags, `RDEV_*` variables and file) and runs commands
//! on the same executor, local or Kubernetes.

use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::wiring::{CommonArgs, Config, ExecutorArgs, Runner, RunnerArgs, spawn_worker};

/// Arguments of `rdev worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub runner: RunnerArgs,
    #[command(flatten)]
    pub executor: ExecutorArgs,
    /// Lease owner name; defaults to `worker-<pid>`.
    #[arg(long)]
    pub worker_id: Option<String>,
    /// Lease length in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub lease_ms: u64,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub heartbeat_ms: u64,
    /// Safety poll when no notification arrives, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub poll_ms: u64,
    /// On SIGTERM, seconds running commands get to finish before they are cancelled.
    #[arg(long, default_value_t = 30)]
    pub drain_secs: u64,
}

impl WorkerArgs {
    /// The shared resolution plus the worker's own timing.
    fn resolve(self) -> anyhow::Result<Config> {
        let (mut config, _) = Config::resolve(&self.common, self.executor, &self.runner)?;
        config.queue.lease = Duration::from_millis(self.lease_ms);
        config.queue.heartbeat = Duration::from_millis(self.heartbeat_ms);
        config.queue.poll_fallback = Duration::from_millis(self.poll_ms);
        config.worker.id = self
            .worker_id
            .unwrap_or_else(|| format!("worker-{}", std::process::id()));
        config.worker.drain_deadline = Duration::from_secs(self.drain_secs);
        Ok(config)
    }
}

/// Runs a worker until SIGTERM or SIGINT, then drains it.
pub async fn run(args: WorkerArgs) -> anyhow::Result<i32> {
    let config = args.resolve()?;
    let Runner {
        stores, registry, ..
    } = crate::wiring::runner::start(&config).await?;
    let id = config.worker.id.clone();
    let shutdown = CancellationToken::new();
    let worker = spawn_worker(
        &stores,
        &registry,
        config.worker.clone(),
        None,
        shutdown.clone(),
    );
    println!(
        "rdev worker {id} ready ({} at once, {:?} executor)",
        config.worker.concurrency, config.executor
    );
    wait_for_signal().await?;
    shutdown.cancel();
    let report = worker.await?;
    registry.services().stop_all().await;
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
