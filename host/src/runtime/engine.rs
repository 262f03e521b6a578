//! The one wasmtime `Engine` every plugin runs on, configured for untrusted code, and the
//! on-disk cache of compiled components.

use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::RuntimeError;

/// How the engine is sized; see [`super::RuntimeConfig`] for the operator-facing knobs.
pub(crate) struct EngineSettings {
    pub max_instances: u32,
    pub max_memory_bytes: u64,
    pub epoch_tick: Duration,
}

/// Builds the engine: async host calls, epoch interruption (cheaper than fuel), the pooling
/// allocator with copy-on-write memory images so an instantiation costs microseconds, and
/// a hard per-memory cap above any manifest's own limit.
pub(crate) fn build(settings: &EngineSettings) -> Result<Engine, RuntimeError> {
    let mut pool = PoolingAllocationConfig::new();
    let n = settings.max_instances.max(1);
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(16))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(8))
        .total_stacks(n)
        .max_memory_size(usize::try_from(settings.max_memory_bytes).unwrap_or(usize::MAX));
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(e.to_string()))?;
    spawn_ticker(&engine, settings.epoch_tick)?;
    Ok(engine)
}

/// One thread advances the epoch; it holds only a weak reference, so it ends with the
/// engine. Deadlines are therefore precise to one tick.
fn spawn_ticker(engine: &Engine, tick: Duration) -> Result<(), RuntimeError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("rdev-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map_err(|e| RuntimeError::Engine(format!("starting the epoch thread: {e}")))?;
    Ok(())
}

/// Serialized compiled components, keyed by the sha256 of the component bytes, the
/// wasmtime version and the engine's compatibility hash. Only artifacts this cache wrote
/// are ever deserialized (deserializing is `unsafe` for untrusted bytes), and the cache
/// directory must be private to the host.
pub(crate) struct CompileCache {
    dir: PathBuf,
}

/// Where a compiled component came from, for logs and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileSource {
    Compiled,
    Cache,
}

/// Feeds `Hash` output into sha256, so the key is stable across Rust releases (unlike
/// `DefaultHasher`).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CompileCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn key(engine: &Engine, bytes: &[u8]) -> String {
        use std::hash::Hash;
        let mut hasher = ShaHasher(Sha256::new());
        hasher.write(bytes);
        hasher.write(b"wasmtime-48.0.8");
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hex::encode(hasher.0.finalize())
    }

    /// Compiles `bytes` or loads the cached artifact. Blocking: call it off the async
    /// runtime (compiling takes hundreds of milliseconds).
    pub fn compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> Result<(Component, CompileSource), String> {
        let artifact = self.dir.join(format!("{}.cwasm", Self::key(engine, bytes)));
        if artifact.is_file() {
            // SAFETY: the file is named by the hash of what we compiled and was written by
            // `store` below (atomically, via rename), in a directory owned by the host.
            match unsafe { Component::deserialize_file(engine, &artifact) } {
                Ok(component) => return Ok((component, CompileSource::Cache)),
                Err(e) => tracing::warn!(
                    artifact = %artifact.display(),
                    error = %e,
                    "discarding an unusable compiled artifact"
                ),
            }
        }
        let component = compile(engine, bytes)?;
        if let Err(e) = self.store(&artifact, &component) {
            tracing::warn!(artifact = %artifact.display(), error = %e, "could not cache a compiled component");
        }
        Ok((component, CompileSource::Compiled))
    }

    fn store(&self, artifact: &Path, component: &Component) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let bytes = component.serialize().map_err(|e| e.to_string())?;
        let tmp = artifact.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, artifact).map_err(|e| format!("renaming {}: {e}", tmp.display()))?;
        Ok(())
    }
}

/// Compiles without a cache; the error text is wasmtime's validation message.
pub(crate) fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, String> {
    Component::new(engine, bytes).map_err(|e| format!("not a valid component: {}", root_cause(&e)))
}

/// The full cause chain of a wasmtime error on one line.
pub(crate) fn root_cause(e: &wasmtime::Error) -> String {
    format!("{e:#}")
}
