//! What one execution's `Store` carries: its sandboxed WASI context, its resources, its
//! limits and the execution context every host import consults (grants, cancel state,
//! where events go, which processes to kill).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::domain::ProjectId;
use crate::ports::{EnvValue, EventSink, Executor, ProcessControl, SecretResolver, Signal};

use super::host::interaction::{Asker, Inbox};
use super::host::log::LogGate;
use super::limiter::Limiter;
use super::manifest::{Denied, Manifest};
use super::service::Services;

/// The host call was interrupted by the execution's cancel (delivered once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cancelled;

/// Shared between the store (host imports) and the task driving the execution.
pub(crate) struct ExecCtx {
    pub plugin: String,
    pub manifest: Arc<Manifest>,
    /// `None` for executions without a project (the load-time `capabilities()` probe);
    /// imports that need a workspace then fail with a clear error.
    pub project: Option<ProjectId>,
    pub executor: Arc<dyn Executor>,
    pub secrets: Arc<dyn SecretResolver>,
    pub events: Option<EventSink>,
    /// Who decides the provider's permission requests; `None` for calls that belong to no
    /// command (the `capabilities()` probe, a clean-up).
    pub asker: Option<Asker>,
    /// The runtime's per-project services; `None` for calls that start none (the probe).
    pub services: Option<Arc<Services>>,
    /// The environment the guest asked its service to run with (`configure-service`),
    /// checked against the manifest; `None` until it asks: such an execution (a clean-up)
    /// takes the running service as it is.
    pub service_env: Mutex<Option<Vec<(String, EnvValue)>>>,
    /// Credentials the project's MCP servers reference, granted to this execution on top of
    /// the manifest's when the manifest grants `mcp_servers`.
    pub mcp_credentials: Vec<String>,
    /// Fires on an external cancel or at the request's timeout.
    pub cancel: CancellationToken,
    cancel_delivered: AtomicBool,
    /// After this instant the guest traps at its next epoch check.
    pub hard_deadline: Mutex<Option<Instant>>,
    processes: Mutex<Vec<Arc<dyn ProcessControl>>>,
}

/// An execution dropped before it ended (its worker gave up on it, or the host shuts down)
/// still leaves no process behind: whatever it started and did not reap is killed.
impl Drop for ExecCtx {
    fn drop(&mut self) {
        let left = self.take_processes();
        if left.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(plugin = %self.plugin, "an execution's processes outlive it: no runtime to kill them");
            return;
        };
        let plugin = self.plugin.clone();
        runtime.spawn(async move {
            for process in left {
                if let Err(e) = process.signal(Signal::Kill).await {
                    tracing::warn!(%plugin, error = %e, "killing an abandoned execution's process failed");
                }
            }
        });
    }
}

impl ExecCtx {
    pub fn new(
        manifest: Arc<Manifest>,
        project: Option<ProjectId>,
        executor: Arc<dyn Executor>,
        secrets: Arc<dyn SecretResolver>,
        events: Option<EventSink>,
    ) -> Self {
        Self {
            plugin: manifest.name.to_string(),
            manifest,
            project,
            executor,
            secrets,
            events,
            asker: None,
            services: None,
            service_env: Mutex::new(None),
            mcp_credentials: Vec::new(),
            cancel: CancellationToken::new(),
            cancel_delivered: AtomicBool::new(false),
            hard_deadline: Mutex::new(None),
            processes: Mutex::new(Vec::new()),
        }
    }

    /// Whether the guest may name credential `name`: granted by its manifest or referenced
    /// by its project's MCP servers.
    pub fn check_credential(&self, name: &str) -> Result<(), Denied> {
        match self.manifest.grants.check_credential(name) {
            Err(_) if self.mcp_credentials.iter().any(|c| c == name) => Ok(()),
            other => other,
        }
    }

