//! Dropping a third-party plugin, built out of tree as its README says, into the plugins
//! directory of a running host: the host picks it up without a restart and runs it.

use std::time::{Duration, Instant};

use rdev::domain::{AgentEvent, ProviderName, ResultStatus};
use rdev::ports::ProviderLookup;
use rdev::registry::{ProviderState, Registry};
use rdev_tests::harness::examples;
use rdev_tests::harness::runtime::{run, runtime};

#[tokio::test]
async fn an_out_of_tree_plugin_dropped_into_a_running_host_serves() {
    let built = examples::build("echo-provider", "echo-provider");
    let host_dir = tempfile::tempdir().expect("tempdir");
    let plugins = tempfile::tempdir().expect("tempdir");
    let registry = Registry::start(
        runtime(host_dir.path(), Duration::from_secs(5)),
        plugins.path().to_owned(),
        Vec::new(),
    )
    .await
    .expect("registry starts on an empty directory");
    assert!(registry.statuses().is_empty());

    // Installed as the README says: the component first, then the manifest.
    std::fs::copy(&built.component, plugins.path().join("echo.wasm")).expect("copy component");
    std::fs::copy(&built.manifest, plugins.path().join("echo.toml")).expect("copy manifest");

    // The directory watch loads it; nobody calls reload.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !registry
        .statuses()
        .iter()
        .any(|s| s.name == "echo" && s.state == ProviderState::Serving)
    {
        assert!(
            Instant::now() < deadline,
            "the dropped-in plugin was never loaded: {:?}",
            registry.statuses()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let name = ProviderName::parse("echo").expect("valid name");
    let agent = registry.lookup(Some(&name)).expect("echo is registered");
    let mut r = run("hello, host", Duration::from_secs(60), 16);
    let result = agent.execute(r.execution).await.expect("echo runs");
    assert_eq!(result.status, ResultStatus::Completed);
    assert_eq!(result.final_text.as_deref(), Some("hello, host"));
    assert_eq!(
        r.events.recv().await,
        Some(AgentEvent::Message {
            text: "hello, host".into(),
            partial: false
        })
    );
}

/// `rdev exec --provider X` compiles X alone: a plugins directory full of others (one that
/// loads for seconds, one the host refuses) costs it nothing.
#[test]
fn exec_loads_only_the_provider_it_runs() {
    use rdev_tests::harness::plugins::test_plugins_dir;
    use rdev_tests::harness::runtime::install;

    let plugins = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let cache = work.path().join("cache");
    let source = test_plugins_dir();
    install(&source, "versioned-v1", plugins.path(), "versioned", None);
    install(&source, "slow-start", plugins.path(), "slow-start", None);
    install(&source, "needs-http", plugins.path(), "needs-http", None);
    let output = std::process::Command::new(rdev_tests::harness::bin::rdev())
        .args(["exec", "--provider", "versioned", "--plugins-dir"])
        .arg(plugins.path())
        .arg("--dir")
        .arg(work.path().join("ws"))
        .arg("--data-dir")
        .arg(work.path().join("data"))
        .args(["--", "quick"])
        .env("RDEV_CACHE_DIR", &cache)
        .output()
        .expect("rdev runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1.0.0"),
        "{stderr}"
    );
    assert!(!stderr.contains("needs-http"), "{stderr}");
    // One compiled artifact: the provider that ran.
    let compiled = std::fs::read_dir(&cache).expect("cache dir").count();
    assert_eq!(compiled, 1);
}
