//! The JavaScript example (`examples/js-provider`, componentize-js), built with its documented
//! command and run through the HTTP API of a real `rdev serve`: a second language ships.

use std::time::Instant;

use rdev_tests::harness::examples;
use rdev_tests::harness::server::{ServeProcess, json_of};
use rdev_tests::harness::skip_or_fail;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn the_javascript_example_runs_through_the_http_api() {
    let built = match examples::build_js("js-provider", "js-echo.wasm") {
        Ok(built) => built,
        Err(reason) => return skip_or_fail(&format!("building the JavaScript example: {reason}")),
    };
    let plugins = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&built.component, plugins.path().join("js-echo.wasm")).expect("copy component");
    std::fs::copy(&built.manifest, plugins.path().join("js-echo.toml")).expect("copy manifest");
    let started = Instant::now();
    let server = ServeProcess::start(plugins.path(), &[]).await;
    eprintln!(
        "rdev serve ready with js-echo after {:?}",
        started.elapsed()
    );
    assert_eq!(
        server.served_version("js-echo").await.as_deref(),
        Some("0.1.0"),
        "{}",
        server.logs()
    );

    let command = server.run_to_end("js", "js-echo", "hello").await;
    assert_eq!(command["status"], "completed", "{command}");
    assert_eq!(command["result"]["final_text"], "js: hello", "{command}");
    let stream = command["stream_url"].as_str().expect("stream url");
    let response = server
        .admin(Method::GET, stream)
        .send()
        .await
        .expect("GET stream");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.text().await.expect("stream body");
    assert!(
        body.contains("event: message") && body.contains("js: hello"),
        "{body}"
    );
    let (status, providers) = json_of(
        server
            .admin(Method::GET, "/providers")
            .send()
            .await
            .expect("GET"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        providers.to_string().contains("written in JavaScript"),
        "{providers}"
    );
}
