//! The registry over a real plugins directory: hot reload while executions run, broken
//! replacements, removal, concurrent lookups, and the default provider.

use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use rdev::domain::{AgentEvent, ProviderName};
use rdev::ports::{LookupError, ProviderLookup};
use rdev::registry::{ProviderState, Registry};
use rdev_tests::harness::plugins::test_plugins_dir;
use rdev_tests::harness::runtime::{
    edit_file, final_text, install, run, runtime, write_atomically,
};
use rdev_tests::harness::server::ServeProcess;

const LONG: Duration = Duration::from_secs(600);

fn name(n: &str) -> ProviderName {
    ProviderName::parse(n).expect("valid name")
}

fn install_version(dir: &Path, as_name: &str, version: u32) {
    let plugin = format!("versioned-v{version}");
    install(
        &test_plugins_dir(),
        &plugin,
        dir,
        as_name,
        Some(&format!("{version}.0.0")),
    );
}

/// A registry over a plugins directory of its own that serves `versioned` 1.0.0; the
/// runtime's work directory lives as long as the registry is used (destructure it with
/// `_work` bound: `..` would delete the directory at once).
struct Serving {
    plugins: TempDir,
    registry: Registry,
    _work: TempDir,
}

async fn serving_versioned_v1() -> Serving {
    let work = tempfile::tempdir().expect("tempdir");
    let plugins = tempfile::tempdir().expect("tempdir");
    install_version(plugins.path(), "versioned", 1);
    let registry = Registry::start(runtime(work.path(), LONG), plugins.path().into(), vec![])
        .await
        .expect("registry starts");
    Serving {
        plugins,
        registry,
        _work: work,
    }
}

