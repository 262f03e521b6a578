//! One claimed command from start to its final status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::budget::{self, BudgetWatch};
use super::changes;
use super::heartbeat::Heartbeats;
use super::{Context, EVENT_SINK_CAPACITY};
use crate::domain::mcp::McpServer;
use crate::domain::request_digest;
use crate::domain::{
    AgentEvent, AgentResult, Claim, CommandId, CommandRecord, CommandStatus, CommandUsage,
    HostEvent, Lease, NewAuditEntry, Outcome, OutputGuard, Redactor, ResultStatus, StreamEvent,
    StreamRedactor,
};
use crate::ports::{AgentError, CodeAgent, EventSink, Execution, StoreError};
use crate::services::approvals::input::{undelivered, undelivered_warning};
use crate::services::changes::Snapshot;

/// Why the worker stopped an execution itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Someone requested a cancel (seen at a heartbeat).
    Cancel,
    /// The request's timeout (plus grace) passed.
    Timeout,
    /// The drain deadline of a shutdown passed.
    Shutdown,
    /// The lease was lost: another worker owns the command now.
    LeaseLost,
    /// The output went over a limit under `on_output_limit = fail`.
    OutputLimit,
    /// The project's month-to-date cost reached its budget.
    Budget,
}

/// A stop the event forwarder asks for, with its reason in words.
type StopRequest = Option<(Stop, String)>;

pub(crate) async fn run_command(ctx: Context, claim: Claim, hard_stop: CancellationToken) {
    let Claim { command, lease } = claim;
    let started = Instant::now();
    // Held until the final status is written (see `Heartbeats`).
    let period = ctx.queue.config().heartbeat;
    let mut heartbeats = Heartbeats::start(ctx.queue.clone(), lease.clone(), period);
    // The version serving now is the one that runs: its provenance goes into the trail.
    let agent = ctx.providers.lookup(Some(&command.provider));
    let provenance = agent.as_ref().ok().map(|a| a.provider().provenance());
    audit(
        &ctx,
        &command,
        "command.started",
        serde_json::json!({
            "provider": command.provider,
            "attempt": command.attempts,
            "worker": ctx.config.id,
            "request_digest": request_digest(&command.request),
            "provenance": provenance,
        }),
    )
    .await;
    append(
        &ctx,
        &command,
        StreamEvent::Host(HostEvent::Status {
            status: CommandStatus::Running,
        }),
    )
    .await;

    let executed = match agent {
        Ok(agent) => execute(&ctx, (&command, &lease), &mut heartbeats, agent, hard_stop).await,
        Err(error) => Err(Stopped::Before(error.to_string())),
    };
    let outcome = match executed {
        Ok(outcome) => outcome,
        Err(Stopped::LeaseLost) => {
            tracing::warn!(command = %command.id, token = lease.token, "lease lost; leaving the command to its new owner");
            return;
        }
        Err(Stopped::Before(error)) => Outcome {
            status: CommandStatus::Failed,
            result: None,
            error: Some(error),
            usage: CommandUsage::default(),
        },
    };
    // The provider is done: its slot frees now and the outcome is written in the background
    // (the project's next command still waits for it: claims see it running until then).
    let recorder = ctx.clone();
    let finished = record_outcome(recorder, command, lease, outcome, started);
    ctx.outcomes.spawn(async move {
        finished.await;
        drop(heartbeats);
    });
}

