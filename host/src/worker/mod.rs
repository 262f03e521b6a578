//! The worker: claims commands from the queue, runs each through its provider, streams the
//! provider's events into the event log, heartbeats the lease, watches the cancel flag,
//! writes the result under the lease's fencing token and audits every step. Shutdown is a
//! drain: stop claiming, let running commands finish up to a deadline, then cancel them.

mod budget;
mod changes;
mod heartbeat;
mod run;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{CommandStatus, HostEvent, NewAuditEntry, OutputLimits, StreamEvent};
use crate::ports::{
    AuditLog, CommandQueue, CredentialStore, EventLog, FinishObserver, ProviderLookup, Stores,
    UsageStore,
};
use crate::services::changes::{ChangeRetention, ChangeTracker};

/// Capacity of each execution's event sink: a provider that emits faster than the event
/// log stores is slowed down rather than buffered without limit.
pub const EVENT_SINK_CAPACITY: usize = 256;

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Lease owner name; unique per process (e.g. host name and pid).
    pub id: String,
    /// Commands this worker runs at once. A slot frees when the provider returns; writing
    /// the outcome continues in the background (a drain waits for it).
    pub concurrency: usize,
    /// On shutdown, how long running commands may take to finish before they are cancelled.
    pub drain_deadline: Duration,
    /// Extra time past the request's timeout before the worker itself cancels (the runtime
    /// enforces the timeout first), and again before it stops waiting for a cancelled run.
    pub timeout_grace: Duration,
    /// Bounds on each command's stored events and result, applied before anything is stored
    /// or sent on (see `domain::output`).
    pub output: OutputLimits,
    /// How many commands' workspace snapshots each project's snapshot repository keeps.
    pub change_retention: ChangeRetention,
}

impl WorkerConfig {
    /// Defaults: 4 at once, 30 s drain, 10 s grace, the default output limits, the snapshots
    /// of the newest 100 commands kept.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            concurrency: 4,
            drain_deadline: Duration::from_secs(30),
            timeout_grace: Duration::from_secs(10),
            output: OutputLimits::default(),
            change_retention: ChangeRetention::default(),
        }
    }
}

/// Everything a running command needs, shared by the worker's tasks.
#[derive(Clone)]
pub(crate) struct Context {
    pub queue: Arc<dyn CommandQueue>,
    pub events: Arc<dyn EventLog>,
    pub audit: Arc<dyn AuditLog>,
    pub credentials: Arc<dyn CredentialStore>,
    /// Budgets and the month's cost, checked as running commands report usage.
    pub usage: Arc<dyn UsageStore>,
    /// Each project's MCP servers, handed to the providers granted them.
    pub mcp: Arc<dyn crate::ports::McpServerStore>,
    pub providers: Arc<dyn ProviderLookup>,
    pub config: Arc<WorkerConfig>,
    /// Outcome writes of commands whose provider has returned; a drain waits for them.
    pub outcomes: TaskTracker,
    pub observer: Option<Arc<dyn FinishObserver>>,
    /// Records what each command changed in its workspace; `None` records nothing.
    pub changes: Option<Arc<ChangeTracker>>,
}

/// A queue consumer; see the module documentation.
pub struct Worker {
    context: Context,
}

/// What a drain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Commands that finished on their own during the drain.
    pub finished: usize,
    /// Commands cancelled because the drain deadline passed.
    pub cancelled: usize,
}

impl Worker {
    pub fn new(stores: &Stores, providers: Arc<dyn ProviderLookup>, config: WorkerConfig) -> Self {
        Self {
            context: Context {
                queue: stores.queue.clone(),
                events: stores.events.clone(),
                audit: stores.audit.clone(),
                credentials: stores.credentials.clone(),
                usage: stores.usage.clone(),
                mcp: stores.mcp.clone(),
                providers,
                config: Arc::new(config),
                outcomes: TaskTracker::new(),
                observer: None,
                changes: None,
            },
        }
    }

    /// Reports every finished command to `observer` (e.g. the run-duration histogram).
    pub fn with_observer(mut self, observer: Arc<dyn FinishObserver>) -> Self {
        self.context.observer = Some(observer);
        self
    }

