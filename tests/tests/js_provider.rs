//! The JavaScript example (`examples/js-provider`, componentize-js), built with its documented
//! command and run through the HTTP API of a real `rdev serve`: a second language ships.

use std::time::Instant;

use rdev_tests::harness::examples;
use rdev_tests::harness::server::{ServeProcess, assert_completed};
use rdev_tests::harness::skip_or_fail;

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
    assert_completed(&command, "js: hello");
    let stream = command["stream_url"].as_str().expect("stream url");
    let events = server.open_stream(stream).await.collect().await;
    let kinds: Vec<_> = events.iter().filter_map(|e| e.event.as_deref()).collect();
    assert!(kinds.contains(&"message"), "{events:?}");
    assert!(
        events.iter().any(|e| e.data.contains("js: hello")),
        "{events:?}"
    );
    let providers = server.get("/providers").await;
    assert!(
        providers.to_string().contains("written in JavaScript"),
        "{providers}"
    );
}
