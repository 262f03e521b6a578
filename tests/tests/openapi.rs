//! The OpenAPI document against the real server: every route it serves is documented and
//! every documented operation is served, and schemathesis fuzzes the real server from the
//! document, failing on any 5xx or any response that does not match its documented schema.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use rdev_tests::harness::plugins::plugins_dir;
use rdev_tests::harness::server::TestServer;
use rdev_tests::harness::skip_or_fail;

/// Methods the API could use; everything else is neither routed nor documented.
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

async fn document(server: &TestServer) -> Value {
    let response = server
        .request(Method::GET, "/openapi.json", None)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "the document is JSON"
    );
    response.json().await.expect("the document is JSON")
}

/// A concrete path for a template: a syntactically valid value for every parameter.
fn concrete(template: &str) -> String {
    template
        .replace("{id}", "p1")
        .replace("{provider}", "shell")
        .replace("{stream_id}", "cmd-0190f0a0b0c07d8e9f00112233445566")
        .replace("{name}", "SOME_KEY")
}

/// The router files, which must register routes only through `utoipa_axum::routes!`: axum
/// cannot list its routes, so this is what keeps an undocumented route from being added.
fn api_sources() -> Vec<(PathBuf, String)> {
    let dir = xtask::workspace_root().join("host/src/api");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable source");
            (path, text)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn routes_are_only_registered_with_their_documentation() {
    let files = api_sources();
    assert!(files.len() > 5, "found the API sources");
    for (path, text) in &files {
        for forbidden in [
            ".route(",
            ".route_service(",
            ".nest(",
            ".nest_service(",
            "axum::routing",
        ] {
            assert!(
                !text.contains(forbidden),
                "{} uses `{forbidden}`: register routes with utoipa_axum::routes! and a \
                 #[utoipa::path] so the OpenAPI document lists them",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn every_documented_operation_is_served_and_nothing_else_is() {
    let server = TestServer::sqlite().await;
    let doc = document(&server).await;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "OpenAPI 3.1: {}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/projects",
        "/projects/{id}",
        "/projects/{id}/commands",
        "/projects/{id}/{provider}",
        "/projects/{id}/events/{stream_id}",
        "/projects/{id}/ci",
        "/commands/{id}",
        "/commands/{id}/cancel",
        "/providers",
        "/providers/reload",
        "/providers/install",
        "/credentials",
        "/credentials/{name}",
        "/audit",
        "/audit/verify",
        "/audit/checkpoint",
        "/tokens",
        "/tokens/{id}",
        "/templates",
    ];
    for path in expected {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
    let mut operations = 0;
    for (template, item) in paths {
        let url = concrete(template);
        for method in METHODS {
            let documented = item.get(method);
            let response = server
                .request(method.to_uppercase().parse().expect("method"), &url, None)
                .send()
                .await
                .expect("request sent");
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let Some(operation) = documented else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{} {template} is served but not documented: {body}",
                    method.to_uppercase()
                );
                continue;
            };
            operations += 1;
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED && body["code"] != "route_not_found",
                "{} {template} is documented but not served ({status}: {body})",
                method.to_uppercase()
            );
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            if secured {
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{} {template} is documented as secured",
                    method.to_uppercase()
                );
                assert!(
                    operation["responses"]["401"]["content"]["application/problem+json"]
                        .is_object(),
                    "{} {template} documents its 401 as problem+json",
                    method.to_uppercase()
                );
            } else {
                assert!(
                    status.is_success() || status == StatusCode::SERVICE_UNAVAILABLE,
                    "{} {template} is documented as public but answered {status}",
                    method.to_uppercase()
                );
            }
        }
    }
    assert!(operations >= 27, "{operations} operations");

    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["access_token"]["in"], "query");
    let sse = &paths["/projects/{id}/events/{stream_id}"]["get"];
    assert!(sse["responses"]["200"]["content"]["text/event-stream"].is_object());
    // Lists carry previews (#21 part 5); the schema says how to tell.
    let command = &doc["components"]["schemas"]["CommandView"]["properties"];
    assert!(
        command["truncated"].is_object(),
        "CommandView documents truncated"
    );
    let problem = &doc["components"]["schemas"]["Problem"]["properties"];
    for field in ["type", "title", "status", "detail", "code", "error"] {
        assert!(problem[field].is_object(), "Problem documents {field}");
    }
    let ids: Vec<&str> = paths
        .values()
        .flat_map(|item| METHODS.iter().filter_map(|m| item.get(*m)))
        .map(|op| op["operationId"].as_str().expect("operationId"))
        .collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "operation ids are unique: {ids:?}");
    server.stop().await;
}

