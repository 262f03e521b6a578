//! Per-project services the host keeps running for plugins: a plugin's manifest declares a
//! program (`[service]`, see [`spec`]); the first project-http request of a project to the
//! declared port starts it in the project's workspace on a port the host picks, with a
//! secret the host mints, and later requests of the same project reuse it. The process
//! belongs to the host, not to an execution: it outlives commands, and it is stopped when
//! it was unused for the idle timeout, when its project is deleted, and when the host shuts
//! down. One that dies is forgotten, and the next request starts a new one. An execution
//! may add environment (its backend's configuration, credentials by name); a request whose
//! environment differs from the running service's restarts it, so a project's service always
//! runs with its latest command's configuration.

mod probe;
pub mod spec;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio_util::sync::CancellationToken;

use crate::domain::ProjectId;
use crate::ports::executor::BoxedWriter;
use crate::ports::{
    EnvValue, ExecError, Executor, ExitStatus, ProcessControl, SecretValue, Signal, SpawnSpec,
};
use spec::{SecretAuth, ServiceSpec};

/// Output lines of a service kept for the error when it does not come up.
const OUTPUT_TAIL: usize = 20;
/// Pause between readiness probes while a service comes up.
const READY_POLL: Duration = Duration::from_millis(100);
/// Time a stopped service gets to exit on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Why a service could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("choosing a port for service {program:?}: {source}")]
    Port {
        program: String,
        source: std::io::Error,
    },
    #[error("starting service {program:?}: {source}")]
    Spawn { program: String, source: ExecError },
    #[error("service {program:?} exited during start-up ({status}){tail}")]
    Exited {
        program: String,
        status: String,
        tail: String,
    },
    #[error("service {program:?} did not answer {path} within {secs} s{tail}")]
    NotReady {
        program: String,
        path: String,
        secs: u64,
        tail: String,
    },
}

/// A running service, for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub plugin: String,
    pub project: ProjectId,
    /// The port the service really listens on (the guest addresses the declared one).
    pub port: u16,
    /// The process (group) id, where the executor knows it.
    pub pid: Option<u32>,
    /// Requests and event streams that used it so far.
    pub uses: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    plugin: String,
    project: ProjectId,
}

/// The services of every project, over one executor. Cheap to share.
pub struct Services {
    executor: Arc<dyn Executor>,
    running: Mutex<HashMap<Key, Arc<Instance>>>,
    /// Serialises starts per key, so concurrent first requests start one process.
    starting: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

/// One started service process.
struct Instance {
    key: Key,
    spec: ServiceSpec,
    /// The environment the execution that started it added (secrets by name).
    env: Vec<(String, EnvValue)>,
    port: u16,
    secret: SecretValue,
    control: Arc<dyn ProcessControl>,
    /// Held open: some services end when their stdin closes.
    _stdin: Mutex<BoxedWriter>,
    output: Arc<Mutex<VecDeque<String>>>,
    leases: AtomicUsize,
    uses: AtomicU64,
    last_used: Mutex<Instant>,
    /// Fires once the process is gone.
    gone: CancellationToken,
}

/// A use of a service: while one is held the service is not idle. Dropping it marks the
/// service used now.
pub struct Lease {
    instance: Arc<Instance>,
}

impl Lease {
    /// The port to connect to in the project's workspace.
    pub fn port(&self) -> u16 {
        self.instance.port
    }

    /// The `Authorization` header value for requests to the service, if it takes a secret.
    pub fn authorization(&self) -> Option<String> {
        authorization(&self.instance.spec, &self.instance.secret)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.instance.touch();
        self.instance.leases.fetch_sub(1, Ordering::SeqCst);
    }
}

fn authorization(spec: &ServiceSpec, secret: &SecretValue) -> Option<String> {
    spec.secret.as_ref().map(|s| match &s.auth {
        SecretAuth::Basic { user } => {
            let pair = format!("{user}:{}", secret.expose());
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            format!("Basic {encoded}")
        }
        SecretAuth::Bearer => format!("Bearer {}", secret.expose()),
    })
}

impl Instance {
    fn touch(&self) {
        if let Ok(mut last) = self.last_used.lock() {
            *last = Instant::now();
        }
    }

    fn lease(self: &Arc<Self>) -> Lease {
        self.leases.fetch_add(1, Ordering::SeqCst);
        self.uses.fetch_add(1, Ordering::SeqCst);
        self.touch();
        Lease {
            instance: self.clone(),
        }
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.leases.load(Ordering::SeqCst) > 0 {
            return None;
        }
        self.last_used.lock().ok().map(|last| last.elapsed())
    }

