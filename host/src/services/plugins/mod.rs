//! Shipping plugins through an OCI registry: publishing a local plugin, fetching one and
//! showing what its manifest asks for, installing it atomically into a plugins directory
//! (where the registry's watcher hot-reloads it), listing and removing installed plugins.
//! Every install and removal updates the lock file ([`lock`]).

pub mod lock;
pub mod restore;

use std::path::{Path, PathBuf};

use crate::domain::{ContentDigest, OciReference};
use crate::ports::{ArtifactError, ArtifactRegistry, PluginArtifact, Pulled, RegistryCredentials};
use crate::runtime::{Manifest, ManifestError};

use lock::{LockEntry, LockFile};

/// Why a plugin could not be published, installed, listed or removed.
#[derive(Debug, thiserror::Error)]
pub enum PluginsError {
    #[error(transparent)]
    Registry(#[from] ArtifactError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("lock file {}: {reason}", path.display())]
    Lock { path: PathBuf, reason: String },
    /// The registry serves other content than the lock file pins: refused, nothing written.
    #[error(
        "{name}: {reference} now resolves to {served}, the lock file pins {pinned}; install the reference explicitly to accept the new content"
    )]
    Moved {
        name: String,
        reference: String,
        pinned: String,
        served: String,
    },
    #[error("no plugin named {name:?} is installed in {}", dir.display())]
    NotInstalled { name: String, dir: PathBuf },
    #[error("{}: {reason}", path.display())]
    Source { path: PathBuf, reason: String },
    #[error("{0}: the artifact's component is not a WebAssembly binary")]
    NotWasm(String),
    /// The task writing the files panicked or was cancelled; nothing is known to be written.
    #[error("the install task stopped: {0}")]
    Interrupted(String),
}

pub(crate) fn io_error(context: &'static str, path: &Path, source: std::io::Error) -> PluginsError {
    PluginsError::Io {
        context,
        path: path.to_owned(),
        source,
    }
}

/// Writes `path` through a hidden temporary file beside it and one rename, so neither the
/// watcher nor a crash ever sees half a file. The temporary name ends in `.partial`, which
/// the registry ignores.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PluginsError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("plugin");
    let tmp = path.with_file_name(format!(".{name}.partial"));
    std::fs::write(&tmp, bytes).map_err(|e| io_error("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error("renaming into place", path, e)
    })
}

/// A plugin fetched from a registry and checked, not installed yet: the operator sees
/// [`Fetched::grants`] before confirming.
#[derive(Debug)]
pub struct Fetched {
    pub reference: OciReference,
    pub manifest: Manifest,
    pub pulled: Pulled,
}

impl Fetched {
    /// What the plugin's manifest asks for, one line each, for the confirmation prompt.
    pub fn grants(&self) -> Vec<String> {
        let grants = &self.manifest.grants;
        let list = |items: Vec<String>| {
            if items.is_empty() {
                "none".to_owned()
            } else {
                items.join(", ")
            }
        };
        let limits = &self.manifest.limits;
        vec![
            format!(
                "run programs: {}",
                list(grants.exec().map(str::to_owned).collect())
            ),
            format!(
                "reach project ports: {}",
                list(grants.ports().map(|p| p.to_string()).collect())
            ),
            format!(
                "use credentials: {}",
                list(grants.credentials().map(str::to_owned).collect())
            ),
            format!(
                "memory up to {} MiB, commands up to {} s",
                limits.memory_bytes / (1024 * 1024),
                limits.max_timeout.as_secs()
            ),
        ]
    }

    /// sha256 of the component, as commands record it.
    pub fn component_sha256(&self) -> String {
        ContentDigest::of(&self.pulled.artifact.component)
            .hex()
            .to_owned()
    }
}

/// Pulls `reference` (digests verified by the registry adapter) and validates its manifest;
/// `credentials` are offered when the registry asks for them.
pub async fn fetch(
    registry: &dyn ArtifactRegistry,
    reference: &OciReference,
    credentials: Option<&RegistryCredentials>,
) -> Result<Fetched, PluginsError> {
    let pulled = registry.pull(reference, credentials).await?;
    let text = String::from_utf8_lossy(&pulled.artifact.manifest).into_owned();
    let manifest = Manifest::parse(Path::new(&reference.to_string()), &text)?;
    if !pulled.artifact.component.starts_with(b"\0asm") {
        return Err(PluginsError::NotWasm(reference.to_string()));
    }
    Ok(Fetched {
        reference: reference.clone(),
        manifest,
        pulled,
    })
}

/// Reads a local plugin to publish: `<name>.wasm` (its `<name>.toml` beside it) or a
/// directory holding exactly one plugin. The manifest is validated first.
pub fn read_local(path: &Path) -> Result<(Manifest, PluginArtifact), PluginsError> {
    let manifest_path = if path.is_dir() {
        single_manifest(path)?
    } else {
        path.with_extension("toml")
    };
    let manifest = Manifest::load(&manifest_path)?;
    let wasm_path = manifest_path.with_extension("wasm");
    let component = std::fs::read(&wasm_path).map_err(|e| io_error("reading", &wasm_path, e))?;
    let text = std::fs::read(&manifest_path).map_err(|e| io_error("reading", &manifest_path, e))?;
    Ok((
        manifest,
        PluginArtifact {
            component,
            manifest: text,
        },
    ))
}

