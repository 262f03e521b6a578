//! A loaded plugin as a [`CodeAgent`]: each execution gets a fresh store and instance,
//! a deadline that traps, and the cooperative-then-forced cancel of the ABI.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::mcp::{MCP_SERVERS_OPTION, referenced_credentials};
use crate::domain::{AgentProvider, AgentResult, ProjectId, ResultStatus};
use crate::ports::{AgentError, CodeAgent, Execution, InteractionContext};

use super::abi::{GuestError, GuestOutcome, GuestRequest, ProviderPre};
use super::host::interaction::{Asker, Inbox};
use super::manifest::Manifest;
use super::state::{DEADLINE_TRAP, ExecCtx, new_store};
use super::{LoadInfo, RuntimeInner};

/// One loaded version of a plugin. An execution holds an `Arc` of it, so a hot reload
/// never changes the code under a running execution.
pub struct WasmAgent {
    runtime: Arc<RuntimeInner>,
    provider: AgentProvider,
    manifest: Arc<Manifest>,
    pre: ProviderPre,
    fingerprint: String,
    load: LoadInfo,
}

enum Ending<T> {
    Returned(T),
    /// The grace period after a cancel or the timeout passed.
    Killed,
}

impl WasmAgent {
    pub(crate) fn new(
        runtime: Arc<RuntimeInner>,
        provider: AgentProvider,
        manifest: Arc<Manifest>,
        pre: ProviderPre,
        fingerprint: String,
        load: LoadInfo,
    ) -> Self {
        Self {
            runtime,
            provider,
            manifest,
            pre,
            fingerprint,
            load,
        }
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// sha256 of the manifest and component this version was loaded from.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether the provider takes follow-up input (its component imports
    /// `interaction.next-input`), so `POST /commands/{id}/input` can reach it.
    pub fn takes_input(&self) -> bool {
        self.pre.takes_input()
    }

    /// Whether the compiled code came from the cache, and how long the load took.
    pub fn load_info(&self) -> LoadInfo {
        self.load
    }

    fn exec_ctx(&self, project: Option<ProjectId>, execution: Option<&Execution>) -> Arc<ExecCtx> {
        let mut exec = ExecCtx::new(
            self.manifest.clone(),
            project,
            self.runtime.config.executor.clone(),
            self.runtime.config.secrets.clone(),
            execution.map(|e| e.events.clone()),
        );
        exec.services = Some(self.runtime.services.clone());
        Arc::new(exec)
    }

    /// Instantiates the plugin and calls `capabilities()`: the cheapest full round trip,
    /// used by the benchmark and as a health probe.
    pub async fn probe(&self) -> Result<(), AgentError> {
        let exec = self.exec_ctx(None, None);
        set_deadline(&exec, Instant::now() + Duration::from_secs(10));
        let mut store = new_store(&self.runtime.engine, exec);
        self.pre
            .capabilities(&mut store)
            .await
            .map(|_| ())
            .map_err(|e| AgentError::Crashed(format!("{e:#}")))
    }

    /// Calls the plugin's `cancel` export on a fresh instance: best-effort clean-up for an
    /// execution whose instance is gone (killed, or lost with its host).
    pub async fn cleanup(
        &self,
        project: ProjectId,
        command_id: &str,
        session_id: Option<&str>,
    ) -> Result<(), AgentError> {
        let exec = self.exec_ctx(Some(project.clone()), None);
        let grace = self.runtime.config.cancel_grace;
        set_deadline(&exec, Instant::now() + grace);
        let mut store = new_store(&self.runtime.engine, exec.clone());
        let call = self
            .pre
            .cleanup(&mut store, command_id, project.as_str(), session_id);
        let outcome = tokio::time::timeout(grace, call).await;
        exec.kill_processes().await;
        match outcome {
            Err(_) => Err(AgentError::CancelIgnored {
                grace_secs: grace.as_secs(),
            }),
            Ok(Err(trap)) => Err(AgentError::Crashed(format!("{trap:#}"))),
            Ok(Ok(Err(e))) => Err(guest_error(e)),
            Ok(Ok(Ok(()))) => Ok(()),
        }
    }
}

fn set_deadline(exec: &ExecCtx, at: Instant) {
    if let Ok(mut deadline) = exec.hard_deadline.lock() {
        *deadline = Some(at);
    }
}

fn guest_error(e: GuestError) -> AgentError {
    match e {
        GuestError::InvalidRequest(m) => AgentError::InvalidRequest(m),
        GuestError::Unavailable(m) => AgentError::Unavailable(m),
        GuestError::Cancelled => AgentError::Failed("cancelled".into()),
        GuestError::Failed(m) => AgentError::Failed(m),
    }
}

#[async_trait]
impl CodeAgent for WasmAgent {
    fn provider(&self) -> &AgentProvider {
        &self.provider
    }

