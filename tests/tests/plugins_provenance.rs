//! Every command records which build of its provider ran it (name, version, ABI, component
//! sha256), through a real `rdev serve`: on the command (`GET /commands/{id}`, `rdev logs`)
//! and in its `command.started`/`command.finished` audit entries. After a hot reload to a
//! new version, new commands show the new build and earlier ones keep the old.

use std::path::Path;

use rdev::domain::ContentDigest;
use rdev_tests::harness::bin::rdev;
use rdev_tests::harness::plugins::test_plugins_dir;
use rdev_tests::harness::runtime::install;
use rdev_tests::harness::server::ServeProcess;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Lowercase hex sha256 of the installed component `ver.wasm`.
fn component_sha256(plugins: &Path) -> String {
    let bytes = std::fs::read(plugins.join("ver.wasm")).expect("component installed");
    ContentDigest::of(&bytes).hex().to_owned()
}

/// Runs one command on `ver` to its end and returns it as `GET /commands/{id}` shows it.
async fn run_once(server: &ServeProcess) -> Value {
    let command = server.run_to_end("provenance", "ver", "quick").await;
    assert_eq!(command["status"], "completed", "{command}");
    command
}

/// The audit entries of command `id` with `action`.
async fn audited(server: &ServeProcess, id: &str, action: &str) -> Vec<Value> {
    let page = server
        .get(&format!("/audit?command_id={id}&action={action}"))
        .await;
    page["entries"].as_array().cloned().unwrap_or_default()
}

/// What `rdev logs <id>` prints on stderr.
fn rdev_logs(server: &ServeProcess, id: &str) -> String {
    let output = std::process::Command::new(rdev())
        .args(["logs", id])
        .env("RDEV_URL", &server.base)
        .env("RDEV_TOKEN", &server.admin)
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("run rdev logs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn assert_provenance(server: &ServeProcess, command: &Value, version: &str, sha: &str) {
    let expected = json!({
        "provider": "ver",
        "version": version,
        "abi": command["provenance"]["abi"],
        "component_sha256": sha,
    });
    assert_eq!(command["provenance"], expected, "{command}");
    assert!(
        command["provenance"]["abi"]
            .as_str()
            .is_some_and(|abi| !abi.is_empty())
    );
    let id = command["id"].as_str().expect("id");
    for action in ["command.started", "command.finished"] {
        let entries = audited(server, id, action).await;
        assert_eq!(entries.len(), 1, "{action}: {entries:?}");
        assert_eq!(entries[0]["details"]["provenance"], expected, "{action}");
    }
}

#[tokio::test]
async fn commands_record_the_build_that_ran_them_across_a_hot_reload() {
    let source = test_plugins_dir();
    let plugins = tempfile::tempdir().expect("tempdir");
    install(
        &source,
        "versioned-v1",
        plugins.path(),
        "ver",
        Some("1.0.0"),
    );
    let v1_sha = component_sha256(plugins.path());
    let server = ServeProcess::start(plugins.path(), &[]).await;

    let first = run_once(&server).await;
    assert_eq!(first["result"]["final_text"], "1.0.0");
    assert_provenance(&server, &first, "1.0.0", &v1_sha).await;
    let first_id = first["id"].as_str().expect("id");
    let printed = rdev_logs(&server, first_id);
    assert!(
        printed.contains("[provider ver 1.0.0 (abi ") && printed.contains(&v1_sha),
        "rdev logs shows the build: {printed}"
    );

    install(
        &source,
        "versioned-v2",
        plugins.path(),
        "ver",
        Some("2.0.0"),
    );
    let v2_sha = component_sha256(plugins.path());
    assert_ne!(v1_sha, v2_sha);
    let (status, reload) = server
        .admin_call(Method::POST, "/providers/reload", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{reload}");

    let second = run_once(&server).await;
    assert_eq!(second["result"]["final_text"], "2.0.0");
    assert_provenance(&server, &second, "2.0.0", &v2_sha).await;
    // The earlier command still names the build that ran it.
    let again = server.finished(first_id).await;
    assert_provenance(&server, &again, "1.0.0", &v1_sha).await;
}