fn single_manifest(dir: &Path) -> Result<PathBuf, PluginsError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_error("reading", dir, e))?;
    let manifests: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .filter(|p| p.with_extension("wasm").is_file())
        .collect();
    match manifests.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(PluginsError::Source {
            path: dir.to_owned(),
            reason: "holds no plugin (<name>.toml beside <name>.wasm)".into(),
        }),
        _ => Err(PluginsError::Source {
            path: dir.to_owned(),
            reason: "holds several plugins; name the .wasm to publish".into(),
        }),
    }
}

/// One plugin of a plugins directory, as `rdev plugins list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    /// From its manifest; `None` when the manifest does not parse.
    pub version: Option<String>,
    /// Where it was installed from; `None` for plugins copied in by hand.
    pub locked: Option<LockEntry>,
    /// The component on disk is no longer the one the lock file recorded.
    pub modified: bool,
}

/// Installing from a registry into the server's plugins directory: what
/// `POST /providers/install` uses, over the registry port so tests can point it anywhere.
#[derive(Clone)]
pub struct PluginInstaller {
    registry: std::sync::Arc<dyn ArtifactRegistry>,
    dir: PathBuf,
    /// Installs are read-modify-write of the lock file: one at a time.
    writing: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl PluginInstaller {
    /// An installer pulling through `registry` into `dir`.
    pub fn new(registry: std::sync::Arc<dyn ArtifactRegistry>, dir: PathBuf) -> Self {
        Self {
            registry,
            dir,
            writing: std::sync::Arc::default(),
        }
    }

    /// Pulls and checks `reference` without installing it.
    pub async fn fetch(
        &self,
        reference: &OciReference,
        credentials: Option<&RegistryCredentials>,
    ) -> Result<Fetched, PluginsError> {
        fetch(self.registry.as_ref(), reference, credentials).await
    }

    /// Installs what [`PluginInstaller::fetch`] returned, as `rdev plugins install` does,
    /// off the async workers (components can be tens of MB) and one install at a time.
    pub async fn install(&self, fetched: Fetched) -> Result<LockEntry, PluginsError> {
        let _writing = self.writing.lock().await;
        let dir = PluginsDir::new(self.dir.clone());
        tokio::task::spawn_blocking(move || dir.install(&fetched))
            .await
            .map_err(|e| PluginsError::Interrupted(e.to_string()))?
    }
}

/// A plugins directory that `rdev plugins install/remove/list` manages.
pub struct PluginsDir {
    dir: PathBuf,
}

impl PluginsDir {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Writes the component, then the manifest (each in one rename, as the registry expects
    /// a changed plugin), then records it in the lock file.
    pub fn install(&self, fetched: &Fetched) -> Result<LockEntry, PluginsError> {
        let name = fetched.manifest.name.as_str();
        let artifact = &fetched.pulled.artifact;
        write_atomically(&self.dir.join(format!("{name}.wasm")), &artifact.component)?;
        write_atomically(&self.dir.join(format!("{name}.toml")), &artifact.manifest)?;
        let entry = LockEntry {
            name: name.to_owned(),
            reference: fetched.reference.to_string(),
            digest: fetched.pulled.digest.to_string(),
            component_sha256: fetched.component_sha256(),
            manifest_sha256: Some(ContentDigest::of(&artifact.manifest).hex().to_owned()),
        };
        let mut lock = LockFile::read(&self.dir)?;
        lock.upsert(entry.clone());
        lock.write(&self.dir)?;
        Ok(entry)
    }

    /// Whether `entry`'s plugin is in the directory exactly as the lock records it: the
    /// component (and, when recorded, the manifest) hash to the lock's sha256.
    pub fn holds(&self, entry: &LockEntry) -> bool {
        if crate::domain::ProviderName::parse(&entry.name).is_err() {
            return false;
        }
        let sha = |extension: &str| {
            std::fs::read(self.dir.join(format!("{}.{extension}", entry.name)))
                .ok()
                .map(|bytes| ContentDigest::of(&bytes).hex().to_owned())
        };
        let component = sha("wasm").is_some_and(|sha| sha == entry.component_sha256);
        let manifest = match &entry.manifest_sha256 {
            Some(expected) => sha("toml").as_ref() == Some(expected),
            None => sha("toml").is_some(),
        };
        component && manifest
    }

    /// Removes the manifest first (the registry then drops the plugin), the component, and
    /// the lock entry.
    pub fn remove(&self, name: &str) -> Result<(), PluginsError> {
        let mut lock = LockFile::read(&self.dir)?;
        let mut found = lock.remove(name);
        for extension in ["toml", "wasm"] {
            let path = self.dir.join(format!("{name}.{extension}"));
            match std::fs::remove_file(&path) {
                Ok(()) => found = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("removing", &path, e)),
            }
        }
        if !found {
            return Err(PluginsError::NotInstalled {
                name: name.to_owned(),
                dir: self.dir.clone(),
            });
        }
        lock.write(&self.dir)
    }

    /// Every plugin in the directory, by name, with where it came from.
    pub fn list(&self) -> Result<Vec<Listed>, PluginsError> {
        let lock = LockFile::read(&self.dir)?;
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| io_error("reading", &self.dir, e))?;
        let mut listed: Vec<Listed> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .filter_map(|path| {
                let name = path.file_stem()?.to_str()?.to_owned();
                let locked = lock.get(&name).cloned();
                let modified = locked.as_ref().is_some_and(|entry| {
                    std::fs::read(path.with_extension("wasm"))
                        .map(|bytes| ContentDigest::of(&bytes).hex() != entry.component_sha256)
                        .unwrap_or(true)
                });
                Some(Listed {
                    version: Manifest::load(&path).ok().map(|m| m.version),
                    name,
                    locked,
                    modified,
                })
            })
            .collect();
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listed)
    }
}