    async fn execute(&self, mut execution: Execution) -> Result<AgentResult, AgentError> {
        let started = Instant::now();
        execution.request.options = self
            .manifest
            .apply_options(&execution.request.options)
            .map_err(|e| AgentError::InvalidRequest(e.to_string()))?;
        if self.manifest.grants.mcp_servers() {
            // Always the stored list, so a request can never bring servers of its own.
            let servers = serde_json::to_value(&execution.mcp_servers)
                .map_err(|e| AgentError::Failed(format!("encoding MCP servers: {e}")))?;
            execution
                .request
                .options
                .insert(MCP_SERVERS_OPTION.to_owned(), servers);
        }
        let timeout = execution.request.timeout;
        if timeout > self.manifest.limits.max_timeout {
            return Err(AgentError::InvalidRequest(format!(
                "timeout of {} s exceeds this provider's ceiling of {} s",
                timeout.as_secs(),
                self.manifest.limits.max_timeout.as_secs()
            )));
        }
        let grace = self.runtime.config.cancel_grace;
        let exec = self.execution_ctx(&execution);
        let soft_deadline = started + timeout;
        set_deadline(&exec, soft_deadline + grace);
        let mut store = new_store(&self.runtime.engine, exec.clone());
        if self.pre.takes_input()
            && let Some(asker) = &exec.asker
        {
            store.data_mut().input = asker.port.open_input(&asker.ctx).await.map(Inbox::new);
        }
        let (ending, timed_out) = self
            .drive(&mut store, &exec, &execution, soft_deadline)
            .await;
        // The instance (and its store, with the input's receiver) goes before anything
        // else: a trapped or abandoned store is never reused.
        drop(store);
        exec.kill_processes().await;
        let stop = Stop {
            timed_out,
            cancelled: execution.cancel.is_cancelled(),
            timeout,
            grace,
        };
        let mut outcome = stop.outcome(ending);
        if let Err(AgentError::Crashed(message)) = &outcome {
            tracing::warn!(plugin = %self.provider.name, error = %message, "provider crashed");
        }
        if let Ok(result) = &mut outcome {
            result.duration = started.elapsed();
        }
        outcome
    }
}

impl WasmAgent {
    /// The execution's context, with the runtime's interaction port asked on its behalf.
    fn execution_ctx(&self, execution: &Execution) -> Arc<ExecCtx> {
        let mut exec = ExecCtx::new(
            self.manifest.clone(),
            Some(execution.project_id.clone()),
            self.runtime.config.executor.clone(),
            self.runtime.config.secrets.clone(),
            Some(execution.events.clone()),
        );
        exec.services = Some(self.runtime.services.clone());
        if self.manifest.grants.mcp_servers() {
            exec.mcp_credentials = referenced_credentials(&execution.mcp_servers);
        }
        exec.asker = Some(Asker {
            port: self.runtime.config.interaction.clone(),
            ctx: InteractionContext {
                command_id: execution.command_id.clone(),
                project_id: execution.project_id.clone(),
                provider: self.provider.name.clone(),
                cancel: exec.cancel.clone(),
                permissions: execution.request.permissions,
            },
        });
        Arc::new(exec)
    }