    /// Runs a blocking host operation. When the execution is (or becomes) cancelled, the
    /// first such call returns `Cancelled` at once; later calls run normally so the guest
    /// can clean up within its grace period.
    pub async fn cancellable<F: Future>(&self, op: F) -> Result<F::Output, Cancelled> {
        if self.cancel_delivered.load(Ordering::SeqCst) {
            return Ok(op.await);
        }
        if self.cancel.is_cancelled() {
            return self.deliver(op).await;
        }
        tokio::pin!(op);
        tokio::select! {
            out = &mut op => Ok(out),
            () = self.cancel.cancelled() => self.deliver(op).await,
        }
    }

    async fn deliver<F: Future>(&self, op: F) -> Result<F::Output, Cancelled> {
        if self.cancel_delivered.swap(true, Ordering::SeqCst) {
            Ok(op.await)
        } else {
            Err(Cancelled)
        }
    }

    /// Records that a host call returned `cancelled` on its own terms (the interaction
    /// port's answer), so the cancel is not delivered a second time.
    pub fn note_cancel_delivered(&self) {
        self.cancel_delivered.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    pub fn track(&self, process: Arc<dyn ProcessControl>) {
        if let Ok(mut list) = self.processes.lock() {
            list.push(process);
        }
    }

    /// Kills every process this execution started (already exited ones are unaffected).
    pub async fn kill_processes(&self) {
        for process in self.take_processes() {
            if let Err(e) = process.signal(Signal::Kill).await {
                tracing::warn!(plugin = %self.plugin, error = %e, "killing a provider's process failed");
            }
        }
    }

    /// Takes the tracked processes out of the list, for killing them.
    fn take_processes(&self) -> Vec<Arc<dyn ProcessControl>> {
        match self.processes.lock() {
            Ok(mut list) => std::mem::take(&mut *list),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    pub fn project(&self) -> Result<&ProjectId, String> {
        self.project
            .as_ref()
            .ok_or_else(|| "no project workspace is attached to this call".to_owned())
    }

    fn past_deadline(&self) -> bool {
        self.hard_deadline
            .lock()
            .ok()
            .and_then(|d| *d)
            .is_some_and(|d| Instant::now() >= d)
    }
}

/// The data of one execution's store.
pub(crate) struct HostState {
    wasi: WasiCtx,
    pub table: ResourceTable,
    limits: Limiter,
    pub exec: Arc<ExecCtx>,
    /// Follow-up input of an execution whose provider takes it.
    pub input: Option<Inbox>,
    /// The limits on this execution's guest log lines.
    pub log: LogGate,
}

impl HostState {
    /// Bytes of memory the guest was refused beyond `limits.memory_mib`, if any.
    pub fn refused_memory(&self) -> Option<usize> {
        self.limits.refused_memory()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Why the epoch check stopped the guest.
pub(crate) const DEADLINE_TRAP: &str = "rdev: execution deadline exceeded";

/// A store for one execution: an empty WASI context (no preopens, env, args, stdio or
/// network), memory limits from the manifest that trap instead of failing the grow, and
/// an epoch callback that yields every tick (so a runaway guest can still be dropped) and
/// traps once the hard deadline passed.
pub(crate) fn new_store(engine: &wasmtime::Engine, exec: Arc<ExecCtx>) -> Store<HostState> {
    let mut wasi = WasiCtx::builder();
    wasi.allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    let memory = usize::try_from(exec.manifest.limits.memory_bytes).unwrap_or(usize::MAX);
    let limits = StoreLimitsBuilder::new()
        .memory_size(memory)
        .instances(64)
        .tables(64)
        .memories(8)
        .table_elements(1_000_000)
        .trap_on_grow_failure(true)
        .build();
    let limits = Limiter::new(limits, memory);
    let state = HostState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        limits,
        log: LogGate::new(exec.plugin.clone()),
        exec,
        input: None,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| {
        if ctx.data().exec.past_deadline() {
            Err(wasmtime::Error::msg(DEADLINE_TRAP))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store
}
