//! project-http from a real component to a real HTTP server on loopback, through the local
//! executor's connection: plain requests, host-resolved bearer auth, SSE, and the port
//! grant.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use rdev_tests::harness::plugins::test_plugins_dir;
use rdev_tests::harness::runtime::{
    MapSecrets, edit_file, final_text, runtime_with_secrets, serve_loopback, web_guest,
};

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
    serve_loopback(app).await
}

#[tokio::test]
async fn a_granted_port_serves_requests_auth_and_events() {
    let (port, server) = serve().await;
    let work = tempfile::tempdir().expect("tempdir");
    let plugins = tempfile::tempdir().expect("tempdir");
    let manifest = web_guest(plugins.path(), port);
    edit_file(&manifest, |text| {
        text.replace("credentials = []", "credentials = [\"TOKEN\"]")
    });
    let secrets = MapSecrets(HashMap::from([("TOKEN".to_owned(), "s3cret".to_owned())]));
    let runtime = runtime_with_secrets(work.path(), LONG, secrets);
    let agent = runtime.load(&manifest).await.expect("loads");

    assert_eq!(
        final_text(agent.as_ref(), &format!("http {port} /hello"), LONG).await,
        "200 hi"
    );
    assert_eq!(
        final_text(agent.as_ref(), &format!("http {port} /auth"), LONG).await,
        "200 authorized"
    );
    assert_eq!(
        final_text(agent.as_ref(), &format!("sse {port} /events"), LONG).await,
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
        let text = final_text(agent.as_ref(), &format!("{mode} {port} /hello"), LONG).await;
        assert!(text.starts_with("denied: port"), "{mode}: {text}");
    }
    server.abort();
}
