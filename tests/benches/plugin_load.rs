//! Plugin load and first-execution times of the JavaScript example (`examples/js-provider`,
//! componentize-js, about 12 MB) against the Rust example (`examples/echo-provider`): a cold
//! load (nothing cached: the component is compiled), a cached load (a new runtime over the
//! same compile cache) and the first execution after loading. Then the time a small plugin's
//! reload takes while the JavaScript component is being compiled by the same registry.
//!
//! Run: `cargo xtask plugins && flock /tmp/rdev-bench.lock cargo bench -p rdev-tests --bench
//! plugin_load` (needs npm for the JavaScript example).

use std::path::Path;
use std::time::{Duration, Instant};

use rdev::ports::CodeAgent;
use rdev::registry::Registry;
use rdev_tests::harness::examples::{self, BuiltExample};
use rdev_tests::harness::runtime::{run, runtime};

/// Copies a built example into `plugins` as `name`.
fn place(built: &BuiltExample, plugins: &Path, name: &str) {
    std::fs::copy(&built.component, plugins.join(format!("{name}.wasm"))).expect("component");
    std::fs::copy(&built.manifest, plugins.join(format!("{name}.toml"))).expect("manifest");
}

async fn measure(label: &str, built: &BuiltExample, name: &str) {
    let root = tempfile::tempdir().expect("tempdir");
    let plugins = root.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins dir");
    place(built, &plugins, name);
    let manifest = plugins.join(format!("{name}.toml"));
    let grace = Duration::from_secs(5);

    // A load by a fresh runtime, timed: the first compiles, the second finds the cache.
    let load = |what: &'static str| {
        let (root, manifest) = (root.path(), &manifest);
        async move {
            let started = Instant::now();
            let agent = runtime(root, grace).load(manifest).await.expect(what);
            (agent, started.elapsed())
        }
    };
    let (agent, cold) = load("cold load").await;
    let (cached_agent, cached) = load("cached load").await;
    drop(cached_agent);
    let execution = run("hello", Duration::from_secs(60), 64);
    let started = Instant::now();
    let result = agent
        .execute(execution.execution)
        .await
        .expect("first execution");
    let first = started.elapsed();
    assert!(result.final_text.is_some_and(|t| t.contains("hello")));
    let size = std::fs::metadata(&built.component)
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "{label:<6} {:>6.1} MB  cold load {:>8.0} ms  cached load {:>6.0} ms  first execution {:>6.1} ms",
        size as f64 / 1e6,
        cold.as_secs_f64() * 1e3,
        cached.as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e3
    );
}

/// Waits until the registry serves `name` at `version`; the time it took from `since`.
async fn served(registry: &Registry, name: &str, version: &str, since: Instant) -> Duration {
    loop {
        let serving = registry
            .statuses()
            .iter()
            .any(|s| s.name == name && s.version.as_deref() == Some(version));
        if serving {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(600),
            "{name} never served"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A small plugin's reload while the JavaScript component compiles (cold, nothing cached).
async fn reload_during_compile(rust: &BuiltExample, js: &BuiltExample) {
    let root = tempfile::tempdir().expect("tempdir");
    let plugins = root.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins dir");
    place(rust, &plugins, "echo");
    let registry = Registry::start(
        runtime(root.path(), Duration::from_secs(5)),
        plugins.clone(),
        Vec::new(),
    )
    .await
    .expect("registry");
    let js_dropped = Instant::now();
    place(js, &plugins, "js-echo");
    while !registry
        .statuses()
        .iter()
        .any(|s| s.name == "js-echo" && s.loading_since.is_some())
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let manifest = std::fs::read_to_string(&rust.manifest).expect("manifest");
    let bumped = manifest.replace("version = \"0.1.0\"", "version = \"0.1.1\"");
    let tmp = plugins.join("echo.toml.partial");
    std::fs::write(&tmp, bumped).expect("write");
    let reload_started = Instant::now();
    std::fs::rename(&tmp, plugins.join("echo.toml")).expect("rename");
    let small = served(&registry, "echo", "0.1.1", reload_started).await;
    let js_compiling = registry
        .statuses()
        .iter()
        .any(|s| s.name == "js-echo" && s.version.is_none());
    let big = served(&registry, "js-echo", "0.1.0", js_dropped).await;
    println!(
        "small plugin reload while the JS component compiles: {:.0} ms (JS still compiling then: {js_compiling}); JS load from drop to serving: {:.1} s",
        small.as_secs_f64() * 1e3,
        big.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let rust = examples::build("echo-provider", "echo-provider");
    let js =
        examples::build_js("js-provider", "js-echo.wasm").expect("the JavaScript example builds");
    measure("rust", &rust, "echo").await;
    measure("js", &js, "js-echo").await;
    reload_during_compile(&rust, &js).await;
}