/// Writes the final status under the lease, then audits it and closes the stream.
async fn record_outcome(
    ctx: Context,
    command: CommandRecord,
    lease: Lease,
    outcome: Outcome,
    started: Instant,
) {
    match retry_transient(&ctx, &lease.command_id, || {
        ctx.queue.finish(&lease, outcome.clone())
    })
    .await
    {
        Ok(record) => {
            budget::after_finish(&ctx, &record, outcome.usage.cost_usd).await;
            if let Some(observer) = &ctx.observer {
                observer.finished(&record.provider, record.status, started.elapsed());
            }
            report_undelivered(&ctx, &record).await;
            // Audit first: whoever sees `done` finds the trail complete.
            audit(
                &ctx,
                &record,
                "command.finished",
                serde_json::json!({
                    "status": record.status,
                    "error": record.error,
                    "exit_code": record.result.as_ref().and_then(|r| r.exit_code),
                    "duration_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "worker": ctx.config.id,
                    "provenance": record.provenance,
                }),
            )
            .await;
            append(
                &ctx,
                &record,
                StreamEvent::Host(HostEvent::Done {
                    status: record.status,
                    result: record.result.clone().map(Box::new),
                    error: record.error.clone(),
                }),
            )
            .await;
        }
        Err(StoreError::LeaseLost { .. }) => {
            tracing::warn!(command = %command.id, "lease lost before the result was written; result discarded");
        }
        Err(error) => {
            tracing::error!(command = %command.id, %error, "writing the result failed; the lease will expire and be rescued");
        }
    }
}

/// Says before `done` which follow-up inputs never reached the provider. Run after the
/// final status is written, when no more input can be stored, so the list is complete.
async fn report_undelivered(ctx: &Context, record: &CommandRecord) {
    match undelivered(&*ctx.events, &record.id).await {
        Ok(inputs) => {
            for input in &inputs {
                let warning = StreamEvent::Agent(undelivered_warning(input));
                append(ctx, record, warning).await;
            }
        }
        Err(error) => {
            tracing::warn!(command = %record.id, %error, "checking for undelivered input");
        }
    }
}

/// Longest wait between two attempts of a write the database refused for a transient reason.
const RETRY_MAX_WAIT: Duration = Duration::from_secs(1);

/// Retries a write while the database is unreachable (a restart, a failover), for as long as
/// a lease would still be valid, so a brief outage neither fails a command that ran fine nor
/// drops its events. Lost leases and every other error are returned at once.
async fn retry_transient<T, F, Fut>(
    ctx: &Context,
    command: &CommandId,
    write: F,
) -> Result<T, StoreError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let give_up = tokio::time::Instant::now() + ctx.queue.config().lease;
    let mut wait = Duration::from_millis(50);
    loop {
        match write().await {
            Err(StoreError::Backend { context, message })
                if tokio::time::Instant::now() + wait < give_up =>
            {
                tracing::warn!(%command, context, %message, "database unavailable; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX_WAIT);
            }
            other => return other,
        }
    }
}

/// The worker's own stop decision; the first reason wins.
struct Stopper {
    stop: Option<Stop>,
    give_up: tokio::time::Instant,
    cancel: CancellationToken,
    grace: Duration,
}

impl Stopper {
    /// Not stopping yet: `give_up` is set when [`Stopper::stop`] is first called.
    fn new(cancel: CancellationToken, grace: Duration) -> Self {
        Self {
            stop: None,
            give_up: tokio::time::Instant::now() + Duration::from_secs(u64::from(u32::MAX)),
            cancel,
            grace,
        }
    }

    /// Cancels the execution and starts the grace period after which the worker stops
    /// waiting for it.
    fn stop(&mut self, reason: Stop) {
        if self.stop.is_none() {
            tracing::debug!(?reason, "stopping the execution");
            self.stop = Some(reason);
            self.give_up = tokio::time::Instant::now() + self.grace;
            self.cancel.cancel();
        }
    }
}

enum Stopped {
    /// Another worker owns the command; write nothing.
    LeaseLost,
    /// The provider never ran; the command fails with this reason.
    Before(String),
}

/// What a command needs before its provider runs.
struct Started {
    redactor: Redactor,
    /// The workspace before the run, to record the command's changes after it.
    before: Option<Result<Snapshot, String>>,
    /// The project's MCP servers, read once per command.
    mcp_servers: Vec<McpServer>,
}

