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
        mcp_servers: Vec::new(),
    };
    (execution, rx)
}

/// Lines shaped like `claude -p --output-format stream-json --verbose` output.
fn claude_stream(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let line = match i % 4 {
            0 => {
                serde_json::json!({"type": "assistant", "message": {"id": format!("msg_{i}"), "role": "assistant", "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "Let me look at the repository structure and then run the tests to see what fails."}], "usage": {"input_tokens": 1200, "output_tokens": 45, "cache_read_input_tokens": 9000}}, "session_id": "8d0c7a4e-1f2b-4c3d-9e8f-0a1b2c3d4e5f"})
            }
            1 => {
                serde_json::json!({"type": "assistant", "message": {"id": format!("msg_{i}"), "role": "assistant", "content": [{"type": "tool_use", "id": format!("toolu_{i}"), "name": "Bash", "input": {"command": "cargo test --workspace 2>&1 | tail -50", "description": "Run the tests"}}]}, "session_id": "8d0c7a4e-1f2b-4c3d-9e8f-0a1b2c3d4e5f"})
            }
            2 => {
                serde_json::json!({"type": "user", "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": format!("toolu_{i}"), "content": "running 12 tests\ntest a ... ok\ntest b ... ok\ntest result: ok. 12 passed; 0 failed", "is_error": false}]}, "session_id": "8d0c7a4e-1f2b-4c3d-9e8f-0a1b2c3d4e5f"})
            }
            _ => {
                serde_json::json!({"type": "system", "subtype": "init", "cwd": "/work/project", "session_id": "8d0c7a4e-1f2b-4c3d-9e8f-0a1b2c3d4e5f", "tools": ["Bash", "Edit", "Read", "Write", "Grep", "Glob"], "model": "claude-sonnet-4-5"})
            }
        };
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// The host-side baseline: the same `cat` through the same executor, lines parsed with
/// serde_json.
async fn parse_natively(rt: &Runtime) -> usize {
    use tokio::io::AsyncBufReadExt;
    let spec = rdev::ports::SpawnSpec {
        program: "cat".into(),
        args: vec!["stream.jsonl".into()],
        env: Vec::new(),
        working_dir: None,
    };
    let project = ProjectId::parse("bench").expect("id");
    let process = rt
        .config()
        .executor
        .spawn(&project, spec)
        .await
        .expect("spawn");
    let mut lines = tokio::io::BufReader::new(process.stdout).lines();
    let mut typed = 0;
    while let Ok(Some(line)) = lines.next_line().await {
        if serde_json::from_str::<serde_json::Value>(&line).is_ok_and(|v| v.get("type").is_some()) {
            typed += 1;
        }
    }
    let _ = process.control.wait().await;
    typed
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

    // 10,000 Claude stream-json lines: parsed inside a guest (through `cat` and the exec
    // import) vs natively in the host (through the same executor).
    let project_dir = work.path().join("projects/bench");
    std::fs::create_dir_all(&project_dir).expect("project dir");
    std::fs::write(project_dir.join("stream.jsonl"), claude_stream(10_000)).expect("write");
    let parser_dir = tempfile::tempdir().expect("tempdir");
    install(
        &test_plugins,
        "hostile",
        parser_dir.path(),
        "parser",
        "0.1.0",
    );
    let manifest = parser_dir.path().join("parser.toml");
    let text = std::fs::read_to_string(&manifest).expect("read");
    std::fs::write(
        &manifest,
        text.replace("exec = [\"true\"]", "exec = [\"cat\"]"),
    )
    .expect("write");
    let parser = rt.load(&manifest).await.expect("load parser");
    let mut guest = Vec::new();
    let mut native = Vec::new();
    for _ in 0..7 {
        let (exec, _rx) = execution("parse stream.jsonl", 16);
        let t = Instant::now();
        let result = parser.execute(exec).await.expect("parse");
        guest.push(t.elapsed());
        assert_eq!(result.final_text.as_deref(), Some("10000 10000"));
        let t = Instant::now();
        assert_eq!(parse_natively(&rt).await, 10_000);
        native.push(t.elapsed());
    }
    let (guest, native) = (median(guest), median(native));
    rows.push((
        "parse 10,000 Claude stream-json lines in a guest (median of 7)".into(),
        format!("{:.1} ms", guest.as_secs_f64() * 1e3),
    ));
    rows.push((
        "parse the same lines natively in the host".into(),
        format!(
            "{:.1} ms (guest = {:.2}× native throughput)",
            native.as_secs_f64() * 1e3,
            native.as_secs_f64() / guest.as_secs_f64()
        ),
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
        // Each trial installs the one plugin `versioned` from another build.
        let install_as = |build: &str, version: &str| {
            install(&test_plugins, build, plugins.path(), "versioned", version);
        };
        install_as("versioned-v1", "1.0.0");
        let registry = Registry::start(
            runtime(work.path(), Some(cache)),
            plugins.path().into(),
            vec![],
        )
        .await
        .expect("registry");
        // Watcher path: v2 is new to this cache (cold), v1 is cached (warm).
        let t = Instant::now();
        install_as("versioned-v2", "2.0.0");
        wait_for_version(&registry, "2.0.0").await;
        watch_cold.push(t.elapsed());
        let t = Instant::now();
        install_as("versioned-v1", "1.0.0");
        wait_for_version(&registry, "1.0.0").await;
        watch_warm.push(t.elapsed());
        // Explicit reload path (no debounce), with versions this cache has not compiled.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let t = Instant::now();
        install_as("hostile", "3.0.0");
        registry.reload().await.expect("reload");
        reload_cold.push(t.elapsed());
        let t = Instant::now();
        install_as("versioned-v2", "2.0.0");
        registry.reload().await.expect("reload");
        reload_warm.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    rows.push((
        "changed file → serving, watcher (50 ms debounce), cache cold (median of 5)".into(),
        ms(median(watch_cold)),
    ));
    rows.push((
        "changed file → serving, watcher (50 ms debounce), cache warm".into(),
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
