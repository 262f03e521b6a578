//! The composition root of `rdev serve`: picks the adapters, starts the store, the runtime,
//! the registry and the HTTP server, and stops them in order. Tests start the same
//! [`Server`] in-process on an ephemeral port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::adapters::kubernetes::{
    Credentials, KubernetesConfig, KubernetesExecutor, KubernetesProvisioner, KubernetesSeeder,
    PodTemplate,
};
use crate::adapters::local::seed::{LocalProvisioner, LocalSeeder};
use crate::adapters::local::{ConfinementConfig, WorkspaceLayout, build_local_executor};
use crate::adapters::store::{StoreOptions, connect, load_master_key};
use crate::adapters::woodpecker::{WoodpeckerClient, WoodpeckerConfig};
use crate::api::listener::TunedListener;
use crate::api::{AppState, SseConfig, metrics::Metrics, tokens::issue};
use crate::domain::{NewToken, QueueConfig, TokenRole, token_digest};
use crate::ports::{
    Ci, Confinement, Executor, FinishObserver, ProviderLookup, SecretResolver, StoreError, Stores,
    WorkspaceProvisioner, WorkspaceSeeder,
};
use crate::registry::Registry;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::services::project_setup::ProjectSetupService;
use crate::services::project_setup::poller::{self, PollerConfig};
use crate::services::webhooks::{Dispatcher, WebhookConfig};
use crate::worker::{Worker, WorkerConfig};

/// Where commands run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// Processes on this machine, one directory per project under the data dir.
    #[default]
    Local,
    /// Processes in one pod per project, reached through the Kubernetes API server; project
    /// creation provisions the pod and its volume.
    Kubernetes,
}

/// How `rdev serve` reaches the cluster and what it creates there, for the Kubernetes
/// executor.
#[derive(Debug, Clone)]
pub struct KubernetesServeConfig {
    /// `None`: in-cluster when running in a pod (`KUBERNETES_SERVICE_HOST` is set), else the
    /// default kubeconfig and its current context.
    pub credentials: Option<Credentials>,
    /// Namespace, labels and paths inside project pods.
    pub executor: KubernetesConfig,
    /// The operator's pod defaults; a template's `[workspace]` overrides image and resources.
    pub pod: PodTemplate,
    /// How long project creation waits for a new pod to become Ready.
    pub ready_timeout: Duration,
    /// How often readiness is checked meanwhile.
    pub ready_poll: Duration,
}

/// The image project pods get when neither the operator nor the template names one: Debian
/// with git, tar and util-linux, which seeding and the exec wrapper need.
pub const DEFAULT_WORKSPACE_IMAGE: &str = "buildpack-deps:bookworm-scm";

impl Default for KubernetesServeConfig {
    fn default() -> Self {
        Self {
            credentials: None,
            executor: KubernetesConfig::new("rdev"),
            pod: PodTemplate::new(DEFAULT_WORKSPACE_IMAGE),
            ready_timeout: Duration::from_secs(300),
            ready_poll: Duration::from_secs(1),
        }
    }
}

impl KubernetesServeConfig {
    /// The credentials in effect (see [`Self::credentials`]).
    pub fn credentials(&self) -> Credentials {
        self.credentials.clone().unwrap_or_else(|| {
            if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
                Credentials::InCluster
            } else {
                Credentials::Kubeconfig {
                    path: None,
                    context: None,
                }
            }
        })
    }
}

