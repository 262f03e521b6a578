//! The provider registry: which plugin version serves each provider name right now.
//!
//! Lookups are lock-free reads of an immutable snapshot (`ArcSwap`), so they never wait
//! for a load. One task owns the snapshot and decides what to load, triggered by a debounced
//! watch of the plugins directory or an explicit [`Registry::reload`]; the loads themselves
//! (compiling can take a minute for a large component) run beside it, a bounded number at a
//! time, so one slow component never delays another plugin's reload. A changed plugin is
//! swapped in atomically for new executions as soon as its own load ends, while running
//! executions keep the `Arc` of the version they started with. A plugin that fails to load
//! keeps its previous version serving and shows the error in [`Registry::statuses`].

mod loader;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use notify::Watcher;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::domain::{AgentProvider, Capabilities, ProviderName};
use crate::ports::{CodeAgent, LookupError, ProviderLookup};
use crate::runtime::service::Services;
use crate::runtime::{Runtime, WasmAgent};

use loader::{Command, Loader};

/// Loads that may compile at once by default: one large component keeps one slot busy and
/// the others serve every other plugin's reload.
pub const DEFAULT_LOAD_PARALLELISM: usize = 2;

/// How a registry is set up beyond its directory; `Default` registers every plugin.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Providers to register first, in that order (the first serving one is the default);
    /// the rest follow by name.
    pub order: Vec<ProviderName>,
    /// Loads that may run (compile) at once.
    pub parallelism: usize,
    /// When set, only these plugins are loaded and the rest of the directory is ignored:
    /// `rdev exec` compiles just the provider it runs.
    pub only: Option<Vec<ProviderName>>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            order: Vec::new(),
            parallelism: DEFAULT_LOAD_PARALLELISM,
            only: None,
        }
    }
}

/// Whether a provider is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderState {
    /// Its newest files are loaded and serving.
    Serving,
    /// An earlier version serves; the newest files failed to load (see `last_error`).
    Stale,
    /// Nothing serves: the plugin never loaded successfully.
    Failed,
    /// Nothing serves yet: its first load is in progress (see `loading_since`).
    Loading,
}

/// One provider as listed to operators (`rdev providers`, `GET /providers`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProviderStatus {
    pub name: String,
    /// Version, ABI and capabilities of the serving version, when one serves.
    pub version: Option<String>,
    pub abi: Option<String>,
    pub description: Option<String>,
    pub capabilities: Option<Capabilities>,
    /// What the serving version's manifest lets it do outside its sandbox, so an operator
    /// sees a plugin's reach before running it.
    pub grants: Option<ProviderGrants>,
    pub state: ProviderState,
    /// Why the newest files did not load. Names the server's plugin files by their full
    /// path; see [`ProviderStatus::without_paths`] for callers who must not see them.
    pub last_error: Option<String>,
    /// The provider used when a request names none.
    pub default: bool,
    /// Since when newer files of this plugin are being loaded (compiled); absent when no
    /// load is in progress. The version above keeps serving meanwhile.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub loading_since: Option<DateTime<Utc>>,
    #[serde(skip)]
    #[schema(ignore)]
    error_without_path: Option<String>,
}

/// A provider's `[grants]` as listed: everything it may reach outside its sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ProviderGrants {
    /// Programs it may spawn (argv[0], matched exactly).
    pub exec: Vec<String>,
    /// Workspace ports it may reach with project-http (its service's port included).
    pub project_http_ports: Vec<u16>,
    /// Credentials it may name as secret references.
    pub credentials: Vec<String>,
    /// Whether it is handed the project's MCP servers.
    pub mcp_servers: bool,
    /// The program of the per-project service the host runs for it, if any.
    pub service: Option<String>,
}

impl ProviderGrants {
    fn of(agent: &WasmAgent) -> Self {
        let manifest = agent.manifest();
        let grants = &manifest.grants;
        let mut ports: Vec<u16> = grants.ports().collect();
        if let Some(service) = &manifest.service
            && !ports.contains(&service.port)
        {
            ports.push(service.port);
        }
        Self {
            exec: grants.exec().map(str::to_owned).collect(),
            project_http_ports: ports,
            credentials: grants.credentials().map(str::to_owned).collect(),
            mcp_servers: grants.mcp_servers(),
            service: manifest.service.as_ref().map(|s| s.program.clone()),
        }
    }
}