/// Whether `ready` holds within 30 s, polled every 50 ms: a bounded wait for the debounced
/// watcher, so the assertions are on what serves, not on time.
async fn eventually(mut ready: impl FnMut() -> bool) -> bool {
    for _ in 0..600 {
        if ready() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn quick_text(registry: &Registry, provider: &str) -> String {
    let agent = registry.lookup(Some(&name(provider))).expect("serving");
    final_text(&*agent, "quick", LONG).await
}

#[tokio::test]
async fn a_running_execution_finishes_on_its_version_while_the_next_gets_the_new_one() {
    let Serving {
        plugins,
        registry,
        _work,
    } = serving_versioned_v1().await;

    let old = registry.lookup(Some(&name("versioned"))).expect("serving");
    assert_eq!(old.provider().version, "1.0.0");
    // Capacity one: the guest emits `a`, `b`, then blocks on `c` until the test reads.
    let mut held = run("hold", LONG, 1);
    let in_flight = tokio::spawn(async move { old.execute(held.execution).await });
    let first = held.events.recv().await.expect("the execution started");
    assert!(matches!(first, AgentEvent::Message { ref text, .. } if text == "a"));

    install_version(plugins.path(), "versioned", 2);
    let report = registry.reload().await.expect("reload");
    assert_eq!(report.loaded, vec!["versioned".to_owned()]);
    let new = registry.lookup(Some(&name("versioned"))).expect("serving");
    assert_eq!(new.provider().version, "2.0.0");
    assert_eq!(quick_text(&registry, "versioned").await, "2.0.0");
    assert!(
        !in_flight.is_finished(),
        "the held execution cannot have finished"
    );

    let mut rest = Vec::new();
    while let Some(event) = held.events.recv().await {
        if let AgentEvent::Message { text, .. } = event {
            rest.push(text);
        }
    }
    assert_eq!(rest, ["b", "c"]);
    let result = in_flight
        .await
        .expect("task")
        .expect("old version completes");
    assert_eq!(result.final_text.as_deref(), Some("1.0.0"));
}

#[tokio::test]
async fn the_watcher_serves_a_changed_plugin_without_an_explicit_reload() {
    let Serving {
        plugins,
        registry,
        _work,
    } = serving_versioned_v1().await;
    install_version(plugins.path(), "versioned", 2);
    let mut version = String::new();
    eventually(|| {
        version = registry
            .lookup(Some(&name("versioned")))
            .map(|a| a.provider().version.clone())
            .unwrap_or_default();
        version == "2.0.0"
    })
    .await;
    assert_eq!(version, "2.0.0");
    assert_eq!(quick_text(&registry, "versioned").await, "2.0.0");

    // A new plugin dropped in is registered the same way.
    install_version(plugins.path(), "newcomer", 1);
    let found = eventually(|| registry.lookup(Some(&name("newcomer"))).is_ok()).await;
    assert!(found, "a dropped-in plugin was never registered");
}

#[tokio::test]
async fn a_broken_replacement_leaves_the_old_version_serving_with_its_error_listed() {
    let Serving {
        plugins,
        registry,
        _work,
    } = serving_versioned_v1().await;

    write_atomically(&plugins.path().join("versioned.wasm"), b"not a component");
    let report = registry.reload().await.expect("reload");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let status = &registry.statuses()[0];
    assert_eq!(status.state, ProviderState::Stale);
    assert_eq!(status.version.as_deref(), Some("1.0.0"));
    let error = status.last_error.clone().unwrap_or_default();
    assert!(error.contains("versioned.wasm"), "{error}");
    assert_eq!(quick_text(&registry, "versioned").await, "1.0.0");

    // An unchanged broken file is not retried but still reported as failed (#21 part 9); a
    // malformed manifest is reported the same way.
    let report = registry.reload().await.expect("reload");
    assert!(report.unchanged.is_empty(), "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0, "versioned");
    write_atomically(&plugins.path().join("versioned.toml"), b"name = [");
    registry.reload().await.expect("reload");
    let error = registry.statuses()[0]
        .last_error
        .clone()
        .unwrap_or_default();
    assert!(error.contains("versioned.toml"), "{error}");
    assert_eq!(quick_text(&registry, "versioned").await, "1.0.0");

    // Fixing the files serves the fix and clears the error.
    install_version(plugins.path(), "versioned", 2);
    registry.reload().await.expect("reload");
    assert_eq!(registry.statuses()[0].state, ProviderState::Serving);
    assert_eq!(quick_text(&registry, "versioned").await, "2.0.0");
}

#[tokio::test]
async fn a_plugin_that_never_loaded_is_listed_as_failed_and_removal_unregisters() {
    let work = tempfile::tempdir().expect("tempdir");
    let plugins = tempfile::tempdir().expect("tempdir");
    install_version(plugins.path(), "good", 1);
    install_version(plugins.path(), "future", 1);
    edit_file(&plugins.path().join("future.toml"), |text| {
        text.replace("abi = \"0.1.0\"", "abi = \"2.0.0\"")
    });
    let registry = Registry::start(runtime(work.path(), LONG), plugins.path().into(), vec![])
        .await
        .expect("registry starts");

    let statuses = registry.statuses();
    let future = statuses
        .iter()
        .find(|s| s.name == "future")
        .expect("listed");
    assert_eq!(future.state, ProviderState::Failed);
    assert!(
        future
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("2.0.0 is not supported")
    );
    assert!(matches!(
        registry.lookup(Some(&name("future"))),
        Err(LookupError::NotServing { .. })
    ));
    assert_eq!(registry.providers().len(), 1);

    std::fs::remove_file(plugins.path().join("good.toml")).expect("remove");
    std::fs::remove_file(plugins.path().join("good.wasm")).expect("remove");
    let report = registry.reload().await.expect("reload");
    assert_eq!(report.removed, vec!["good".to_owned()]);
    assert!(matches!(
        registry.lookup(Some(&name("good"))),
        Err(LookupError::Unknown(_))
    ));
    assert!(matches!(
        registry.lookup(None),
        Err(LookupError::NoProviders)
    ));
}

#[tokio::test]
async fn the_first_registered_provider_is_the_default() {
    let work = tempfile::tempdir().expect("tempdir");
    let plugins = tempfile::tempdir().expect("tempdir");
    install_version(plugins.path(), "zeta", 1);
    install_version(plugins.path(), "beta", 2);
    install_version(plugins.path(), "mid", 1);
    let rt = runtime(work.path(), LONG);

    // Without configured order: by name, never by directory listing order.
    let by_name = Registry::start(rt.clone(), plugins.path().into(), vec![])
        .await
        .expect("registry starts");
    let names: Vec<_> = by_name.statuses().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["beta", "mid", "zeta"]);
    assert!(by_name.statuses()[0].default);
    let default = by_name.lookup(None).expect("a default");
    assert_eq!(default.provider().name.as_str(), "beta");

    // Configured order first, the rest by name.
    let ordered = Registry::start(
        rt,
        plugins.path().into(),
        vec![name("zeta"), name("absent")],
    )
    .await
    .expect("registry starts");
    let names: Vec<_> = ordered
        .providers()
        .into_iter()
        .map(|p| p.name.to_string())
        .collect();
    assert_eq!(names, ["zeta", "beta", "mid"]);
    assert_eq!(
        ordered
            .lookup(None)
            .expect("default")
            .provider()
            .name
            .as_str(),
        "zeta"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookups_and_executions_stay_consistent_under_concurrent_reloads() {
    let Serving {
        plugins,
        registry,
        _work,
    } = serving_versioned_v1().await;

    let mut workers = Vec::new();
    for _ in 0..6 {
        let registry = registry.clone();
        workers.push(tokio::spawn(async move {
            let mut runs = 0;
            for _ in 0..40 {
                let agent = registry
                    .lookup(Some(&name("versioned")))
                    .expect("always serving during reloads");
                let version = agent.provider().version.clone();
                let r = run("quick", LONG, 16);
                let result = agent.execute(r.execution).await.expect("runs");
                // The code that ran is the version the lookup returned.
                assert_eq!(result.final_text.as_deref(), Some(version.as_str()));
                runs += 1;
            }
            runs
        }));
    }
    for round in 0..8 {
        install_version(plugins.path(), "versioned", 1 + round % 2);
        registry.reload().await.expect("reload");
    }
    for worker in workers {
        assert_eq!(worker.await.expect("worker"), 40);
    }
}

/// Operators deploy plugins by switching a symlink to a new directory, which the watcher
/// (watching the old directory) cannot see; SIGHUP makes `rdev serve` pick it up, audited
/// like `POST /providers/reload`.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_a_plugins_dir_the_watcher_cannot_see_change() {
    let root = tempfile::tempdir().expect("temp dir");
    let (v1, v2, current) = (
        root.path().join("v1"),
        root.path().join("v2"),
        root.path().join("current"),
    );
    for (dir, version) in [(&v1, 1), (&v2, 2)] {
        std::fs::create_dir(dir).expect("mkdir");
        install_version(dir, "versioned", version);
    }
    std::os::unix::fs::symlink(&v1, &current).expect("symlink");
    let server = ServeProcess::start(&current, &[]).await;
    assert_eq!(
        server.served_version("versioned").await.as_deref(),
        Some("1.0.0")
    );

    let next = root.path().join("next");
    std::os::unix::fs::symlink(&v2, &next).expect("symlink");
    std::fs::rename(&next, &current).expect("switch the symlink");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.served_version("versioned").await.as_deref(),
        Some("1.0.0"),
        "the watcher saw the switch, so this test proves nothing about SIGHUP"
    );

    server.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.served_version("versioned").await.as_deref() != Some("2.0.0") {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The new version serves before the reload's audit entry is written: wait for it.
    let audit = loop {
        let audit = server.get("/audit").await;
        if audit["entries"].as_array().is_some_and(|e| !e.is_empty())
            || std::time::Instant::now() > deadline
        {
            break audit;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reloads: Vec<&serde_json::Value> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "providers.reloaded")
        .collect();
    assert_eq!(reloads.len(), 1, "{audit}");
    assert_eq!(reloads[0]["actor"], "operator (SIGHUP)");
    assert_eq!(
        reloads[0]["details"]["loaded"],
        serde_json::json!(["versioned"]),
        "{audit}\n{}",
        server.logs()
    );
}

/// A plugin whose load takes seconds (`slow-start`, standing in for a large component's
/// compile) is listed as `loading` meanwhile, and does not delay another plugin's reload.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_load_is_listed_as_loading_and_does_not_delay_another_plugins_reload() {
    let Serving {
        plugins,
        registry,
        _work,
    } = serving_versioned_v1().await;

    install(
        &test_plugins_dir(),
        "slow-start",
        plugins.path(),
        "slow",
        None,
    );
    install_version(plugins.path(), "versioned", 2);
    let started = std::time::Instant::now();
    let reload = tokio::spawn({
        let registry = registry.clone();
        async move { registry.reload().await }
    });
    let mut saw_loading = false;
    loop {
        let statuses = registry.statuses();
        let slow = statuses.iter().find(|s| s.name == "slow");
        if let Some(slow) = slow
            && slow.state == ProviderState::Loading
        {
            assert!(slow.loading_since.is_some(), "{slow:?}");
            saw_loading = true;
            if let Err(LookupError::NotServing { reason, .. }) =
                registry.lookup(Some(&name("slow")))
            {
                assert!(reason.starts_with("loading since"), "{reason}");
            }
        }
        let versioned = statuses.iter().find(|s| s.name == "versioned");
        if versioned.and_then(|s| s.version.as_deref()) == Some("2.0.0") {
            // The small plugin serves its new version while the slow one still loads.
            assert_eq!(
                slow.map(|s| s.state),
                Some(ProviderState::Loading),
                "{statuses:?}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "versioned 2.0.0 never served: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let swapped = started.elapsed();
    assert!(saw_loading);
    assert_eq!(quick_text(&registry, "versioned").await, "2.0.0");

    // The explicit reload answers once both loads ended.
    let report = reload.await.expect("task").expect("reload");
    let waited = started.elapsed();
    let mut loaded = report.loaded.clone();
    loaded.sort();
    assert_eq!(loaded, ["slow", "versioned"], "{report:?}");
    let slow = registry
        .statuses()
        .into_iter()
        .find(|s| s.name == "slow")
        .expect("listed");
    assert_eq!(slow.state, ProviderState::Serving);
    assert_eq!(slow.loading_since, None);
    println!("small plugin swapped in after {swapped:?}; the slow load ended after {waited:?}");
}

/// The watcher's hot reloads go to the audit trail like explicit ones; load errors in
/// `GET /providers` name server paths only to admins.
#[tokio::test(flavor = "multi_thread")]
async fn watcher_reloads_are_audited_and_load_errors_hide_paths_from_non_admins() {
    use rdev_tests::harness::server::TestServer;
    use reqwest::Method;

    let plugins = tempfile::tempdir().expect("tempdir");
    install_version(plugins.path(), "versioned", 1);
    let dir = plugins.path().to_owned();
    let server = TestServer::sqlite_with(|config| config.plugins_dir = Some(dir)).await;

    install_version(plugins.path(), "versioned", 2);
    install(
        &test_plugins_dir(),
        "versioned-v1",
        plugins.path(),
        "broken",
        None,
    );
    write_atomically(&plugins.path().join("broken.wasm"), b"not a component");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let entry = loop {
        let (_, audit) = server.admin_call(Method::GET, "/audit", None).await;
        let found = audit["entries"].as_array().and_then(|entries| {
            entries
                .iter()
                .find(|e| {
                    e["action"] == "providers.reloaded"
                        && e["details"]["loaded"]
                            .as_array()
                            .is_some_and(|l| l.iter().any(|n| n == "versioned"))
                })
                .cloned()
        });
        if let Some(entry) = found {
            break entry;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no audited watcher reload: {audit}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(entry["actor"], "plugins directory watcher", "{entry}");

    let member = server.member_token(&["p"]).await;
    let broken_error = |listing: &serde_json::Value| {
        listing["providers"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "broken"))
            .and_then(|p| p["last_error"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let dir = plugins.path().display().to_string();
    let (_, listing) = server.admin_call(Method::GET, "/providers", None).await;
    let admin_view = broken_error(&listing);
    assert!(admin_view.contains(&dir), "{listing}");
    assert!(
        admin_view.contains("not a WebAssembly component (bad magic number)"),
        "{admin_view}"
    );
    let (_, listing) = server
        .call(Method::GET, "/providers", Some(&member), None)
        .await;
    assert_eq!(
        broken_error(&listing),
        "broken.wasm: not a WebAssembly component (bad magic number)",
        "{listing}"
    );
    server.stop().await;
}