/// Everything `rdev serve` needs; [`ServeConfig::new`] gives the embedded defaults.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `host:port`; port 0 picks a free port (see [`Server::local_addr`]).
    pub listen: String,
    /// Database (SQLite default), master key, compile cache and project workspaces.
    pub data_dir: PathBuf,
    /// `None`: `target/plugins` when it exists (a source checkout), else `<data_dir>/plugins`.
    pub plugins_dir: Option<PathBuf>,
    /// `None`: SQLite at `<data_dir>/rdev.db`.
    pub database_url: Option<String>,
    pub executor: ExecutorKind,
    /// How the local executor confines commands (see docs/sandbox.md).
    pub confinement: ConfinementConfig,
    /// Used when `executor` is `Kubernetes`.
    pub kubernetes: KubernetesServeConfig,
    /// An admin token to accept (stored hashed). `None`: one is generated on first start.
    pub admin_token: Option<String>,
    pub queue: QueueConfig,
    pub sse: SseConfig,
    /// The worker; an empty id is replaced by `<pid>-<port>`.
    pub worker: WorkerConfig,
    /// Webhook delivery: SSRF policy, timeout, retries.
    pub webhooks: WebhookConfig,
    /// Woodpecker CI for projects created from templates; `None`: no CI.
    pub woodpecker: Option<WoodpeckerConfig>,
    /// How the background task watches triggered pipelines (only with CI configured).
    pub ci_poll: PollerConfig,
}

impl ServeConfig {
    /// The embedded defaults: `127.0.0.1:8080`, `./rdev-data`, SQLite, local executor.
    pub fn new() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("rdev-data"),
            plugins_dir: None,
            database_url: None,
            executor: ExecutorKind::Local,
            confinement: ConfinementConfig::default(),
            kubernetes: KubernetesServeConfig::default(),
            admin_token: None,
            queue: QueueConfig::default(),
            sse: SseConfig::default(),
            worker: WorkerConfig::new(""),
            webhooks: WebhookConfig::default(),
            woodpecker: None,
            ci_poll: PollerConfig::default(),
        }
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("rdev.db").display()))
    }

    /// The plugins directory in effect.
    pub fn plugins_dir(&self) -> PathBuf {
        if let Some(dir) = &self.plugins_dir {
            return dir.clone();
        }
        let bundled = PathBuf::from("target/plugins");
        if bundled.is_dir() {
            bundled
        } else {
            self.data_dir.join("plugins")
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    generated_admin_token: Option<String>,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the store, loads the plugins, makes sure an admin token exists and starts
    /// serving. Returns once the listener is bound.
    pub async fn start(config: ServeConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let master_key = load_master_key(&config.data_dir.join("master.key"))?;
        let url = config.database_url();
        let stores = connect(
            &url,
            StoreOptions {
                queue: config.queue.clone(),
                master_key,
            },
        )
        .await
        .context("opening the database")?;

        let secrets: Arc<dyn SecretResolver> = stores.credentials.clone();
        let workspaces = build_executor(&config, secrets.clone(), &stores).await?;
        let executor = workspaces.executor;
        let mut runtime_config = RuntimeConfig::new(executor, secrets.clone());
        runtime_config.cache_dir = Some(config.data_dir.join("cache"));
        let runtime = Runtime::new(runtime_config).context("starting the plugin runtime")?;
        let plugins_dir = config.plugins_dir();
        std::fs::create_dir_all(&plugins_dir)
            .with_context(|| format!("creating plugins dir {}", plugins_dir.display()))?;
        let registry = Registry::start(runtime, plugins_dir.clone(), Vec::new())
            .await
            .context("loading plugins")?;
        tracing::info!(
            plugins_dir = %plugins_dir.display(),
            providers = registry.statuses().len(),
            "plugins loaded"
        );

        let ci = config
            .woodpecker
            .clone()
            .map(|config| WoodpeckerClient::new(config, secrets.clone()))
            .transpose()
            .context("creating the Woodpecker client")?
            .map(|client| Arc::new(client) as Arc<dyn Ci>);
        let has_ci = ci.is_some();
        let setup = ProjectSetupService::new(
            &stores,
            workspaces.seeder,
            workspaces.provisioner,
            ci,
            Some(config.data_dir.join("templates")),
        );

        let shutdown = CancellationToken::new();
        let state = Arc::new(AppState {
            stores: stores.clone(),
            registry: registry.clone(),
            metrics: Metrics::default(),
            setup,
            sse: config.sse,
            webhooks: config.webhooks.clone(),
            shutdown: shutdown.clone(),
            confinement: workspaces.confinement,
        });
        let generated_admin_token = bootstrap_admin(&state, config.admin_token.as_deref()).await?;

        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let app = crate::api::router(state.clone());
        let mut tasks = Vec::new();
        let http_shutdown = shutdown.clone();
        let write_timeout = config.sse.write_timeout;
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(TunedListener::new(listener, write_timeout), app)
                .with_graceful_shutdown(http_shutdown.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "HTTP server failed");
            }
        }));
        let mut worker = config.worker.clone();
        if worker.id.is_empty() {
            worker.id = format!("{}-{}", std::process::id(), addr.port());
        }
        let dispatcher = Dispatcher::new(
            stores.webhooks.clone(),
            config.webhooks.clone(),
            format!("webhooks-{}", worker.id),
            state.metrics.webhook_deliveries.clone(),
        )
        .context("creating the webhook HTTP client")?;
        tasks.push(tokio::spawn(Arc::new(dispatcher).run(shutdown.clone())));
        tasks.push(tokio::spawn(crate::api::providers::audit_watched_reloads(
            state.clone(),
        )));
        tasks.extend(start_workers(
            &stores,
            &registry,
            &shutdown,
            worker,
            state.metrics.finish_observer(),
        ));
        if has_ci {
            tasks.push(tokio::spawn(poller::run(
                state.setup.clone(),
                config.ci_poll,
                shutdown.clone(),
            )));
        }
        tracing::info!(%addr, database = %redact_url(&url), "rdev listening");
        Ok(Self {
            addr,
            generated_admin_token,
            state,
            shutdown,
            tasks,
        })
    }

    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin token generated on this start, to be shown once; `None` when one already
    /// existed or was configured.
    pub fn generated_admin_token(&self) -> Option<&str> {
        self.generated_admin_token.as_deref()
    }

    /// The API's shared state (stores, registry, metrics), for tests and benchmarks.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// A token that, when cancelled, stops the server as [`Server::shutdown`] does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server stops (after the shutdown token is cancelled).
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Stops accepting requests, ends open streams, drains the workers and waits.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }
}