impl ProviderStatus {
    /// The status with load errors naming files only by name (`echo.wasm: …`), for callers
    /// who are not operators of this server.
    pub fn without_paths(mut self) -> Self {
        self.last_error = self.error_without_path.take();
        self
    }
}

/// What one reload pass did. A watcher-triggered pass is also announced on
/// [`Registry::subscribe`], so it can be audited like an explicit one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub loaded: Vec<String>,
    /// Name and reason of each plugin whose files failed to load.
    pub failed: Vec<(String, String)>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("plugins directory {}: {reason}", path.display())]
    Directory { path: PathBuf, reason: String },
    #[error("watching {}: {reason}", path.display())]
    Watch { path: PathBuf, reason: String },
    #[error("the registry's loader task has stopped")]
    Stopped,
}

/// Why a plugin's newest files did not load, with and without the server's paths.
#[derive(Clone)]
struct LoadFailure {
    message: String,
    without_path: String,
}

/// A load in progress for one plugin.
#[derive(Clone)]
struct Loading {
    /// Fingerprint of the files being loaded.
    print: String,
    since: DateTime<Utc>,
}

#[derive(Clone)]
struct Slot {
    name: String,
    serving: Option<Arc<WasmAgent>>,
    last_error: Option<LoadFailure>,
    /// Fingerprint of the files last tried, so an unchanged broken file is not retried.
    attempted: Option<String>,
    loading: Option<Loading>,
}

#[derive(Default)]
struct Snapshot {
    /// In registration order: configured order first, then by name.
    slots: Vec<Slot>,
}

struct Handle {
    snapshot: Arc<ArcSwap<Snapshot>>,
    commands: mpsc::UnboundedSender<Command>,
    watched: broadcast::Sender<ReloadReport>,
    _watcher: notify::RecommendedWatcher,
    services: Arc<Services>,
}

/// Thread-safe and cheap to clone. Dropping the last clone stops the watcher and the
/// loader task.
#[derive(Clone)]
pub struct Registry {
    handle: Arc<Handle>,
}

impl Registry {
    /// Loads every plugin in `plugins_dir` and starts watching it. `order` names providers
    /// to register first, in that order (the first serving one is the default); the rest
    /// follow by name. Plugins that fail to load are listed with their error.
    pub async fn start(
        runtime: Runtime,
        plugins_dir: PathBuf,
        order: Vec<ProviderName>,
    ) -> Result<Self, RegistryError> {
        let options = RegistryOptions {
            order,
            ..RegistryOptions::default()
        };
        Self::start_with(runtime, plugins_dir, options).await
    }

