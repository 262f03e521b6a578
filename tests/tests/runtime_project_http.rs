//! project-http from a real component to a real HTTP server on loopback, through the local
//! executor's connection: plain requests, host-resolved bearer auth, SSE, and the port
//! grant.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use rdev::ports::CodeAgent;
use rdev_tests::harness::plugins::test_plugins_dir;
use rdev_tests::harness::runtime::{MapSecrets, install, run, runtime_with_secrets};

const LONG: Duration = Duration::from_secs(600);

async fn serve() -> (u16, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route("/hello", get(|| async { "hi" }))
        .route(
            "/auth",
            get(|headers: HeaderMap| async move {
                let ok = headers
                    .get(header::AUTHORIZATION)
                    .is_some_and(|v| v == "Bearer s3cret");
                if ok {
                    (StatusCode::OK, "authorized")
                } else {
                    (StatusCode::UNAUTHORIZED, "no")
                }
            }),
        )
        .route(
            "/events",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    ": hello\n\ndata: one\n\nevent: x\nid: 2\ndata: two\n\ndata: thr\ndata: ee\n\n",
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("address").port();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, server)
}

async fn ask(agent: &dyn CodeAgent, prompt: &str) -> String {
    let r = run(prompt, LONG, 16);
    agent
        .execute(r.execution)
        .await
        .expect("runs")
        .final_text
        .unwrap_or_default()
}

#[tokio::test]
async fn a_granted_port_serves_requests_auth_and_events() {
    let (port, server) = serve().await;
    let work = tempfile::tempdir().expect("tempdir");
    let plugins = tempfile::tempdir().expect("tempdir");
    install(&test_plugins_dir(), "hostile", plugins.path(), "web", None);
    let manifest = plugins.path().join("web.toml");
    let text = std::fs::read_to_string(&manifest)
        .expect("read")
        .replace(
            "project_http_ports = []",
            &format!("project_http_ports = [{port}]"),
        )
        .replace("credentials = []", "credentials = [\"TOKEN\"]");
    std::fs::write(&manifest, text).expect("write");
    let secrets = MapSecrets(HashMap::from([("TOKEN".to_owned(), "s3cret".to_owned())]));
    let runtime = runtime_with_secrets(work.path(), LONG, secrets);
    let agent = runtime.load(&manifest).await.expect("loads");

    assert_eq!(
        ask(agent.as_ref(), &format!("http {port} /hello")).await,
        "200 hi"
    );
    assert_eq!(
        ask(agent.as_ref(), &format!("http {port} /auth")).await,
        "200 authorized"
    );
    assert_eq!(
        ask(agent.as_ref(), &format!("sse {port} /events")).await,
        "one,two,thr\nee"
    );
    server.abort();
}

#[tokio::test]
async fn a_port_that_is_not_granted_is_denied() {
    let (port, server) = serve().await;
    let work = tempfile::tempdir().expect("tempdir");
    let runtime = runtime_with_secrets(work.path(), LONG, MapSecrets::default());
    let agent = runtime
        .load(&test_plugins_dir().join("hostile.toml"))
        .await
        .expect("loads");
    for mode in ["http", "sse"] {
        let text = ask(agent.as_ref(), &format!("{mode} {port} /hello")).await;
        assert!(text.starts_with("denied: port"), "{mode}: {text}");
    }
    server.abort();
}
