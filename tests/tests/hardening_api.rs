//! #21 part 9, small correctness items, each through a real `rdev serve` over real sockets
//! with the real plugins (SQLite).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use rdev::domain::NewWebhook;
use rdev::domain::webhook::WebhookSecret;
use rdev_tests::harness::plugins::{plugins_dir, test_plugins_dir};
use rdev_tests::harness::runtime::{install, write_atomically};
use rdev_tests::harness::server::{ServeProcess, SseReader, TestServer, field_strings, json_of};
use rdev_tests::harness::webhook_receiver::WebhookReceiver;

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

/// A plugins directory with the real shell provider and the test-only hostile one.
fn shell_and_hostile() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("plugins dir");
    install(&plugins_dir(), "shell", dir.path(), "shell", None);
    install(&test_plugins_dir(), "hostile", dir.path(), "hostile", None);
    dir
}

/// Posts `body` to `/projects/{project}/{provider}` as the admin.
async fn post(server: &TestServer, path: &str, body: Value) -> (StatusCode, Value) {
    server.admin_call(Method::POST, path, Some(body)).await
}

#[tokio::test]
async fn a_stream_resumed_at_or_past_its_end_closes_at_once() {
    let server = TestServer::sqlite().await;
    let submitted = server.submit("resume", "shell", "echo hello").await;
    let (events, _) = server.follow(&submitted).await;
    let done = events.last().expect("events");
    assert_eq!(done.event.as_deref(), Some("done"), "{events:?}");
    let stream_url = submitted["stream_url"].as_str().expect("stream_url");
    let resume = |last: i64| {
        server
            .request(Method::GET, stream_url, Some(&server.admin))
            .header("Last-Event-ID", last.to_string())
            .send()
    };
    for last in [done.seq(), done.seq() + 5] {
        // A hanging stream would pass this timeout; 204 also stops an EventSource.
        let response = tokio::time::timeout(Duration::from_secs(10), async {
            let response = resume(last).await.expect("resumed");
            let status = response.status();
            (status, response.text().await.expect("body"))
        })
        .await
        .unwrap_or_else(|_| panic!("resuming after {last} did not close"));
        assert_eq!(response, (StatusCode::NO_CONTENT, String::new()), "{last}");
    }
    // One before the end still replays the `done` event.
    let response = resume(done.seq() - 1).await.expect("resumed");
    assert_eq!(response.status(), StatusCode::OK);
    let replay = SseReader::new(response).collect().await;
    assert_eq!(replay.len(), 1, "{replay:?}");
    assert_eq!(replay[0].seq(), done.seq());
    server.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_reused_with_another_body_is_refused() {
    let server = TestServer::sqlite().await;
    let send = |prompt: &'static str| {
        server
            .request(Method::POST, "/projects/idem/shell", Some(&server.admin))
            .header("Idempotency-Key", "key-1")
            .json(&json!({ "prompt": prompt }))
            .send()
    };
    let (status, first) = json_of(send("echo a").await.expect("sent")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, again) = json_of(send("echo a").await.expect("sent")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["command_id"], first["command_id"]);
    let (status, other) = json_of(send("echo b").await.expect("sent")).await;
    assert_eq!(
        (status, code(&other)),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
        "{other}"
    );
    let (_, page) = server
        .admin_call(Method::GET, "/projects/idem/commands", None)
        .await;
    assert_eq!(page["commands"].as_array().map(Vec::len), Some(1), "{page}");
    server.stop().await;
}

