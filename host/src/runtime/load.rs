//! Loading one plugin: manifest, pre-compile check, compile (or cache), link, probe. Each
//! step's failure is a [`LoadError`] naming the file and saying what to do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::domain::AgentProvider;

use super::abi::ProviderPre;
use super::engine::{self, CompileSource};
use super::limiter::memory_advice;
use super::manifest::{Manifest, ManifestError};
use super::state::{ExecCtx, new_store};
use super::{LoadError, LoadInfo, RuntimeInner, WasmAgent, check, fingerprint};

/// Time a load-time `capabilities()` probe may take before the plugin is refused.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A plugin's files, read and validated but not compiled.
struct PluginFiles {
    manifest: Manifest,
    manifest_text: Vec<u8>,
    wasm_path: PathBuf,
    component: Vec<u8>,
}

pub(super) async fn load(
    inner: &Arc<RuntimeInner>,
    manifest_path: &Path,
) -> Result<Arc<WasmAgent>, LoadError> {
    let started = Instant::now();
    let files = read_files(inner, manifest_path)?;
    let shape = check::read_shape(&files.component)
        .map_err(|reason| LoadError::invalid(&files.wasm_path, reason))?;
    inner
        .checker
        .verify(&inner.engine, &inner.linkers, files.manifest.abi, &shape)
        .map_err(|reason| LoadError::invalid(&files.wasm_path, reason))?;
    let print = fingerprint(&files.manifest_text, &files.component);
    let component_sha256 = hex::encode(Sha256::digest(&files.component));
    let wasm_path = files.wasm_path.clone();
    let (component, compile) = compile(inner, files.wasm_path.clone(), files.component).await?;
    let pre = inner
        .linkers
        .link(files.manifest.abi, &component)
        .map_err(|reason| LoadError::invalid(&wasm_path, reason))?;
    let manifest = Arc::new(files.manifest);
    let caps = probe(inner, &manifest, &pre)
        .await
        .map_err(|reason| LoadError::invalid(&wasm_path, reason))?;
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
        component_sha256,
    };
    Ok(Arc::new(WasmAgent::new(
        inner.clone(),
        provider,
        manifest,
        pre,
        print,
        LoadInfo {
            compile,
            elapsed: started.elapsed(),
        },
    )))
}

/// Reads and validates the manifest (its name must match the file, its memory must fit the
/// host's ceiling) and reads the component beside it.
fn read_files(inner: &RuntimeInner, manifest_path: &Path) -> Result<PluginFiles, LoadError> {
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
    let ceiling = inner.config.max_memory_mib;
    if manifest.limits.memory_bytes > ceiling * 1024 * 1024 {
        return Err(LoadError::invalid(
            manifest_path,
            format!("limits.memory_mib exceeds this host's ceiling of {ceiling} MiB"),
        ));
    }
    let wasm_path = manifest.component_path(manifest_path);
    let component = std::fs::read(&wasm_path).map_err(|source| LoadError::ReadComponent {
        path: wasm_path.clone(),
        source,
    })?;
    Ok(PluginFiles {
        manifest,
        manifest_text,
        wasm_path,
        component,
    })
}

/// Compiles off the async runtime (or deserializes the cached artifact).
async fn compile(
    inner: &Arc<RuntimeInner>,
    wasm_path: PathBuf,
    bytes: Vec<u8>,
) -> Result<(wasmtime::component::Component, CompileSource), LoadError> {
    let task_inner = inner.clone();
    tokio::task::spawn_blocking(move || match &task_inner.cache {
        Some(cache) => cache.compile(&task_inner.engine, &bytes),
        None => engine::compile(&task_inner.engine, &bytes).map(|c| (c, CompileSource::Compiled)),
    })
    .await
    .map_err(|e| LoadError::invalid(&wasm_path, format!("compilation did not finish: {e}")))?
    .map_err(|reason| LoadError::invalid(&wasm_path, reason))
}

/// Instantiates the component once and calls `capabilities()`; a memory-limit trap is
/// reported with the size the component needed.
async fn probe(
    inner: &RuntimeInner,
    manifest: &Arc<Manifest>,
    pre: &ProviderPre,
) -> Result<super::abi::GuestCapabilities, String> {
    let exec = Arc::new(ExecCtx::new(
        manifest.clone(),
        None,
        inner.config.executor.clone(),
        inner.config.secrets.clone(),
        None,
    ));
    if let Ok(mut deadline) = exec.hard_deadline.lock() {
        *deadline = Some(Instant::now() + PROBE_TIMEOUT);
    }
    let mut store = new_store(&inner.engine, exec);
    let outcome = tokio::time::timeout(PROBE_TIMEOUT, pre.capabilities(&mut store)).await;
    match outcome {
        Err(_) => Err("capabilities() did not return in time".into()),
        Ok(Ok(caps)) => Ok(caps),
        Ok(Err(e)) => match store.data().refused_memory() {
            Some(refused) => Err(memory_advice(refused, manifest.limits.memory_bytes)),
            None => Err(format!("capabilities() failed: {e:#}")),
        },
    }
}