/// The executor and the matching ways to create and seed workspaces.
struct Workspaces {
    executor: Arc<dyn Executor>,
    seeder: Arc<dyn WorkspaceSeeder>,
    provisioner: Arc<dyn WorkspaceProvisioner>,
    confinement: Confinement,
}

/// Picks the executor; with Kubernetes, refuses to start unless the API server answers and
/// the credentials may list pods in the namespace.
async fn build_executor(
    config: &ServeConfig,
    secrets: Arc<dyn SecretResolver>,
    stores: &Stores,
) -> anyhow::Result<Workspaces> {
    match config.executor {
        ExecutorKind::Local => {
            let root = config.data_dir.join("projects");
            let layout = WorkspaceLayout::PerProject { root: root.clone() };
            let policies = Some(stores.network.clone());
            let (executor, confinement) = build_local_executor(
                layout,
                &config.data_dir,
                secrets,
                &config.confinement,
                policies,
            )?;
            Ok(Workspaces {
                executor: Arc::new(executor),
                seeder: Arc::new(LocalSeeder::new(root)),
                provisioner: Arc::new(LocalProvisioner),
                confinement,
            })
        }
        ExecutorKind::Kubernetes => {
            let settings = &config.kubernetes;
            let credentials = settings.credentials();
            let kube = KubernetesExecutor::connect(
                credentials.clone(),
                settings.executor.clone(),
                secrets,
            )
            .await
            .with_context(|| {
                format!(
                    "the kubernetes executor cannot reach a cluster with {} (choose one with \
                     --kubernetes-api-url, --kubernetes-in-cluster or --kubeconfig, or in the \
                     config file's [kubernetes] table)",
                    describe(&credentials)
                )
            })?;
            kube.check_access().await.with_context(|| {
                format!(
                    "the kubernetes executor cannot use namespace {} with {}",
                    settings.executor.namespace,
                    describe(&credentials)
                )
            })?;
            tracing::info!(
                namespace = %settings.executor.namespace,
                cluster = %describe(&credentials),
                "kubernetes executor ready"
            );
            let kube = Arc::new(kube);
            let provisioner = KubernetesProvisioner::new(
                kube.clone(),
                settings.pod.clone(),
                settings.ready_timeout,
            )
            .poll_every(settings.ready_poll);
            Ok(Workspaces {
                executor: kube.clone(),
                seeder: Arc::new(KubernetesSeeder::new(kube)),
                provisioner: Arc::new(provisioner),
                confinement: Confinement {
                    mode: "kubernetes".to_owned(),
                    enforced: vec!["one pod per project".to_owned()],
                    missing: Vec::new(),
                    default_allow: Vec::new(),
                },
            })
        }
    }
}