/// Readies a command to run: the redactor its output needs, its project's MCP servers and
/// the started mark that fences it to this worker. A database that is briefly away (a
/// restart) is waited for: nothing has run yet.
/// Then the workspace is snapshotted, to record the command's changes after its run.
async fn start(
    ctx: &Context,
    command: &CommandRecord,
    lease: &Lease,
    agent: &dyn CodeAgent,
) -> Result<Started, Stopped> {
    // Fail closed: output that cannot be redacted is not streamed at all.
    let redactor = retry_transient(ctx, &lease.command_id, || ctx.credentials.redactor());
    let redactor = redactor.await.map_err(|e| {
        Stopped::Before(format!(
            "credentials unavailable, output cannot be redacted: {e}"
        ))
    })?;
    let project = &command.project_id;
    let mcp_servers = retry_transient(ctx, &lease.command_id, || ctx.mcp.mcp_servers(project));
    let mcp_servers = mcp_servers
        .await
        .map_err(|e| Stopped::Before(format!("reading the project's MCP servers: {e}")))?
        .map(|stored| stored.servers)
        .unwrap_or_default();
    let idempotent = agent.provider().capabilities.idempotent;
    let provenance = agent.provider().provenance();
    match retry_transient(ctx, &lease.command_id, || {
        ctx.queue.mark_started(lease, idempotent, &provenance)
    })
    .await
    {
        Ok(()) => Ok(Started {
            redactor,
            before: changes::before(ctx, command).await,
            mcp_servers,
        }),
        Err(StoreError::LeaseLost { .. }) => Err(Stopped::LeaseLost),
        Err(error) => Err(Stopped::Before(error.to_string())),
    }
}

/// What the provider is handed: the command's request, where its events go, its cancel and
/// its project's MCP servers.
fn execution_of(
    command: &CommandRecord,
    events: EventSink,
    cancel: CancellationToken,
    mcp_servers: Vec<McpServer>,
) -> Execution {
    Execution {
        command_id: command.id.clone(),
        project_id: command.project_id.clone(),
        request: command.request.clone(),
        events,
        cancel,
        mcp_servers,
    }
}

async fn execute(
    ctx: &Context,
    (command, lease): (&CommandRecord, &Lease),
    heartbeats: &mut Heartbeats,
    agent: Arc<dyn CodeAgent>,
    hard_stop: CancellationToken,
) -> Result<Outcome, Stopped> {
    let Started {
        redactor,
        before,
        mcp_servers,
    } = start(ctx, command, lease, agent.as_ref()).await?;
    let (sink, events) = mpsc::channel(EVENT_SINK_CAPACITY);
    let (over_limit, mut limit_reached) = watch::channel::<StopRequest>(None);
    let execution_over = CancellationToken::new();
    let forwarder = tokio::spawn(forward(
        ctx.clone(),
        command.clone(),
        events,
        redactor.clone(),
        over_limit,
        execution_over.clone(),
    ));
    let mut limit_open = true;
    let cancel = hard_stop.child_token();
    let execution = execution_of(command, sink, cancel.clone(), mcp_servers);
    let grace = ctx.config.timeout_grace;
    // A boxed future (async_trait), so dropping it below really drops the execution.
    let mut running = agent.execute(execution);
    let deadline = tokio::time::sleep(command.request.timeout + grace);
    tokio::pin!(deadline);
    let mut cancels = ctx.queue.cancel_signal();
    let mut cancels_open = true;
    let mut stopper = Stopper::new(cancel.clone(), grace);
    let result = loop {
        tokio::select! {
            result = &mut running => break result,
            beat = heartbeats.next() => match beat {
                Ok(beat) if beat.cancel_requested => stopper.stop(Stop::Cancel),
                Ok(_) => {}
                Err(StoreError::LeaseLost { .. }) => stopper.stop(Stop::LeaseLost),
                Err(error) => tracing::warn!(command = %command.id, %error, "heartbeat failed; retrying"),
            },
            cancelled = cancels.recv(), if stopper.stop.is_none() && cancels_open => match cancelled {
                Ok(id) if id == command.id => stopper.stop(Stop::Cancel),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                // No more announcements; the heartbeat still reports the flag.
                Err(broadcast::error::RecvError::Closed) => cancels_open = false,
            },
            () = &mut deadline, if stopper.stop.is_none() => stopper.stop(Stop::Timeout),
            changed = limit_reached.changed(), if stopper.stop.is_none() && limit_open => match changed {
                Ok(()) => stopper.stop(limit_reached.borrow().as_ref().map_or(Stop::OutputLimit, |r| r.0)),
                // The forwarder ended: the provider's events are all in.
                Err(_) => limit_open = false,
            },
            () = hard_stop.cancelled(), if stopper.stop.is_none() => stopper.stop(Stop::Shutdown),
            () = tokio::time::sleep_until(stopper.give_up), if stopper.stop.is_some() => {
                break Err(AgentError::CancelIgnored { grace_secs: grace.as_secs() });
            }
        }
    };
    // The sink was moved into the execution; once that is dropped the forwarder drains and ends.
    drop(running);
    tracing::debug!(command = %command.id, "execution over; storing its last events");
    execution_over.cancel();
    let usage = forwarder.await.unwrap_or_else(|error| {
        tracing::error!(%error, "event forwarder panicked");
        CommandUsage::default()
    });
    changes::record(ctx, command, before).await;
    let requested = limit_reached.borrow().clone();
    let bounded = bounded_outcome(ctx, command, result, stopper.stop, &redactor, requested);
    let mut outcome = bounded.await?;
    outcome.usage = usage.settle(outcome.result.as_ref());
    Ok(outcome)
}

