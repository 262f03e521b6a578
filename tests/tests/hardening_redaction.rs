//! #21 part 1: a granted credential that a provider reads and hands back reaches no one,
//! whatever way it takes out: events (also split across two of them, or hex-encoded), the
//! command's record, the `done` event, the audit trail, the webhook payload and the server
//! log. The real `rdev serve` binary with the hostile test plugin.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use rdev_tests::harness::plugins::with_test_guest;
use rdev_tests::harness::runtime::edit_file;
use rdev_tests::harness::server::ServeProcess;
use rdev_tests::harness::webhook_receiver::WebhookReceiver;

const SECRET: &str = "sk-live-Zx81-4fQ9-hardening-secret";

async fn admin_call(
    serve: &ServeProcess,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let (status, answer) = serve.admin_call(method, path, body).await;
    assert!(status.is_success(), "{path}: {status} {answer}");
    answer
}

/// Fails when `text` shows the secret as it is or hex-encoded.
fn assert_clean(place: &str, text: &str) {
    let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(
        !text.contains(SECRET) && !text.contains(&hex),
        "the secret reached {place}:\n{text}"
    );
}

#[tokio::test]
async fn a_returned_credential_is_redacted_everywhere_it_can_surface() {
    let plugins = with_test_guest("hostile");
    edit_file(&plugins.path().join("hostile.toml"), |text| {
        text.replace("exec = [\"true\"]", "exec = [\"printenv\"]")
            .replace("credentials = []", "credentials = [\"TOKEN\"]")
    });
    let serve =
        ServeProcess::start(plugins.path(), &[("RDEV_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    let receiver = WebhookReceiver::start().expect("receiver");

    admin_call(
        &serve,
        Method::PUT,
        "/credentials/TOKEN",
        Some(json!({"value": SECRET})),
    )
    .await;
    admin_call(
        &serve,
        Method::POST,
        "/projects/leaky/webhooks",
        Some(json!({"url": receiver.url("/hook"), "event_types": ["*"]})),
    )
    .await;
    let submitted = admin_call(
        &serve,
        Method::POST,
        "/projects/leaky/hostile",
        Some(json!({"prompt": "leak"})),
    )
    .await;
    let stream_url = submitted["stream_url"].as_str().expect("stream_url");
    let events = serve.open_stream(stream_url).await.collect().await;
    let done = events.last().expect("events").json();
    assert_eq!(done["status"], "failed", "{done}");

    // The provider did hand the value out: each place shows the redaction marker.
    let stream_text: String = events.iter().map(|e| e.data.clone()).collect();
    assert_clean("the event stream", &stream_text);
    let output: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("output"))
        .map(|e| e.json()["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(output, "token: [redacted] (end)", "{events:?}");
    assert!(stream_text.contains("hex [redacted]"), "{stream_text}");

    let id = submitted["command_id"].as_str().expect("command_id");
    let command = admin_call(&serve, Method::GET, &format!("/commands/{id}"), None).await;
    assert_clean("GET /commands/{id}", &command.to_string());
    assert_eq!(
        command["result"]["final_text"], "the key is [redacted]",
        "{command}"
    );
    assert_eq!(command["error"], "bad key [redacted]", "{command}");
    assert_eq!(command["session_id"], "[redacted]", "{command}");
    assert_eq!(
        command["result"]["details"]["key"], "[redacted]",
        "{command}"
    );
    let list = admin_call(&serve, Method::GET, "/projects/leaky/commands", None).await;
    assert_clean("the command list", &list.to_string());

    let received = receiver.wait_for(1, Duration::from_secs(30)).await;
    let payload = received[0].json();
    assert_clean("the webhook payload", &payload.to_string());
    assert_eq!(payload["data"]["error"], "bad key [redacted]", "{payload}");

    let audit = admin_call(&serve, Method::GET, "/audit?limit=500", None).await;
    assert_clean("the audit trail", &audit.to_string());
    let finished = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "command.finished")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        finished["details"]["error"], "bad key [redacted]",
        "{audit}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    while !serve.logs().contains("leaked [redacted]") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = serve.logs();
    assert!(logs.contains("leaked [redacted]"), "{logs}");
    assert_clean("the server log", &logs);
}