/// The schemathesis CLI: `RDEV_SCHEMATHESIS`, else `st` on PATH or in pip's user directory.
fn schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RDEV_SCHEMATHESIS") {
        return Some(PathBuf::from(path));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|d| d.join("st")).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".local/bin/st"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// The real plugins without `shell`: fuzzed prompts must not become shell command lines on
/// the machine running the tests. `git` (no shell, arguments only) and the agents stay.
fn plugins_without_shell() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary plugins dir");
    for entry in std::fs::read_dir(plugins_dir()).expect("plugins dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("file name").to_string_lossy();
        if name.starts_with("shell.") || !path.is_file() {
            continue;
        }
        std::fs::copy(&path, dir.path().join(&*name)).expect("plugin copied");
    }
    dir
}

/// Runs one schemathesis pass; returns its exit status and output.
async fn run_schemathesis(
    st: &Path,
    server: &TestServer,
    report: &Path,
    filter: &[&str],
) -> (bool, String) {
    let output = tokio::process::Command::new(st)
        .arg("run")
        .arg(server.url("/openapi.json"))
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args([
            "--max-examples",
            "25",
            "--seed",
            "20261124",
            "--workers",
            "1",
        ])
        .args(["--request-timeout", "20"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {}", server.admin))
        .arg("--report-dir")
        .arg(report)
        .args(["--no-color", "--suppress-health-check", "all"])
        .args(filter)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        // Its caches (`.schemathesis/`, `.hypothesis/`) go there, not into the checkout.
        .current_dir(report)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(150), output)
        .await
        .expect("schemathesis finishes within its time budget")
        .expect("schemathesis runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let Some(st) = schemathesis() else {
        skip_or_fail(
            "schemathesis is not installed (pip install --user schemathesis, or set RDEV_SCHEMATHESIS)",
        );
        return;
    };
    let plugins = plugins_without_shell();
    let plugins_path = plugins.path().to_owned();
    let server = TestServer::sqlite_with(|config| config.plugins_dir = Some(plugins_path)).await;
    let report = tempfile::tempdir().expect("report dir");

    // Two operations get a pass of their own, after the main one:
    // - the SSE stream: its stream stays open until its command ends, by design, so the
    //   stateful phase, which feeds it ids of real commands, would only wait; alone it is
    //   fuzzed with generated ids (tests/tests/api.rs covers real streams end to end);
    // - token revocation: the stateful phase lists tokens and revokes them, the fuzzer's
    //   own among them, after which every request is a 401.
    // `/providers/install` is not fuzzed: a generated reference that parses would make the
    // server contact that host on the network (and an unreachable registry is, rightly, a
    // 502); tests/tests/plugins_install.rs covers it against a local registry.
    let (main_ok, main_output) = run_schemathesis(
        &st,
        &server,
        report.path(),
        &[
            "--exclude-path",
            "/projects/{id}/events/{stream_id}",
            "--exclude-path",
            "/tokens/{id}",
            "--exclude-path",
            "/providers/install",
        ],
    )
    .await;
    let (revoke_ok, revoke_output) = run_schemathesis(
        &st,
        &server,
        report.path(),
        &[
            "--include-path",
            "/tokens/{id}",
            "--include-path",
            "/projects/{id}/events/{stream_id}",
        ],
    )
    .await;
    println!("{main_output}\n{revoke_output}");
    assert!(
        main_output.contains("Open API 3.1"),
        "schemathesis read the document as OpenAPI 3.1"
    );
    assert!(main_ok, "schemathesis found failures:\n{main_output}");
    assert!(revoke_ok, "schemathesis found failures:\n{revoke_output}");
    server.stop().await;
}