/// The command's outcome once its execution is over and its events are stored: the stop
/// reason and the output limit decide the status, and the result is bounded like the events
/// (what was cut is said before `done`).
async fn bounded_outcome(
    ctx: &Context,
    command: &CommandRecord,
    result: Result<AgentResult, AgentError>,
    stop: Option<Stop>,
    redactor: &Redactor,
    requested: StopRequest,
) -> Result<Outcome, Stopped> {
    if stop == Some(Stop::LeaseLost) {
        return Err(Stopped::LeaseLost);
    }
    // Over the limit under `fail` even when the provider ended before the worker stopped
    // it; a budget stop counts only if it stopped the provider.
    let (requested_stop, limit_reason) = requested.unzip();
    let stop = stop.or(requested_stop.filter(|s| *s == Stop::OutputLimit));
    let timeout = command.request.timeout;
    let mut outcome = outcome(result, stop, timeout, redactor, limit_reason);
    if let Some(warning) = ctx.config.output.limit_outcome(&mut outcome) {
        append(ctx, command, StreamEvent::Agent(warning)).await;
    }
    Ok(outcome)
}

/// Maps the provider's result and the worker's own stop reason to the final status, redacted:
/// what the provider returned is stored, audited and sent on like its events.
fn outcome(
    result: Result<AgentResult, AgentError>,
    stop: Option<Stop>,
    timeout: Duration,
    redactor: &Redactor,
    limit_reason: Option<String>,
) -> Outcome {
    let (status, error) = match (stop, &result) {
        (Some(Stop::OutputLimit), _) => (
            CommandStatus::Failed,
            Some(limit_reason.unwrap_or_else(|| "output limit reached".to_owned())),
        ),
        (Some(Stop::Budget), _) => (
            CommandStatus::Cancelled,
            Some(limit_reason.unwrap_or_else(|| "budget_exceeded".to_owned())),
        ),
        (Some(Stop::Cancel), _) => (
            CommandStatus::Cancelled,
            Some("cancelled on request".to_owned()),
        ),
        (Some(Stop::Timeout), _) => (
            CommandStatus::Failed,
            Some(
                AgentError::TimedOut {
                    timeout_secs: timeout.as_secs(),
                }
                .to_string(),
            ),
        ),
        (Some(Stop::Shutdown), _) => (
            CommandStatus::Failed,
            Some("interrupted: the host shut down before the command finished".to_owned()),
        ),
        (_, Ok(result)) => (
            match result.status {
                ResultStatus::Completed => CommandStatus::Completed,
                ResultStatus::Failed => CommandStatus::Failed,
                ResultStatus::Cancelled => CommandStatus::Cancelled,
            },
            result.error.clone(),
        ),
        (_, Err(error)) => (CommandStatus::Failed, Some(error.to_string())),
    };
    let mut result = result.ok();
    let mut error = error;
    if let Some(result) = &mut result {
        redactor.redact_result(result);
    }
    if let Some(error) = &mut error {
        redactor.redact_str(error);
    }
    Outcome {
        status,
        result,
        error,
        usage: CommandUsage::default(),
    }
}

