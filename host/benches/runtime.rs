//! Runtime benchmarks, printed as a table (not a timed test):
//!
//! - instantiate + `capabilities()` + drop, pooling allocator and `InstancePre`;
//! - events per second from a guest into a bounded host sink;
//! - time from a changed plugin file to the new version serving, through the watcher
//!   (debounce included) and through an explicit reload, with a cold and a warm compile
//!   cache.
//!
//! Run: `cargo xtask plugins && cargo bench -p rdev --bench runtime`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdev::adapters::local::LocalExecutor;
use rdev::domain::{AgentRequest, CommandId, ProjectId, ProviderName};
use rdev::ports::{CodeAgent, Execution, ProviderLookup, SecretError, SecretResolver, SecretValue};
use rdev::registry::Registry;
use rdev::runtime::{Runtime, RuntimeConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct NoSecrets;

#[async_trait]
impl SecretResolver for NoSecrets {
    async fn resolve(&self, _name: &str) -> Result<Option<SecretValue>, SecretError> {
        Ok(None)
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn runtime(work: &Path, cache: Option<PathBuf>) -> Runtime {
    let secrets: Arc<dyn SecretResolver> = Arc::new(NoSecrets);
    let executor = Arc::new(LocalExecutor::per_project(
        work.join("projects"),
        secrets.clone(),
    ));
    let mut config = RuntimeConfig::new(executor, secrets);
    config.cache_dir = cache;
    Runtime::new(config).expect("runtime")
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn install(from: &Path, plugin: &str, to: &Path, name: &str, version: &str) {
    let wasm = std::fs::read(from.join(format!("{plugin}.wasm"))).expect("component");
    let manifest = std::fs::read_to_string(from.join(format!("{plugin}.toml"))).expect("manifest");
    let manifest: Vec<String> = manifest
        .lines()
        .map(|l| {
            if l.starts_with("name = ") {
                format!("name = {name:?}")
            } else if l.starts_with("version = ") {
                format!("version = {version:?}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    for (ext, bytes) in [("wasm", wasm), ("toml", manifest.join("\n").into_bytes())] {
        let target = to.join(format!("{name}.{ext}"));
        let tmp = target.with_extension("tmp-bench");
        std::fs::write(&tmp, bytes).expect("write");
        std::fs::rename(&tmp, &target).expect("rename");
    }
}

fn execution(
    prompt: &str,
    capacity: usize,
) -> (Execution, mpsc::Receiver<rdev::domain::AgentEvent>) {
    let (tx, rx) = mpsc::channel(capacity);
    let execution = Execution {
        command_id: CommandId::from_uuid(uuid::Uuid::now_v7()),
        project_id: ProjectId::parse("bench").expect("id"),
        request: AgentRequest::new(prompt),
        events: tx,
        cancel: CancellationToken::new(),
    };
    (execution, rx)
}

async fn wait_for_version(registry: &Registry, version: &str) {
    let name = ProviderName::parse("versioned").expect("name");
    loop {
        if registry
            .lookup(Some(&name))
            .is_ok_and(|a| a.provider().version == version)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::main]
async fn main() {
    let test_plugins = root().join("target/test-plugins");
    if !test_plugins.join("hostile.wasm").is_file() {
        eprintln!("build the guests first: cargo xtask plugins");
        std::process::exit(2);
    }
    let work = tempfile::tempdir().expect("tempdir");
    let rt = runtime(work.path(), Some(work.path().join("cache")));
    let mut rows: Vec<(String, String)> = Vec::new();

    // Instantiate + capabilities() + drop.
    let hostile = rt
        .load(&test_plugins.join("hostile.toml"))
        .await
        .expect("load");
    for _ in 0..200 {
        hostile.probe().await.expect("probe");
    }
    let samples: Vec<Duration> = {
        let mut s = Vec::with_capacity(5000);
        for _ in 0..5000 {
            let t = Instant::now();
            hostile.probe().await.expect("probe");
            s.push(t.elapsed());
        }
        s
    };
    rows.push((
        "instantiate + capabilities() + drop (median of 5000)".into(),
        format!("{:.1} µs", median(samples).as_secs_f64() * 1e6),
    ));

    // Events guest → host sink.
    let total = 200_000;
    let (exec, mut rx) = execution(&format!("flood {total}"), 1024);
    let drain = tokio::spawn(async move {
        let mut n = 0usize;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    let t = Instant::now();
    hostile.execute(exec).await.expect("flood");
    let received = drain.await.expect("drain");
    let elapsed = t.elapsed();
    assert_eq!(received, total);
    rows.push((
        format!("events guest → host sink ({total} in batches of 100, sink 1024)"),
        format!("{:.0} events/s", total as f64 / elapsed.as_secs_f64()),
    ));

    // Load of one plugin: compile vs cache.
    let fresh = runtime(work.path(), Some(work.path().join("cache-load")));
    let cold = fresh
        .load(&test_plugins.join("hostile.toml"))
        .await
        .expect("cold load");
    let warm = fresh
        .load(&test_plugins.join("hostile.toml"))
        .await
        .expect("warm load");
    rows.push((
        "load hostile.wasm (205 KB), compile cache cold".into(),
        format!("{:.1} ms", cold.load_info().elapsed.as_secs_f64() * 1e3),
    ));
    rows.push((
        "load hostile.wasm, compile cache warm".into(),
        format!("{:.1} ms", warm.load_info().elapsed.as_secs_f64() * 1e3),
    ));

    // Changed file → new version serving.
    let mut watch_cold = Vec::new();
    let mut watch_warm = Vec::new();
    let mut reload_cold = Vec::new();
    let mut reload_warm = Vec::new();
    for trial in 0..5 {
        let plugins = tempfile::tempdir().expect("tempdir");
        let cache = work.path().join(format!("cache-trial-{trial}"));
        install(
            &test_plugins,
            "versioned-v1",
            plugins.path(),
            "versioned",
            "1.0.0",
        );
        let registry = Registry::start(
            runtime(work.path(), Some(cache)),
            plugins.path().into(),
            vec![],
        )
        .await
        .expect("registry");
        // Watcher path: v2 is new to this cache (cold), v1 is cached (warm).
        let t = Instant::now();
        install(
            &test_plugins,
            "versioned-v2",
            plugins.path(),
            "versioned",
            "2.0.0",
        );
        wait_for_version(&registry, "2.0.0").await;
        watch_cold.push(t.elapsed());
        let t = Instant::now();
        install(
            &test_plugins,
            "versioned-v1",
            plugins.path(),
            "versioned",
            "1.0.0",
        );
        wait_for_version(&registry, "1.0.0").await;
        watch_warm.push(t.elapsed());
        // Explicit reload path (no debounce), with versions this cache has not compiled.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let t = Instant::now();
        install(
            &test_plugins,
            "hostile",
            plugins.path(),
            "versioned",
            "3.0.0",
        );
        registry.reload().await.expect("reload");
        reload_cold.push(t.elapsed());
        let t = Instant::now();
        install(
            &test_plugins,
            "versioned-v2",
            plugins.path(),
            "versioned",
            "2.0.0",
        );
        registry.reload().await.expect("reload");
        reload_warm.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    rows.push((
        "changed file → serving, watcher (150 ms debounce), cache cold (median of 5)".into(),
        ms(median(watch_cold)),
    ));
    rows.push((
        "changed file → serving, watcher (150 ms debounce), cache warm".into(),
        ms(median(watch_warm)),
    ));
    rows.push((
        "changed file → serving, explicit reload(), cache cold".into(),
        ms(median(reload_cold)),
    ));
    rows.push((
        "changed file → serving, explicit reload(), cache warm".into(),
        ms(median(reload_warm)),
    ));

    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(10);
    println!("| {:width$} | value |", "measurement");
    println!("|-{}-|-------|", "-".repeat(width));
    for (k, v) in rows {
        println!("| {k:width$} | {v} |");
    }
}