    /// The last output lines, without the secret, as ": …" for an error (empty if none).
    fn tail(&self) -> String {
        let lines: Vec<String> = match self.output.lock() {
            Ok(lines) => lines.iter().cloned().collect(),
            Err(_) => Vec::new(),
        };
        let text = lines.join("\n").replace(self.secret.expose(), "[redacted]");
        match text.trim() {
            "" => String::new(),
            text => format!(": {text}"),
        }
    }

    /// SIGTERM, then SIGKILL after [`STOP_GRACE`]; returns once the process is gone.
    async fn stop(&self) {
        if let Err(e) = self.control.signal(Signal::Terminate).await {
            tracing::warn!(plugin = %self.key.plugin, project = %self.key.project, error = %e, "stopping a service failed");
        }
        if tokio::time::timeout(STOP_GRACE, self.control.wait())
            .await
            .is_err()
        {
            let _ = self.control.signal(Signal::Kill).await;
            let _ = self.control.wait().await;
        }
    }
}

impl Services {
    /// No service runs until a project asks for one.
    pub fn new(executor: Arc<dyn Executor>) -> Self {
        Self {
            executor,
            running: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashMap::new()),
        }
    }

    /// The executor the services (and every plugin process) run on, for the host's own
    /// work in workspaces: the worker's change snapshots.
    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.executor
    }

    /// The plugin's service of `project` with the execution's extra `env` (checked by
    /// [`ServiceSpec::check_guest_env`]), started (and waited for) when none runs. `None`
    /// takes the running service whatever it was started with (or starts one with none).
    pub async fn lease(
        self: &Arc<Self>,
        plugin: &str,
        spec: &ServiceSpec,
        project: &ProjectId,
        env: Option<&[(String, EnvValue)]>,
    ) -> Result<Lease, ServiceError> {
        let key = Key {
            plugin: plugin.to_owned(),
            project: project.clone(),
        };
        if let Some(lease) = self.reuse(&key, spec, env) {
            return Ok(lease);
        }
        let gate = self.gate(&key);
        let _starting = gate.lock().await;
        if let Some(lease) = self.reuse(&key, spec, env) {
            return Ok(lease);
        }
        // A running service of an older manifest or another configuration gives way.
        if let Some(old) = self.take(&key) {
            tracing::info!(%plugin, %project, "restarting a service for a changed manifest or configuration");
            old.stop().await;
        }
        let instance = self
            .start(key.clone(), spec.clone(), env.unwrap_or_default().to_vec())
            .await?;
        let lease = instance.lease();
        self.lock_running().insert(key, instance.clone());
        tokio::spawn(self.clone().watch(instance));
        Ok(lease)
    }

    /// The running services, in no particular order.
    pub fn running(&self) -> Vec<ServiceInfo> {
        self.lock_running()
            .values()
            .map(|i| ServiceInfo {
                plugin: i.key.plugin.clone(),
                project: i.key.project.clone(),
                port: i.port,
                pid: i.control.id(),
                uses: i.uses.load(Ordering::SeqCst),
            })
            .collect()
    }

    /// Stops every service of `project` (it is being deleted) and waits until they are gone.
    pub async fn stop_project(&self, project: &ProjectId) {
        let stopping: Vec<Arc<Instance>> = {
            let mut running = self.lock_running();
            let keys: Vec<Key> = running
                .keys()
                .filter(|k| &k.project == project)
                .cloned()
                .collect();
            keys.iter().filter_map(|k| running.remove(k)).collect()
        };
        for instance in stopping {
            tracing::info!(plugin = %instance.key.plugin, %project, "stopping the service of a deleted project");
            instance.stop().await;
        }
    }

    /// Stops every service (the host shuts down) and waits until they are gone.
    pub async fn stop_all(&self) {
        let stopping: Vec<Arc<Instance>> = self.lock_running().drain().map(|(_, i)| i).collect();
        for instance in stopping {
            instance.stop().await;
        }
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Instance>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reuse(
        &self,
        key: &Key,
        spec: &ServiceSpec,
        env: Option<&[(String, EnvValue)]>,
    ) -> Option<Lease> {
        let running = self.lock_running();
        let instance = running.get(key)?;
        let same = &instance.spec == spec && env.is_none_or(|env| instance.env == env);
        (!instance.gone.is_cancelled() && same).then(|| instance.lease())
    }

    fn take(&self, key: &Key) -> Option<Arc<Instance>> {
        self.lock_running().remove(key)
    }

    fn gate(&self, key: &Key) -> Arc<tokio::sync::Mutex<()>> {
        let mut starting = self.starting.lock().unwrap_or_else(|p| p.into_inner());
        starting.entry(key.clone()).or_default().clone()
    }

    /// Spawns the program on a fresh port and waits until it answers its ready path.
    async fn start(
        &self,
        key: Key,
        spec: ServiceSpec,
        extra: Vec<(String, EnvValue)>,
    ) -> Result<Arc<Instance>, ServiceError> {
        let program = spec.program.clone();
        let port = free_port().map_err(|source| ServiceError::Port {
            program: program.clone(),
            source,
        })?;
        let secret = SecretValue::new(mint_secret());
        let mut env: Vec<(String, EnvValue)> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), EnvValue::Plain(v.clone())))
            .chain(extra.iter().cloned())
            .collect();
        if let Some(s) = &spec.secret {
            env.push((s.env.clone(), EnvValue::Plain(secret.expose().to_owned())));
        }
        let spawn = SpawnSpec {
            program: program.clone(),
            args: spec.args_for(port),
            env,
            working_dir: None,
        };
        let spawned = self
            .executor
            .spawn(&key.project, spawn)
            .await
            .map_err(|source| ServiceError::Spawn {
                program: program.clone(),
                source,
            })?;
        let output = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(keep_tail(spawned.stdout, output.clone()));
        tokio::spawn(keep_tail(spawned.stderr, output.clone()));
        let instance = Arc::new(Instance {
            key,
            spec,
            env: extra,
            port,
            secret,
            control: spawned.control,
            _stdin: Mutex::new(spawned.stdin),
            output,
            leases: AtomicUsize::new(0),
            uses: AtomicU64::new(0),
            last_used: Mutex::new(Instant::now()),
            gone: CancellationToken::new(),
        });
        if let Err(e) = self.ready(&instance).await {
            instance.stop().await;
            return Err(e);
        }
        tracing::info!(plugin = %instance.key.plugin, project = %instance.key.project, port, pid = ?instance.control.id(), "service started");
        Ok(instance)
    }

    /// Probes the ready path until it answers 2xx, the process exits or the start times out.
    async fn ready(&self, instance: &Instance) -> Result<(), ServiceError> {
        let spec = &instance.spec;
        let deadline = Instant::now() + spec.start_timeout;
        let auth = authorization(spec, &instance.secret);
        loop {
            let exited = tokio::time::timeout(Duration::ZERO, instance.control.wait()).await;
            if let Ok(status) = exited {
                let status = match status {
                    Ok(ExitStatus {
                        code: Some(code), ..
                    }) => format!("exit code {code}"),
                    Ok(ExitStatus {
                        signal: Some(signal),
                        ..
                    }) => format!("signal {signal}"),
                    Ok(_) => "ended".to_owned(),
                    Err(e) => e.to_string(),
                };
                return Err(ServiceError::Exited {
                    program: spec.program.clone(),
                    status,
                    tail: instance.tail(),
                });
            }
            let probe = probe::get(
                self.executor.as_ref(),
                &instance.key.project,
                instance.port,
                &spec.ready_path,
                auth.as_deref(),
            );
            if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(2), probe).await
                && (200..300).contains(&status)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ServiceError::NotReady {
                    program: spec.program.clone(),
                    path: spec.ready_path.clone(),
                    secs: spec.start_timeout.as_secs(),
                    tail: instance.tail(),
                });
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Until the process is gone: stops it once it was idle for its timeout; then forgets it.
    async fn watch(self: Arc<Self>, instance: Arc<Instance>) {
        let idle = instance.spec.idle_timeout;
        let check = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        loop {
            tokio::select! {
                status = instance.control.wait() => {
                    tracing::info!(plugin = %instance.key.plugin, project = %instance.key.project, status = ?status, "service exited");
                    break;
                }
                () = tokio::time::sleep(check) => {
                    if instance.idle_for().is_some_and(|i| i >= idle) {
                        tracing::info!(plugin = %instance.key.plugin, project = %instance.key.project, idle_secs = idle.as_secs(), "stopping an idle service");
                        instance.stop().await;
                        break;
                    }
                }
            }
        }
        instance.gone.cancel();
        let mut running = self.lock_running();
        if running
            .get(&instance.key)
            .is_some_and(|i| Arc::ptr_eq(i, &instance))
        {
            running.remove(&instance.key);
        }
    }
}

/// Keeps the last [`OUTPUT_TAIL`] lines of a stream (and drains it, so a chatty service
/// never blocks on a full pipe).
async fn keep_tail(stream: impl AsyncRead + Unpin, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == OUTPUT_TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}

/// A port nobody on this machine listens on now (bound, then released).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// 256 random bits, hex: the password between the host and one service process.
fn mint_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}