    /// Records each command's workspace changes with `tracker` (`GET /commands/{id}/changes`).
    pub fn with_changes(mut self, tracker: Arc<ChangeTracker>) -> Self {
        self.context.changes = Some(tracker);
        self
    }

    /// Runs until `shutdown` is cancelled, then drains.
    pub async fn run(self, shutdown: CancellationToken) -> DrainReport {
        let ctx = self.context;
        let queue_config = ctx.queue.config().clone();
        let tick = queue_config.heartbeat.min(queue_config.poll_fallback);
        let hard_stop = CancellationToken::new();
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut work = ctx.queue.work_signal();
        let mut next_rescue = tokio::time::Instant::now();
        tracing::info!(worker = %ctx.config.id, "worker started");
        while !shutdown.is_cancelled() {
            while let Some(joined) = tasks.try_join_next() {
                log_join(joined);
            }
            if tokio::time::Instant::now() >= next_rescue {
                rescue(&ctx).await;
                next_rescue = tokio::time::Instant::now() + queue_config.heartbeat;
            }
            let room = ctx.config.concurrency.max(1).saturating_sub(tasks.len());
            let has_room = room > 0;
            if has_room {
                work.borrow_and_update();
                match ctx.queue.claim_batch(&ctx.config.id, room).await {
                    Ok(claims) if !claims.is_empty() => {
                        for claim in claims {
                            tasks.spawn(run::run_command(
                                ctx.clone(),
                                claim,
                                hard_stop.child_token(),
                            ));
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "claiming failed; retrying"),
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = work.changed(), if has_room => {
                    if changed.is_err() {
                        tokio::time::sleep(tick).await;
                    }
                }
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => log_join(joined),
                () = tokio::time::sleep(tick) => {}
            }
        }
        let report = drain(tasks, hard_stop, ctx.config.drain_deadline, &ctx.config.id).await;
        ctx.outcomes.close();
        ctx.outcomes.wait().await;
        report
    }
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined {
        tracing::error!(%error, "a command task panicked");
    }
}

async fn drain(
    mut tasks: JoinSet<()>,
    hard_stop: CancellationToken,
    deadline: Duration,
    worker: &str,
) -> DrainReport {
    let running = tasks.len();
    tracing::info!(worker, running, "draining");
    let mut finished = 0;
    let waited = tokio::time::timeout(deadline, async {
        while let Some(joined) = tasks.join_next().await {
            log_join(joined);
            finished += 1;
        }
    })
    .await;
    let cancelled = running - finished;
    if waited.is_err() {
        hard_stop.cancel();
        while let Some(joined) = tasks.join_next().await {
            log_join(joined);
        }
    }
    DrainReport {
        finished,
        cancelled,
    }
}

/// Applies the rescue rules to expired leases and announces the outcome on each stream.
async fn rescue(ctx: &Context) {
    let rescued = match ctx.queue.rescue_expired().await {
        Ok(rescued) => rescued,
        Err(error) => {
            tracing::warn!(%error, "rescuing expired leases failed");
            return;
        }
    };
    for r in rescued {
        tracing::warn!(command = %r.command_id, status = %r.status, reason = %r.reason, "rescued an expired lease");
        let event = if r.status == CommandStatus::Pending {
            HostEvent::Status { status: r.status }
        } else {
            HostEvent::Done {
                status: r.status,
                result: None,
                error: Some(r.reason.clone()),
            }
        };
        if let Err(error) = ctx
            .events
            .append(&r.command_id, &StreamEvent::Host(event))
            .await
        {
            tracing::warn!(%error, "recording a rescue event failed");
        }
        let entry = NewAuditEntry {
            actor: ctx.config.id.clone(),
            action: "command.rescued".into(),
            project_id: Some(r.project_id.to_string()),
            command_id: Some(r.command_id.to_string()),
            details: serde_json::json!({"status": r.status, "reason": r.reason}),
        };
        if let Err(error) = ctx.audit.append(entry).await {
            tracing::warn!(%error, "auditing a rescue failed");
        }
    }
}