#[tokio::test]
async fn the_request_log_redacts_a_percent_encoded_access_token() {
    let serve = ServeProcess::start(
        &plugins_dir(),
        &[("RDEV_LOG", "info,rdev=debug,tower_http=debug")],
    )
    .await;
    for query in [
        "access%5Ftoken=rdev_leak_one",
        "%61ccess_token=rdev_leak_two",
    ] {
        let url = serve.url(&format!("/projects/p/events/c?{query}"));
        let response = serve.http.get(url).send().await.expect("sent");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // The request lines are written when the response is; give the writer a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while serve.logs().matches("[redacted]").count() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = serve.logs();
    assert!(
        logs.matches("access_token=[redacted]").count() >= 2,
        "{logs}"
    );
    assert!(
        !logs.contains("rdev_leak_"),
        "a token reached the log:\n{logs}"
    );
}

#[tokio::test]
async fn a_timeout_ends_failed_even_when_the_provider_honours_the_cancel() {
    let plugins = shell_and_hostile();
    let dir = plugins.path().to_owned();
    let server = TestServer::sqlite_with(|config| config.plugins_dir = Some(dir)).await;
    let (status, submitted) = post(
        &server,
        "/projects/slow/hostile",
        json!({"prompt": "wait-cancel", "timeout_secs": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{submitted}");
    let (events, command) = server.follow(&submitted).await;
    assert_eq!(command["status"], "failed", "{command}");
    let error = command["error"].as_str().unwrap_or_default();
    assert!(error.contains("timed out"), "{command}");
    let done = events.last().expect("events").json();
    assert_eq!(done["status"], "failed", "{done}");
    server.stop().await;
}

#[tokio::test]
async fn unknown_fields_in_request_bodies_are_refused() {
    let server = TestServer::sqlite().await;
    for (path, body) in [
        (
            "/projects/strict/shell",
            json!({"prompt": "echo hi", "timeout": 5}),
        ),
        (
            "/projects/strict/commands",
            json!({"prompt": "echo hi", "provider": "shell", "sesion_id": "s"}),
        ),
        (
            "/tokens",
            json!({"name": "t", "role": "admin", "expires": "never"}),
        ),
        ("/projects", json!({"id": "strict", "templte": "x"})),
    ] {
        let (status, answer) = post(&server, path, body).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::UNPROCESSABLE_ENTITY, "unknown_field"),
            "{path}: {answer}"
        );
        assert!(
            answer["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("unknown field")
        );
    }
    // Nothing was written: the project was never registered.
    server
        .as_admin()
        .get("/projects/strict", StatusCode::NOT_FOUND)
        .await;
    server.stop().await;
}

#[tokio::test]
async fn prompts_no_program_can_take_are_refused_at_submit() {
    let server = TestServer::sqlite().await;
    let (status, answer) = post(
        &server,
        "/projects/args/shell",
        json!({"prompt": "echo a\u{0}b"}),
    )
    .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::BAD_REQUEST, "invalid_prompt"),
        "{answer}"
    );
    // Over the kernel's 128 KiB per argument, under the API's 1 MiB.
    let long = format!("echo {}", "x".repeat(200 * 1024));
    let (status, answer) = post(&server, "/projects/args/shell", json!({ "prompt": long })).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNPROCESSABLE_ENTITY, "prompt_too_long"),
        "{answer}"
    );
    let detail = answer["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("shell") && detail.contains("131071"),
        "{detail}"
    );
    // Just under the limit still runs.
    let fits = format!("echo {}", "y".repeat(100 * 1024));
    let submitted = server.submit("args", "shell", &fits).await;
    let (_, command) = server.follow(&submitted).await;
    assert_eq!(command["status"], "completed", "{}", command["error"]);
    server.stop().await;
}

#[tokio::test]
async fn a_reload_reports_a_plugin_that_still_fails_as_failed() {
    let plugins = shell_and_hostile();
    install(&plugins_dir(), "shell", plugins.path(), "broken", None);
    write_atomically(&plugins.path().join("broken.wasm"), b"not a component");
    let dir = plugins.path().to_owned();
    let server = TestServer::sqlite_with(|config| config.plugins_dir = Some(dir)).await;
    let (status, report) = post(&server, "/providers/reload", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let failed = field_strings(&report["failed"], "name");
    assert_eq!(failed, ["broken"], "{report}");
    assert!(
        !report["unchanged"]
            .as_array()
            .expect("unchanged")
            .iter()
            .any(|n| n == "broken"),
        "{report}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_delivery_the_ssrf_guard_refuses_is_not_retried() {
    let receiver = WebhookReceiver::start().expect("receiver");
    let server = TestServer::sqlite_with(|config| {
        config.webhooks.poll_interval = Duration::from_millis(50);
        config.webhooks.retry.base = Duration::from_millis(50);
        config.webhooks.retry.max_delay = Duration::from_millis(100);
        config.webhooks.retry.max_attempts = 3;
    })
    .await;
    // Subscribed while the operator allowed private targets (or before a name re-resolved
    // to one): written to the store directly, since the API refuses them today.
    let port = receiver
        .url("/")
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut ids = Vec::new();
    for (n, host) in ["127.0.0.1", "localhost"].into_iter().enumerate() {
        let id = format!("wh-guarded-{n}");
        server
            .server()
            .state()
            .stores
            .webhooks
            .create_webhook(NewWebhook {
                id: id.clone(),
                project_id: "guarded".parse().expect("project id"),
                url: format!("http://{host}:{port}"),
                event_types: vec!["command.completed".into()],
                description: None,
                secret: WebhookSecret::from_random(&[7; 32]),
            })
            .await
            .expect("webhook stored");
        ids.push(id);
    }
    let submitted = server.submit("guarded", "shell", "true").await;
    server.follow(&submitted).await;
    for id in &ids {
        let path = format!("/projects/guarded/webhooks/{id}/deliveries");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let delivery = loop {
            let (_, page) = server.admin_call(Method::GET, &path, None).await;
            let first = page["deliveries"].get(0).cloned().unwrap_or(Value::Null);
            if first["status"] == "failed" || first["status"] == "delivered" {
                break first;
            }
            assert!(std::time::Instant::now() < deadline, "{page}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(delivery["status"], "failed", "{delivery}");
        let attempts = delivery["attempts"].as_array().expect("attempts");
        assert_eq!(attempts.len(), 1, "{id} was retried: {delivery}");
        let error = attempts[0]["error"].as_str().unwrap_or_default();
        assert!(error.contains("not allowed"), "{error}");
    }
    assert!(receiver.received().is_empty());
    server.stop().await;
}
