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
mod engine;
pub mod host;
pub mod manifest;
mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::domain::AgentProvider;
use crate::ports::{Executor, Interaction, NobodyToAsk, SecretResolver};

pub use agent::WasmAgent;
pub use engine::CompileSource;
pub use manifest::{AbiVersion, Grants, Limits, Manifest, ManifestError};

use engine::{CompileCache, EngineSettings};
use state::{ExecCtx, new_store};

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
    cache: Option<CompileCache>,
    config: RuntimeConfig,
}

/// The sandbox host. Cheap to clone; every clone shares one engine.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

/// Time a load-time `capabilities()` probe may take before the plugin is refused.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

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
                config,
            }),
        })
    }

    /// The runtime's settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Loads the plugin described by `manifest_path` (`<dir>/<name>.toml`) and its
    /// component `<dir>/<name>.wasm`: validates the manifest, compiles (or takes the cached
    /// artifact), links against the declared ABI and probes `capabilities()`.
    pub async fn load(&self, manifest_path: &Path) -> Result<Arc<WasmAgent>, LoadError> {
        let started = Instant::now();
        let manifest_text = std::fs::read(manifest_path).map_err(|source| ManifestError::Read {
            path: manifest_path.to_owned(),
            source,
        })?;
        let manifest = Manifest::parse(manifest_path, &String::from_utf8_lossy(&manifest_text))?;
        let stem = manifest_path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("");
        if stem != manifest.name.as_str() {
            return Err(ManifestError::Invalid {
                path: manifest_path.to_owned(),
                field: "name",
                reason: format!(
                    "{:?} does not match the file name {stem:?}",
                    manifest.name.as_str()
                ),
            }
            .into());
        }
        let max_memory = self.inner.config.max_memory_mib * 1024 * 1024;
        if manifest.limits.memory_bytes > max_memory {
            return Err(LoadError::invalid(
                manifest_path,
                format!(
                    "limits.memory_mib exceeds this host's ceiling of {} MiB",
                    self.inner.config.max_memory_mib
                ),
            ));
        }
        let wasm_path = manifest_path.with_extension("wasm");
        let bytes = std::fs::read(&wasm_path).map_err(|source| LoadError::ReadComponent {
            path: wasm_path.clone(),
            source,
        })?;
        let fingerprint = fingerprint(&manifest_text, &bytes);

        let inner = self.inner.clone();
        let path = wasm_path.clone();
        let (component, compile) = tokio::task::spawn_blocking(move || match &inner.cache {
            Some(cache) => cache.compile(&inner.engine, &path, &bytes),
            None => {
                engine::compile(&inner.engine, &path, &bytes).map(|c| (c, CompileSource::Compiled))
            }
        })
        .await
        .map_err(|e| LoadError::invalid(&wasm_path, format!("compilation did not finish: {e}")))?
        .map_err(|reason| LoadError::invalid(&wasm_path, reason))?;

        let pre = self
            .inner
            .linkers
            .link(manifest.abi, &component)
            .map_err(|reason| LoadError::invalid(&wasm_path, reason))?;

        let manifest = Arc::new(manifest);
        let exec = Arc::new(ExecCtx::new(
            manifest.clone(),
            None,
            self.inner.config.executor.clone(),
            self.inner.config.secrets.clone(),
            None,
        ));
        if let Ok(mut deadline) = exec.hard_deadline.lock() {
            *deadline = Some(Instant::now() + PROBE_TIMEOUT);
        }
        let mut store = new_store(&self.inner.engine, exec);
        let caps = tokio::time::timeout(PROBE_TIMEOUT, pre.capabilities(&mut store))
            .await
            .map_err(|_| LoadError::invalid(&wasm_path, "capabilities() did not return in time"))?
            .map_err(|e| LoadError::invalid(&wasm_path, format!("capabilities() failed: {e:#}")))?;
        drop(store);

        let description = if manifest.description.is_empty() {
            caps.description
        } else {
            manifest.description.clone()
        };
        let provider = AgentProvider {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            abi_version: manifest.abi.to_string(),
            description,
            capabilities: caps.capabilities,
        };
        Ok(Arc::new(WasmAgent::new(
            self.inner.clone(),
            provider,
            manifest,
            pre,
            fingerprint,
            LoadInfo {
                compile,
                elapsed: started.elapsed(),
            },
        )))
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