    /// [`Registry::start`] with every option (parallelism, a subset of plugins).
    pub async fn start_with(
        runtime: Runtime,
        plugins_dir: PathBuf,
        options: RegistryOptions,
    ) -> Result<Self, RegistryError> {
        if !plugins_dir.is_dir() {
            return Err(RegistryError::Directory {
                path: plugins_dir,
                reason: "is not a directory".into(),
            });
        }
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let (tx, rx) = mpsc::unbounded_channel();
        let watch_tx = tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = match &event {
                    Ok(event) => {
                        changes_files(&event.kind) && event.paths.iter().any(|p| is_plugin_file(p))
                    }
                    // A dropped or failed event: rescan rather than miss a change.
                    Err(_) => true,
                };
                if relevant {
                    let _ = watch_tx.send(Command::FilesChanged);
                }
            })
            .map_err(|e| RegistryError::Watch {
                path: plugins_dir.clone(),
                reason: e.to_string(),
            })?;
        watcher
            .watch(&plugins_dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| RegistryError::Watch {
                path: plugins_dir.clone(),
                reason: e.to_string(),
            })?;
        let (watched, _) = broadcast::channel(16);
        let services = runtime.services().clone();
        let loader = Loader::new(
            runtime,
            plugins_dir,
            options,
            snapshot.clone(),
            tx.downgrade(),
            watched.clone(),
        );
        tokio::spawn(loader.run(rx));
        let registry = Self {
            handle: Arc::new(Handle {
                snapshot,
                commands: tx,
                watched,
                _watcher: watcher,
                services,
            }),
        };
        registry.reload().await?;
        Ok(registry)
    }

    /// Reports of reloads the directory watcher triggered (explicit reloads are reported to
    /// their caller instead), for the audit trail.
    pub fn subscribe(&self) -> broadcast::Receiver<ReloadReport> {
        self.handle.watched.subscribe()
    }

    /// Rescans the plugins directory now and waits until every plugin whose files changed
    /// has loaded or failed. Loads of other plugins already in progress are not restarted.
    pub async fn reload(&self) -> Result<ReloadReport, RegistryError> {
        let (reply, answer) = oneshot::channel();
        self.handle
            .commands
            .send(Command::Reload(reply))
            .map_err(|_| RegistryError::Stopped)?;
        answer.await.map_err(|_| RegistryError::Stopped)
    }

    /// The per-project services the plugins' runtime keeps running (stopped for a deleted
    /// project and at shutdown).
    pub fn services(&self) -> &Arc<Services> {
        &self.handle.services
    }

    /// Every registered provider, serving or not, in registration order.
    pub fn statuses(&self) -> Vec<ProviderStatus> {
        let snapshot = self.handle.snapshot.load();
        let default = snapshot.slots.iter().position(|s| s.serving.is_some());
        snapshot
            .slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let provider = slot.serving.as_ref().map(|a| a.provider());
                ProviderStatus {
                    name: slot.name.clone(),
                    version: provider.map(|p| p.version.clone()),
                    abi: provider.map(|p| p.abi_version.clone()),
                    description: provider.map(|p| p.description.clone()),
                    capabilities: provider.map(|p| p.capabilities),
                    grants: slot.serving.as_deref().map(ProviderGrants::of),
                    state: match (&slot.serving, &slot.last_error, &slot.loading) {
                        (Some(_), None, _) => ProviderState::Serving,
                        (Some(_), Some(_), _) => ProviderState::Stale,
                        (None, _, Some(_)) => ProviderState::Loading,
                        (None, _, None) => ProviderState::Failed,
                    },
                    last_error: slot.last_error.as_ref().map(|e| e.message.clone()),
                    default: Some(i) == default,
                    loading_since: slot.loading.as_ref().map(|l| l.since),
                    error_without_path: slot.last_error.as_ref().map(|e| e.without_path.clone()),
                }
            })
            .collect()
    }

    /// The serving version of `name` as the runtime's concrete type (for benchmarks and
    /// the CLI's diagnostics).
    pub fn agent(&self, name: &str) -> Option<Arc<WasmAgent>> {
        self.handle
            .snapshot
            .load()
            .slots
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.serving.clone())
    }
}

impl ProviderLookup for Registry {
    fn lookup(&self, name: Option<&ProviderName>) -> Result<Arc<dyn CodeAgent>, LookupError> {
        let snapshot = self.handle.snapshot.load();
        match name {
            None => snapshot
                .slots
                .iter()
                .find_map(|s| s.serving.clone())
                .map(|a| a as Arc<dyn CodeAgent>)
                .ok_or(LookupError::NoProviders),
            Some(name) => {
                let slot = snapshot
                    .slots
                    .iter()
                    .find(|s| s.name == name.as_str())
                    .ok_or_else(|| LookupError::Unknown(name.to_string()))?;
                match &slot.serving {
                    Some(agent) => Ok(agent.clone() as Arc<dyn CodeAgent>),
                    None => Err(LookupError::NotServing {
                        name: slot.name.clone(),
                        reason: match (&slot.last_error, &slot.loading) {
                            (Some(e), _) => e.without_path.clone(),
                            (None, Some(l)) => format!("loading since {}", l.since.to_rfc3339()),
                            (None, None) => String::new(),
                        },
                    }),
                }
            }
        }
    }

    fn providers(&self) -> Vec<AgentProvider> {
        self.handle
            .snapshot
            .load()
            .slots
            .iter()
            .filter_map(|s| s.serving.as_ref().map(|a| a.provider().clone()))
            .collect()
    }
}

/// False for events that only read a file. The inotify backend reports every open, and
/// each rescan opens the plugin files: counting opens as changes made the registry rescan
/// every debounce period forever.
fn changes_files(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

pub(crate) fn is_plugin_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("toml" | "wasm")
    )
}

#[cfg(test)]
mod tests {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};

    use super::changes_files;

    #[test]
    fn reading_a_plugin_is_not_a_change_but_writing_or_renaming_is() {
        assert!(!changes_files(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes_files(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(changes_files(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes_files(&EventKind::Create(CreateKind::File)));
        assert!(changes_files(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
    }
}