    /// Runs the guest's `execute` until it returns or is killed: a cancel or the timeout
    /// fires the execution's token and arms the kill after the grace period. Returns how it
    /// ended and whether the timeout passed.
    async fn drive(
        &self,
        store: &mut wasmtime::Store<super::state::HostState>,
        exec: &ExecCtx,
        execution: &Execution,
        soft_deadline: Instant,
    ) -> (Ending<wasmtime::Result<GuestOutcome>>, bool) {
        let grace = self.runtime.config.cancel_grace;
        let command_id = execution.command_id.to_string();
        let project_id = execution.project_id.to_string();
        let mut call = Box::pin(self.pre.execute(
            store,
            GuestRequest {
                command_id: &command_id,
                project_id: &project_id,
                request: &execution.request,
            },
        ));
        let mut kill_at: Option<Instant> = None;
        let mut timed_out = false;
        let ending = loop {
            let kill = async {
                match kill_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                outcome = &mut call => break Ending::Returned(outcome),
                () = execution.cancel.cancelled(), if kill_at.is_none() => {
                    exec.cancel.cancel();
                    let at = Instant::now() + grace;
                    set_deadline(exec, at);
                    kill_at = Some(at);
                }
                () = tokio::time::sleep_until(soft_deadline.into()), if !timed_out => {
                    timed_out = true;
                    exec.cancel.cancel();
                    kill_at.get_or_insert(soft_deadline + grace);
                }
                () = kill => break Ending::Killed,
            }
        };
        (ending, timed_out)
    }
}

/// How an execution was stopped from outside, if it was.
struct Stop {
    /// The request's timeout passed.
    timed_out: bool,
    /// The command was cancelled.
    cancelled: bool,
    timeout: Duration,
    grace: Duration,
}

impl Stop {
    /// The one place where the way an execution ended becomes its result status or error,
    /// whatever the ABI version of the provider.
    fn outcome(
        &self,
        ending: Ending<wasmtime::Result<GuestOutcome>>,
    ) -> Result<AgentResult, AgentError> {
        let timed_out_text = || format!("timed out after {} s", self.timeout.as_secs());
        match ending {
            Ending::Killed => Err(self.stopped()),
            Ending::Returned(Err(trap)) => {
                let message = format!("{trap:#}");
                if message.contains(DEADLINE_TRAP) {
                    Err(self.stopped())
                } else {
                    Err(AgentError::Crashed(message))
                }
            }
            // A guest that honoured the timeout's cancel still failed: it did not finish.
            Ending::Returned(Ok(Err(GuestError::Cancelled))) if self.timed_out => {
                Ok(AgentResult::failed(timed_out_text()))
            }
            Ending::Returned(Ok(Err(GuestError::Cancelled))) => {
                let mut result = AgentResult::new(ResultStatus::Cancelled);
                result.error = Some("cancelled".into());
                Ok(result)
            }
            Ending::Returned(Ok(Err(GuestError::Failed(m)))) => Ok(AgentResult::failed(m)),
            Ending::Returned(Ok(Err(other))) => Err(guest_error(other)),
            Ending::Returned(Ok(Ok(mut result))) => {
                if self.timed_out && result.status != ResultStatus::Completed {
                    result.status = ResultStatus::Failed;
                    result.error = Some(timed_out_text());
                }
                Ok(result)
            }
        }
    }

    /// The error of an execution that had to be killed (or hit its hard deadline).
    fn stopped(&self) -> AgentError {
        if self.timed_out && !self.cancelled {
            AgentError::TimedOut {
                timeout_secs: self.timeout.as_secs(),
            }
        } else {
            AgentError::CancelIgnored {
                grace_secs: self.grace.as_secs(),
            }
        }
    }
}
