//! A request's timeout fits its provider's ceiling (`limits.max_timeout_secs`) at submit,
//! through a real `rdev serve`: unasked, the server default shrinks to the ceiling and the
//! command runs; asked above it, the submission is refused with 422 and nothing is queued.

use rdev_tests::harness::plugins::test_plugins_dir;
use rdev_tests::harness::runtime::write_atomically;
use rdev_tests::harness::server::ServeProcess;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The manifest ceiling of the provider under test: below the server default of 1800 s.
const CEILING: u64 = 600;

/// A plugins directory holding `versioned-v1` as `capped`, its ceiling lowered to [`CEILING`].
fn capped_plugins() -> tempfile::TempDir {
    let source = test_plugins_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest =
        std::fs::read_to_string(source.join("versioned-v1.toml")).expect("manifest exists");
    let manifest: String = manifest
        .lines()
        .map(|line| {
            if line.starts_with("name = ") {
                "name = \"capped\"".to_owned()
            } else if line.starts_with("max_timeout_secs = ") {
                format!("max_timeout_secs = {CEILING}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(manifest.contains(&format!("max_timeout_secs = {CEILING}")));
    let wasm = std::fs::read(source.join("versioned-v1.wasm")).expect("component exists");
    write_atomically(&dir.path().join("capped.wasm"), &wasm);
    write_atomically(&dir.path().join("capped.toml"), manifest.as_bytes());
    dir
}

async fn submit(server: &ServeProcess, body: Value) -> (StatusCode, Value) {
    let path = "/projects/timeouts/capped";
    server.admin_call(Method::POST, path, Some(body)).await
}

#[tokio::test]
async fn timeouts_fit_the_providers_ceiling_at_submit() {
    let plugins = capped_plugins();
    let server = ServeProcess::start(plugins.path(), &[]).await;

    // No timeout asked: the default (1800 s) yields to the ceiling, and the command runs.
    let (status, submitted) = submit(&server, json!({"prompt": "quick"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{submitted}");
    let id = submitted["command_id"].as_str().expect("command id");
    let command = server.finished(id).await;
    assert_eq!(command["status"], "completed", "{command}");
    assert_eq!(command["timeout_secs"], CEILING, "{command}");
    assert_eq!(command["result"]["final_text"], "1.0.0", "{command}");

    // Exactly the ceiling is accepted as asked.
    let (status, submitted) =
        submit(&server, json!({"prompt": "quick", "timeout_secs": CEILING})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{submitted}");
    let id = submitted["command_id"].as_str().expect("command id");
    assert_eq!(server.finished(id).await["timeout_secs"], CEILING);

    // Above it: refused at submit, naming the ceiling, and nothing is queued.
    let (status, refused) = submit(
        &server,
        json!({"prompt": "quick", "timeout_secs": CEILING + 1}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_timeout", "{refused}");
    let message = refused["error"]["message"].as_str().expect("message");
    assert!(message.contains(&format!("{CEILING} s")), "{message}");
    assert!(message.contains("limits.max_timeout_secs"), "{message}");
    let listed = server.get("/projects/timeouts/commands").await;
    let count = listed["commands"].as_array().map(Vec::len);
    assert_eq!(count, Some(2), "only the two accepted commands: {listed}");
}
