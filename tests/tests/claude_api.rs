//! The claude provider through the product's front door: a real `rdev serve` process, the
//! API key and gateway URL put into its credential store over HTTP, prompts posted to
//! `/projects/{id}/claude`, events read over SSE, the real `claude` CLI against the fake
//! Messages API — and the key's value nowhere in events, command records, audit or logs.

use rdev_tests::doubles::anthropic::{FakeAnthropic, Reply};
use rdev_tests::harness::server::{ServeProcess, SseEvent};
use rdev_tests::harness::{self, claude, plugins, sandbox};
use serde_json::{Value, json};

/// A key that must reach the CLI and nothing else.
const SECRET: &str = "sk-ant-api-e2e-7c41d9b2-secret-value";

/// Posts a prompt and reads the command's whole event stream (it ends after `done`).
async fn prompt(server: &ServeProcess, body: Value) -> (String, Vec<SseEvent>) {
    let submitted = server.submit("greeter", "claude", body).await;
    let id = submitted["command_id"].as_str().expect("command id");
    let stream_url = submitted["stream_url"].as_str().expect("url");
    let events = server.open_stream(stream_url).await.collect().await;
    (id.to_owned(), events)
}

fn texts(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event.as_deref() == Some("message"))
        .filter_map(|e| e.json()["text"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn prompt_and_resume_over_http_with_the_key_in_the_credential_store() {
    if harness::on_path(claude::install()).is_none() {
        return;
    }
    let fake = FakeAnthropic::start().expect("fake API");
    // Confined, the CLI reaches the fake API only because it is on the allow-list.
    let allow = sandbox::allow_rule(&fake.base_url());
    let server =
        ServeProcess::start(&plugins::plugins_dir(), &[("RDEV_ALLOW_HOSTS", &allow)]).await;
    server.put_credential("ANTHROPIC_API_KEY", SECRET).await;
    server
        .put_credential("ANTHROPIC_BASE_URL", &fake.base_url())
        .await;

    fake.push(Reply::text("Hello over HTTP"));
    let (first_id, first) = prompt(&server, json!({"prompt": "say hello"})).await;
    let done = first.last().expect("events");
    assert_eq!(done.event.as_deref(), Some("done"), "{first:?}");
    assert_eq!(done.json()["status"], "completed", "{first:?}");
    assert_eq!(texts(&first), ["Hello over HTTP"], "{first:?}");
    let stream = fake.stream_requests();
    assert_eq!(stream.len(), 1);
    assert_eq!(stream[0].headers["x-api-key"], SECRET);

    let command = server.get(&format!("/commands/{first_id}")).await;
    assert_eq!(command["status"], "completed", "{command}");
    let session = command["session_id"]
        .as_str()
        .expect("session id")
        .to_owned();

    fake.push(Reply::text("Still here"));
    let (second_id, second) = prompt(
        &server,
        json!({"prompt": "and now?", "session_id": session}),
    )
    .await;
    let done = second.last().expect("events");
    assert_eq!(done.json()["status"], "completed", "{second:?}");
    assert_eq!(texts(&second), ["Still here"]);
    // The resumed conversation carries the first turn.
    fake.stream_requests()[1].assert_carries(&["say hello", "Hello over HTTP"]);
    let resumed = server.get(&format!("/commands/{second_id}")).await;
    assert_eq!(resumed["session_id"].as_str(), Some(session.as_str()));

    // Everything rdev stored or printed: both streams replayed from the start, both command
    // records, the audit trail and the process's logs.
    let mut stored = Vec::new();
    for id in [&first_id, &second_id] {
        let replay = format!("/projects/greeter/events/{id}");
        let events = server.open_stream(&replay).await.collect().await;
        assert!(events.len() >= 3, "{events:?}");
        stored.extend(events.into_iter().map(|e| e.data));
        stored.push(server.get(&format!("/commands/{id}")).await.to_string());
    }
    let audit = server.get("/audit").await.to_string();
    assert!(audit.contains("ANTHROPIC_API_KEY"), "{audit}");
    stored.push(audit);
    let logs = server.logs();
    assert!(logs.contains("rdev listening"), "{logs}");
    stored.push(logs);
    for text in &stored {
        assert!(!text.contains(SECRET), "the key leaked: {text}");
    }
}
