//! `rdev serve`'s server: the HTTP API, the worker, the webhook dispatcher and the CI poller
//! over the parts [`crate::wiring`] builds, stopped in order. Tests start the same
//! [`Server`] in-process on an ephemeral port.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::adapters::oci::OciClient;
use crate::adapters::woodpecker::WoodpeckerClient;
use crate::api::listener::serve as serve_http;
use crate::api::{AppState, metrics::Metrics, tokens::issue};
use crate::domain::{NewToken, TokenRole, token_digest};
use crate::ports::{Ci, StoreError};
use crate::services::audit_checkpoints::CheckpointExporter;
use crate::services::master_key::KeyRotation;
use crate::services::plugins::PluginInstaller;
use crate::services::project_setup::ProjectSetupService;
use crate::services::project_setup::poller;
use crate::services::webhooks::Dispatcher;
use crate::wiring::{Runner, key_keeper, redact_url, spawn_worker};

pub use crate::wiring::{
    Config as ServeConfig, DEFAULT_WORKSPACE_IMAGE, ExecutorKind, KubernetesServeConfig,
};

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
        let shutdown = CancellationToken::new();
        let state = build_state(&config, shutdown.clone()).await?;
        let generated_admin_token = bootstrap_admin(&state, config.admin_token.as_deref()).await?;

        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let app = crate::api::router(state.clone());
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(serve_http(
            listener,
            app,
            config.connections,
            config.sse.write_timeout,
            shutdown.clone(),
        )));
        tasks.extend(background_tasks(&config, &state, addr)?);
        let database = redact_url(&config.database_url());
        tracing::info!(%addr, %database, "rdev listening");
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

/// The API's state over the parts the composition root builds: stores, registry, project
/// setup with the configured executor's workspaces and, when configured, Woodpecker CI.
async fn build_state(
    config: &ServeConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<AppState>> {
    let Runner {
        stores,
        registry,
        workspaces,
    } = crate::wiring::runner::start(config).await?;
    let ci = config
        .woodpecker
        .clone()
        .map(|woodpecker| WoodpeckerClient::new(woodpecker, stores.credentials.clone()))
        .transpose()
        .context("creating the Woodpecker client")?
        .map(|client| Arc::new(client) as Arc<dyn Ci>);
    let setup = ProjectSetupService::new(
        &stores,
        workspaces.seeder,
        workspaces.provisioner,
        ci,
        Some(config.data_dir.join("templates")),
    );
    let artifacts = OciClient::new(false).context("creating the OCI registry client")?;
    let plugins = PluginInstaller::new(Arc::new(artifacts), config.plugins_dir());
    let master_key = KeyRotation::new(stores.credentials.clone(), key_keeper(config));
    Ok(Arc::new(AppState {
        master_key,
        plugins,
        stores,
        registry,
        metrics: Metrics::default(),
        setup,
        sse: config.sse,
        ui: config.ui,
        webhooks: config.webhooks.clone(),
        shutdown,
        confinement: workspaces.confinement,
    }))
}

/// The worker, the webhook dispatcher, the audit of watched reloads and (with CI) the
/// pipeline poller; each stops on the state's shutdown token.
fn background_tasks(
    config: &ServeConfig,
    state: &Arc<AppState>,
    addr: SocketAddr,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let shutdown = &state.shutdown;
    let mut worker = config.worker.clone();
    if worker.id.is_empty() {
        worker.id = format!("{}-{}", std::process::id(), addr.port());
    }
    let dispatcher = Dispatcher::new(
        state.stores.webhooks.clone(),
        config.webhooks.clone(),
        format!("webhooks-{}", worker.id),
        state.metrics.webhook_deliveries.clone(),
    )
    .context("creating the webhook HTTP client")?;
    let drained = spawn_worker(
        &state.stores,
        &state.registry,
        worker,
        Some(state.metrics.finish_observer()),
        shutdown.clone(),
    );
    let mut tasks = vec![
        tokio::spawn(Arc::new(dispatcher).run(shutdown.clone())),
        tokio::spawn(crate::api::providers::audit_watched_reloads(state.clone())),
        tokio::spawn({
            let services = state.registry.services().clone();
            async move {
                let _ = drained.await;
                // No command runs any more: the services kept warm for them go too.
                services.stop_all().await;
            }
        }),
        tokio::spawn(
            CheckpointExporter {
                audit: state.stores.audit.clone(),
                projects: state.stores.projects.clone(),
                webhooks: state.stores.webhooks.clone(),
            }
            .run(config.audit_checkpoint_interval, shutdown.clone()),
        ),
    ];
    if config.woodpecker.is_some() {
        tasks.push(tokio::spawn(poller::run(
            state.setup.clone(),
            config.ci_poll,
            shutdown.clone(),
        )));
    }
    Ok(tasks)
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

/// Writes `contents` to `path` atomically (write + rename), for the ready file.
pub fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(tmp, path)
}
