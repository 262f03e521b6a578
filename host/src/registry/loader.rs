//! The task that owns the registry's snapshot: it scans the plugins directory, starts a
//! load for each plugin whose files changed, and swaps each result in as it arrives. Loads
//! run as their own tasks, at most `parallelism` at a time, so a component that compiles for
//! a minute holds one slot and never the scan, nor another plugin's swap.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::Utc;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio::time::Instant;

use super::{LoadFailure, Loading, RegistryOptions, ReloadReport, Slot, Snapshot};
use crate::runtime::{LoadError, Manifest, Runtime, WasmAgent, fingerprint};

/// Quiet time after the last file event before a reload: installing a plugin writes two
/// files, and editors write in several steps.
const DEBOUNCE: Duration = Duration::from_millis(50);

pub(super) enum Command {
    FilesChanged,
    Reload(oneshot::Sender<ReloadReport>),
    /// A load task finished; `print` is the fingerprint the scan saw when it started it.
    Loaded {
        name: String,
        print: String,
        result: Result<Arc<WasmAgent>, LoadError>,
    },
}

/// Who is told when a scan's loads have all ended.
enum Waiter {
    Caller(oneshot::Sender<ReloadReport>),
    /// A watcher-triggered scan: logged and announced to subscribers (the audit trail).
    Watcher,
}

/// One scan whose loads are still running.
struct Pass {
    report: ReloadReport,
    waiting: BTreeSet<String>,
    waiter: Waiter,
}

pub(super) struct Loader {
    runtime: Runtime,
    dir: PathBuf,
    options: RegistryOptions,
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// Weak, so the loader and its load tasks stop when the last `Registry` is dropped.
    commands: mpsc::WeakUnboundedSender<Command>,
    permits: Arc<Semaphore>,
    watched: broadcast::Sender<ReloadReport>,
    passes: Vec<Pass>,
}