/// Redacts, bounds and stores a provider's events in order (a credential split across two
/// pieces of output is caught too: see [`StreamRedactor`]; the limits cut what is already
/// redacted, so a cut never leaves half a credential for the redactor to miss). A limit that
/// asks the command to stop is sent on `over_limit`. While the database is unreachable the
/// append is retried (the provider is held back by the bounded sink meanwhile); any other
/// storage failure is logged and the event dropped. Ends when every sender is gone or, once
/// `execution_over` fires, when what was sent until then is stored.
async fn forward(
    ctx: Context,
    command: CommandRecord,
    mut events: mpsc::Receiver<AgentEvent>,
    redactor: Redactor,
    over_limit: watch::Sender<StopRequest>,
    execution_over: CancellationToken,
) -> CommandUsage {
    let mut stream = StreamRedactor::new(redactor);
    let mut budget = BudgetWatch::default();
    let mut guard = OutputGuard::new(ctx.config.output);
    loop {
        let event = tokio::select! {
            biased;
            event = events.recv() => event,
            // What was sent is still received after the close; a sender some task kept past
            // the execution's end can no longer hold the command open.
            () = execution_over.cancelled(), if !events.is_closed() => {
                events.close();
                continue;
            }
        };
        let Some(event) = event else { break };
        if let Some(reason) = budget.observe(&ctx, &command, &event).await {
            over_limit.send_replace(Some((Stop::Budget, reason)));
        }
        if let Some(event) = stream.push(event) {
            store_bounded(&ctx, &command, &mut guard, &over_limit, event).await;
        }
    }
    for event in stream.finish() {
        store_bounded(&ctx, &command, &mut guard, &over_limit, event).await;
    }
    if let Some(summary) = guard.summary() {
        append(&ctx, &command, StreamEvent::Agent(summary)).await;
    }
    budget.usage
}

/// Stores what the output limits keep of `event`, and the warning when the command's output
/// just reached its limit.
async fn store_bounded(
    ctx: &Context,
    command: &CommandRecord,
    guard: &mut OutputGuard,
    over_limit: &watch::Sender<StopRequest>,
    event: AgentEvent,
) {
    let admitted = guard.admit(event);
    for event in [admitted.event, admitted.warning].into_iter().flatten() {
        append(ctx, command, StreamEvent::Agent(event)).await;
    }
    if let Some(reason) = admitted.stop {
        tracing::warn!(command = %command.id, %reason, "stopping a command over its output limit");
        over_limit.send_replace(Some((Stop::OutputLimit, reason)));
    }
}

async fn append(ctx: &Context, command: &CommandRecord, event: StreamEvent) {
    // One key for every attempt: a retry after a lost acknowledgement stores the event once.
    let key = uuid::Uuid::now_v7().to_string();
    let stored = retry_transient(ctx, &command.id, || {
        ctx.events.append_once(&command.id, &event, &key)
    });
    if let Err(error) = stored.await {
        tracing::warn!(command = %command.id, %error, "storing an event failed");
    }
}

async fn audit(ctx: &Context, command: &CommandRecord, action: &str, details: serde_json::Value) {
    let entry = NewAuditEntry {
        actor: ctx.config.id.clone(),
        action: action.to_owned(),
        project_id: Some(command.project_id.to_string()),
        command_id: Some(command.id.to_string()),
        details,
    };
    // One key for every attempt, as for events: a retry after a lost acknowledgement chains
    // the entry once.
    let key = uuid::Uuid::now_v7().to_string();
    let written = retry_transient(ctx, &command.id, || {
        ctx.audit.append_once(entry.clone(), &key)
    });
    if let Err(error) = written.await {
        tracing::warn!(command = %command.id, %error, "writing an audit entry failed");
    }
}
