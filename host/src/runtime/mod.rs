//! The plugin runtime: one sandboxed wasmtime engine, plugins loaded from a component and
//! its manifest, and each loaded plugin exposed as a [`CodeAgent`].
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use rdev::ports::{Executor, SecretResolver};
//! # async fn example(executor: Arc<dyn Executor>, secrets: Arc<dyn SecretResolver>)
//! #     -> anyhow::Result<()> {
//! use rdev::registry::Registry;
//! use rdev::runtime::{Runtime, RuntimeConfig};
//! use rdev::ports::ProviderLookup;
//!
//! let runtime = Runtime::new(RuntimeConfig::new(executor, secrets))?;
//! // Loads every `<name>.toml` + `<name>.wasm` and watches the directory for changes.
//! let registry = Registry::start(runtime, "target/plugins".into(), Vec::new()).await?;
//! for status in registry.statuses() {
//!     println!("{} {} {:?}", status.name, status.version.unwrap_or_default(), status.state);
//! }
//! let agent = registry.lookup(None)?; // the default provider
//! // agent.execute(Execution { .. }).await streams events and returns the result.
//! # Ok(()) }
//! ```
//!
//! [`CodeAgent`]: crate::ports::CodeAgent

pub mod abi;
mod agent;
mod check;
mod engine;
pub mod host;
mod limiter;
mod load;
pub mod manifest;
pub mod service;
mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::ports::{Executor, Interaction, NobodyToAsk, SecretResolver};

pub use agent::WasmAgent;
pub use engine::CompileSource;
pub use manifest::{AbiVersion, Grants, Limits, Manifest, ManifestError};

use engine::{CompileCache, EngineSettings};

/// How the runtime is set up. [`RuntimeConfig::new`] gives production defaults.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Where plugin processes run and project-http connects.
    pub executor: Arc<dyn Executor>,
    /// Resolves credentials for project-http auth headers.
    pub secrets: Arc<dyn SecretResolver>,
    /// Decides providers' permission requests and delivers follow-up input (ABI 0.2's
    /// `interaction`); [`NobodyToAsk`] (deny everything, no input) until the host's approval
    /// service is plugged in.
    pub interaction: Arc<dyn Interaction>,
    /// Compiled components are cached here; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Time a cancelled (or timed-out) execution gets to clean up before it is killed.
    pub cancel_grace: Duration,
    /// Concurrent instances the pooling allocator reserves slots for.
    pub max_instances: u32,
    /// Hard ceiling on any plugin's memory; a manifest asking for more is refused.
    pub max_memory_mib: u64,
    /// Epoch tick: the precision of deadlines and how often a busy guest yields.
    pub epoch_tick: Duration,
}

impl RuntimeConfig {
    /// Defaults: 10 s grace, 64 instances, 1 GiB memory ceiling, 10 ms ticks, no cache,
    /// nobody to ask (every permission request denied).
    pub fn new(executor: Arc<dyn Executor>, secrets: Arc<dyn SecretResolver>) -> Self {
        Self {
            executor,
            secrets,
            interaction: Arc::new(NobodyToAsk),
            cache_dir: None,
            cancel_grace: Duration::from_secs(10),
            max_instances: 64,
            max_memory_mib: 1024,
            epoch_tick: Duration::from_millis(10),
        }
    }
}

/// The runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("configuring the WebAssembly engine failed: {0}")]
    Engine(String),
}

/// A plugin could not be loaded; the message names the file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{}: cannot read the component: {source}", path.display())]
    ReadComponent {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

impl LoadError {
    fn invalid(path: &Path, reason: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    /// The file the error is about (its full path on this machine).
    pub fn path(&self) -> &Path {
        match self {
            Self::Manifest(e) => e.path(),
            Self::ReadComponent { path, .. } | Self::Invalid { path, .. } => path,
        }
    }

    /// The error naming the file by its name only (`echo.wasm: …`): what a caller who must
    /// not learn the server's directories is shown.
    pub fn without_path(&self) -> String {
        let reason = match self {
            Self::Manifest(e) => e.reason(),
            Self::ReadComponent { source, .. } => format!("cannot read the component: {source}"),
            Self::Invalid { reason, .. } => reason.clone(),
        };
        let file = self
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{file}: {reason}")
    }
}

/// How a load went, for listings and benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct LoadInfo {
    pub compile: CompileSource,
    pub elapsed: Duration,
}

pub(crate) struct RuntimeInner {
    engine: wasmtime::Engine,
    linkers: abi::Linkers,
    checker: check::Checker,
    cache: Option<CompileCache>,
    config: RuntimeConfig,
    /// The per-project services plugins declare; shared by every execution.
    services: Arc<service::Services>,
}

/// The sandbox host. Cheap to clone; every clone shares one engine.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let engine = engine::build(&EngineSettings {
            max_instances: config.max_instances,
            max_memory_bytes: config.max_memory_mib * 1024 * 1024,
            epoch_tick: config.epoch_tick,
        })?;
        let linkers = abi::Linkers::new(&engine)
            .map_err(|e| RuntimeError::Engine(format!("linking host imports: {e:#}")))?;
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                cache: config.cache_dir.clone().map(CompileCache::new),
                engine,
                linkers,
                checker: check::Checker::default(),
                services: Arc::new(service::Services::new(config.executor.clone())),
                config,
            }),
        })
    }

    /// The runtime's settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// The services the runtime keeps running for its plugins' projects.
    pub fn services(&self) -> &Arc<service::Services> {
        &self.inner.services
    }

    /// Loads the plugin described by `manifest_path` (`<dir>/<name>.toml`) and its
    /// component `<dir>/<name>.wasm`: validates the manifest, checks the component's imports
    /// and exports against the host (before compiling), compiles (or takes the cached
    /// artifact), links against the declared ABI and probes `capabilities()`.
    pub async fn load(&self, manifest_path: &Path) -> Result<Arc<WasmAgent>, LoadError> {
        load::load(&self.inner, manifest_path).await
    }
}

/// Identifies the exact bytes of a plugin (manifest + component), so a reload can tell
/// whether anything changed.
pub fn fingerprint(manifest: &[u8], component: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update((manifest.len() as u64).to_le_bytes());
    hasher.update(manifest);
    hasher.update(component);
    hex::encode(hasher.finalize())
}