impl Loader {
    pub fn new(
        runtime: Runtime,
        dir: PathBuf,
        options: RegistryOptions,
        snapshot: Arc<ArcSwap<Snapshot>>,
        commands: mpsc::WeakUnboundedSender<Command>,
        watched: broadcast::Sender<ReloadReport>,
    ) -> Self {
        Self {
            runtime,
            dir,
            permits: Arc::new(Semaphore::new(options.parallelism.max(1))),
            options,
            snapshot,
            commands,
            watched,
            passes: Vec::new(),
        }
    }

    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
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
                    Some(Command::Reload(reply)) => self.scan(Waiter::Caller(reply)),
                    Some(Command::Loaded { name, print, result }) => {
                        self.loaded(&name, &print, result);
                    }
                },
                () = debounce => {
                    due = None;
                    self.scan(Waiter::Watcher);
                }
            }
        }
    }

    /// Names of the plugins on disk (those in `options.only`, when set), in registration
    /// order.
    fn names_on_disk(&self) -> Vec<String> {
        let mut found = BTreeSet::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().and_then(|e| e.to_str()) == Some("toml")
                    && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
                    && self
                        .options
                        .only
                        .as_ref()
                        .is_none_or(|only| only.iter().any(|n| n.as_str() == stem))
                {
                    found.insert(stem.to_owned());
                }
            }
        }
        let mut names: Vec<String> = self
            .options
            .order
            .iter()
            .map(|n| n.as_str().to_owned())
            .filter(|n| found.contains(n))
            .collect();
        let rest: Vec<String> = found.into_iter().filter(|n| !names.contains(n)).collect();
        names.extend(rest);
        names
    }

    /// Compares the directory with the snapshot: starts a load for every changed plugin
    /// (unless the same files are already loading), drops removed ones, and publishes the
    /// new snapshot at once, with `loading` marks.
    fn scan(&mut self, waiter: Waiter) {
        let current = self.snapshot.load_full();
        let names = self.names_on_disk();
        let mut report = ReloadReport::default();
        let explicit = matches!(waiter, Waiter::Caller(_));
        let mut waiting = BTreeSet::new();
        let mut slots = Vec::with_capacity(names.len());
        for name in &names {
            let manifest_path = self.dir.join(format!("{name}.toml"));
            let print = std::fs::read(&manifest_path).ok().and_then(|m| {
                let text = String::from_utf8_lossy(&m);
                let wasm = Manifest::component_path_of(&manifest_path, &text);
                std::fs::read(wasm).ok().map(|w| fingerprint(&m, &w))
            });
            let mut slot = current
                .slots
                .iter()
                .find(|s| &s.name == name)
                .cloned()
                .unwrap_or_else(|| Slot {
                    name: name.clone(),
                    serving: None,
                    last_error: None,
                    attempted: None,
                    loading: None,
                });
            let key = print.clone().unwrap_or_default();
            if print.is_some() && slot.attempted == print && slot.loading.is_none() {
                // Files that failed and were not fixed still fail: an explicit reload says
                // so; the watcher does not repeat it on every change to other files.
                match slot.last_error.as_ref().filter(|_| explicit) {
                    Some(failure) => report.failed.push((name.clone(), failure.message.clone())),
                    None => report.unchanged.push(name.clone()),
                }
            } else if slot.loading.as_ref().is_some_and(|l| l.print == key) {
                waiting.insert(name.clone());
            } else {
                slot.loading = Some(Loading {
                    print: key.clone(),
                    since: Utc::now(),
                });
                self.spawn_load(name.clone(), manifest_path, key);
                waiting.insert(name.clone());
            }
            slots.push(slot);
        }
        report.removed = current
            .slots
            .iter()
            .filter(|s| !names.contains(&s.name))
            .map(|s| s.name.clone())
            .collect();
        for pass in &mut self.passes {
            for removed in &report.removed {
                pass.waiting.remove(removed);
            }
        }
        self.snapshot.store(Arc::new(Snapshot { slots }));
        self.passes.push(Pass {
            report,
            waiting,
            waiter,
        });
        self.finish_passes();
    }

    fn spawn_load(&self, name: String, manifest_path: PathBuf, print: String) {
        let runtime = self.runtime.clone();
        let permits = self.permits.clone();
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            if commands.upgrade().is_none() {
                return;
            }
            let result = runtime.load(&manifest_path).await;
            if let Some(commands) = commands.upgrade() {
                let _ = commands.send(Command::Loaded {
                    name,
                    print,
                    result,
                });
            }
        });
    }

    /// Swaps a finished load into the snapshot, unless newer files superseded it or the
    /// plugin was removed meanwhile.
    fn loaded(&mut self, name: &str, print: &str, result: Result<Arc<WasmAgent>, LoadError>) {
        let current = self.snapshot.load_full();
        let Some(index) = current
            .slots
            .iter()
            .position(|s| s.name == name && s.loading.as_ref().is_some_and(|l| l.print == print))
        else {
            return;
        };
        let mut slots = current.slots.clone();
        let slot = &mut slots[index];
        slot.loading = None;
        let outcome = match result {
            Ok(agent) => {
                slot.attempted = Some(agent.fingerprint().to_owned());
                slot.serving = Some(agent);
                slot.last_error = None;
                Ok(())
            }
            Err(error) => {
                slot.attempted = (!print.is_empty()).then(|| print.to_owned());
                let message = error.to_string();
                slot.last_error = Some(LoadFailure {
                    message: message.clone(),
                    without_path: error.without_path(),
                });
                Err(message)
            }
        };
        self.snapshot.store(Arc::new(Snapshot { slots }));
        for pass in &mut self.passes {
            if pass.waiting.remove(name) {
                match &outcome {
                    Ok(()) => pass.report.loaded.push(name.to_owned()),
                    Err(reason) => pass.report.failed.push((name.to_owned(), reason.clone())),
                }
            }
        }
        self.finish_passes();
    }

    /// Answers every pass whose loads have all ended.
    fn finish_passes(&mut self) {
        let (done, pending): (Vec<Pass>, Vec<Pass>) = std::mem::take(&mut self.passes)
            .into_iter()
            .partition(|p| p.waiting.is_empty());
        self.passes = pending;
        for pass in done {
            match pass.waiter {
                Waiter::Caller(reply) => {
                    let _ = reply.send(pass.report);
                }
                Waiter::Watcher => self.announce(pass.report),
            }
        }
    }

    fn announce(&self, report: ReloadReport) {
        for (name, reason) in &report.failed {
            tracing::warn!(provider = %name, %reason, "plugin failed to load; the previous version keeps serving");
        }
        if report.loaded.is_empty() && report.removed.is_empty() && report.failed.is_empty() {
            return;
        }
        tracing::info!(loaded = ?report.loaded, removed = ?report.removed, "plugins reloaded");
        // No subscriber (a CLI listing) is fine.
        let _ = self.watched.send(report);
    }
}