/// Where the credentials point, for start-up errors and logs (never a token).
fn describe(credentials: &Credentials) -> String {
    match credentials {
        Credentials::InCluster => "in-cluster credentials".to_owned(),
        Credentials::Kubeconfig { path, context } => format!(
            "kubeconfig {} (context {})",
            path.as_deref().map_or_else(
                || "from $KUBECONFIG or ~/.kube/config".to_owned(),
                |p| p.display().to_string()
            ),
            context.as_deref().unwrap_or("current")
        ),
        Credentials::Url(url) => format!("API server {}", redact_url(url)),
    }
}

/// The worker that claims and runs queued commands; it drains on shutdown.
fn start_workers(
    stores: &Stores,
    registry: &Registry,
    shutdown: &CancellationToken,
    config: WorkerConfig,
    observer: Arc<dyn FinishObserver>,
) -> Vec<JoinHandle<()>> {
    let providers: Arc<dyn ProviderLookup> = Arc::new(registry.clone());
    let worker = Worker::new(stores, providers, config).with_observer(observer);
    let shutdown = shutdown.clone();
    vec![tokio::spawn(async move {
        let report = worker.run(shutdown).await;
        tracing::info!(
            finished = report.finished,
            cancelled = report.cancelled,
            "worker drained"
        );
    })]
}

/// Accepts the configured admin token, or creates one when no admin token exists yet and
/// returns its secret so that it is printed exactly once.
async fn bootstrap_admin(
    state: &AppState,
    configured: Option<&str>,
) -> anyhow::Result<Option<String>> {
    let tokens = &state.stores.tokens;
    if let Some(secret) = configured {
        let digest = token_digest(secret);
        if tokens.find_active(&digest).await?.is_some() {
            return Ok(None);
        }
        let created = tokens
            .create(NewToken {
                id: crate::api::auth::generate_id(),
                name: "admin (RDEV_ADMIN_TOKEN)".into(),
                role: TokenRole::Admin,
                projects: Vec::new(),
                digest,
            })
            .await;
        return match created {
            Ok(_) => Ok(None),
            Err(StoreError::Conflict(_)) => {
                anyhow::bail!("the configured admin token was revoked; configure another one")
            }
            Err(other) => Err(other.into()),
        };
    }
    let has_admin = tokens
        .list()
        .await?
        .iter()
        .any(|t| t.role == TokenRole::Admin && t.revoked_at.is_none());
    if has_admin {
        return Ok(None);
    }
    let created = issue(
        state,
        "admin (generated)".into(),
        TokenRole::Admin,
        Vec::new(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating the admin token: {}", e.message))?;
    Ok(Some(created.token))
}

/// The URL without its password, for logs.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Writes `contents` to `path` atomically (write + rename), for the ready file.
pub fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_stay_out_of_logs() {
        assert_eq!(
            redact_url("postgres://me:s3cret@db:5432/rdev"),
            "postgres://me:***@db:5432/rdev"
        );
        assert_eq!(
            redact_url("sqlite://rdev-data/rdev.db"),
            "sqlite://rdev-data/rdev.db"
        );
    }

    #[test]
    fn defaults_put_everything_under_the_data_dir() {
        let config = ServeConfig::new();
        assert_eq!(config.database_url(), "sqlite://rdev-data/rdev.db");
        assert_eq!(config.listen, "127.0.0.1:8080");
    }
}
