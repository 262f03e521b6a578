//! The provider registry: which plugin version serves each provider name right now.
//!
//! Lookups are lock-free reads of an immutable snapshot (`ArcSwap`), so they never wait
//! for a load. Every load and unload runs on one task, in order, triggered by a debounced
//! watch of the plugins directory or an explicit [`Registry::reload`]; loads therefore
//! never race. A changed plugin is swapped in atomically for new executions, while running
//! executions keep the `Arc` of the version they started with. A plugin that fails to load
//! keeps its previous version serving and shows the error in [`Registry::statuses`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::Watcher;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::domain::{AgentProvider, Capabilities, ProviderName};
use crate::ports::{CodeAgent, LookupError, ProviderLookup};
use crate::runtime::{Runtime, WasmAgent, fingerprint};

/// Quiet time after the last file event before a reload: installing a plugin writes two
/// files, and editors write in several steps.
const DEBOUNCE: Duration = Duration::from_millis(50);

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
    pub state: ProviderState,
    /// Why the newest files did not load.
    pub last_error: Option<String>,
    /// The provider used when a request names none.
    pub default: bool,
}

/// What one reload pass did.
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

#[derive(Clone)]
struct Slot {
    name: String,
    serving: Option<Arc<WasmAgent>>,
    last_error: Option<String>,
    /// Fingerprint of the files last tried, so an unchanged broken file is not retried.
    attempted: Option<String>,
}

#[derive(Default)]
struct Snapshot {
    /// In registration order: configured order first, then by name.
    slots: Vec<Slot>,
}

enum Command {
    FilesChanged,
    Reload(oneshot::Sender<ReloadReport>),
}

struct Handle {
    snapshot: Arc<ArcSwap<Snapshot>>,
    commands: mpsc::UnboundedSender<Command>,
    _watcher: notify::RecommendedWatcher,
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
        let loader = Loader {
            runtime,
            dir: plugins_dir,
            order,
            snapshot: snapshot.clone(),
        };
        tokio::spawn(loader.run(rx));
        let registry = Self {
            handle: Arc::new(Handle {
                snapshot,
                commands: tx,
                _watcher: watcher,
            }),
        };
        registry.reload().await?;
        Ok(registry)
    }

    /// Rescans the plugins directory now and waits for the result. Queued behind any load
    /// in progress, never concurrent with one.
    pub async fn reload(&self) -> Result<ReloadReport, RegistryError> {
        let (reply, answer) = oneshot::channel();
        self.handle
            .commands
            .send(Command::Reload(reply))
            .map_err(|_| RegistryError::Stopped)?;
        answer.await.map_err(|_| RegistryError::Stopped)
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
                    state: match (&slot.serving, &slot.last_error) {
                        (Some(_), None) => ProviderState::Serving,
                        (Some(_), Some(_)) => ProviderState::Stale,
                        (None, _) => ProviderState::Failed,
                    },
                    last_error: slot.last_error.clone(),
                    default: Some(i) == default,
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
                        reason: slot.last_error.clone().unwrap_or_default(),
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

fn is_plugin_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("toml" | "wasm")
    )
}

/// The single task that owns every load and unload.
struct Loader {
    runtime: Runtime,
    dir: PathBuf,
    order: Vec<ProviderName>,
    snapshot: Arc<ArcSwap<Snapshot>>,
}

impl Loader {
    async fn run(self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut due: Option<Instant> = None;
        loop {
            let debounce = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    None => break,
                    Some(Command::FilesChanged) => due = Some(Instant::now() + DEBOUNCE),
                    Some(Command::Reload(reply)) => {
                        let report = self.scan().await;
                        let _ = reply.send(report);
                    }
                },
                () = debounce => {
                    due = None;
                    let report = self.scan().await;
                    for (name, reason) in &report.failed {
                        tracing::warn!(provider = %name, %reason, "plugin failed to load; the previous version keeps serving");
                    }
                    if !report.loaded.is_empty() || !report.removed.is_empty() {
                        tracing::info!(loaded = ?report.loaded, removed = ?report.removed, "plugins reloaded");
                    }
                }
            }
        }
    }

    /// Names of the plugins on disk, in registration order.
    fn names_on_disk(&self) -> Vec<String> {
        let mut found = BTreeSet::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().and_then(|e| e.to_str()) == Some("toml")
                    && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
                {
                    found.insert(stem.to_owned());
                }
            }
        }
        let mut names: Vec<String> = self
            .order
            .iter()
            .map(|n| n.as_str().to_owned())
            .filter(|n| found.contains(n))
            .collect();
        let rest: Vec<String> = found.into_iter().filter(|n| !names.contains(n)).collect();
        names.extend(rest);
        names
    }

    async fn scan(&self) -> ReloadReport {
        let current = self.snapshot.load_full();
        let mut report = ReloadReport::default();
        let names = self.names_on_disk();
        let mut slots = Vec::with_capacity(names.len());
        for name in &names {
            let manifest_path = self.dir.join(format!("{name}.toml"));
            let previous = current.slots.iter().find(|s| &s.name == name);
            let on_disk = std::fs::read(&manifest_path)
                .ok()
                .zip(std::fs::read(manifest_path.with_extension("wasm")).ok());
            let print = on_disk.map(|(m, w)| fingerprint(&m, &w));
            if let Some(previous) = previous
                && print.is_some()
                && previous.attempted == print
            {
                report.unchanged.push(name.clone());
                slots.push(previous.clone());
                continue;
            }
            match self.runtime.load(&manifest_path).await {
                Ok(agent) => {
                    report.loaded.push(name.clone());
                    slots.push(Slot {
                        name: name.clone(),
                        attempted: Some(agent.fingerprint().to_owned()),
                        serving: Some(agent),
                        last_error: None,
                    });
                }
                Err(e) => {
                    let reason = e.to_string();
                    report.failed.push((name.clone(), reason.clone()));
                    slots.push(Slot {
                        name: name.clone(),
                        serving: previous.and_then(|p| p.serving.clone()),
                        last_error: Some(reason),
                        attempted: print,
                    });
                }
            }
        }
        report.removed = current
            .slots
            .iter()
            .filter(|s| !names.contains(&s.name))
            .map(|s| s.name.clone())
            .collect();
        self.snapshot.store(Arc::new(Snapshot { slots }));
        report
    }
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
