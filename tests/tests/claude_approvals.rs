//! The claude provider on ABI 0.2.0 with a person in the loop: a real `rdev serve`
//! (SQLite and PostgreSQL, confined like production), the real `claude` CLI in its
//! bidirectional stream-json mode against the fake Messages API. The fake model asks for a
//! Bash call that creates a file; the CLI's permission prompt becomes an approval that is
//! decided over HTTP, and the effect (or its absence) is looked for in the workspace. What
//! the model was told is read from the requests the fake received.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use rdev_tests::doubles::anthropic::{FakeAnthropic, Reply, all_texts, touch_input};
use rdev_tests::harness::Database as Db;
use rdev_tests::harness::server::{Running, TestServer, assert_completed, assert_nobody_asked};
use rdev_tests::harness::{self, claude, sandbox};

/// Generous: every command starts the real CLI and the machine may be loaded.
const WAIT: Duration = Duration::from_secs(90);

/// A server whose credential store points the CLI at the fake API.
struct Host {
    server: TestServer,
    fake: FakeAnthropic,
}

async fn host(db: Db) -> Option<Host> {
    harness::on_path(claude::install())?;
    let fake = FakeAnthropic::start().expect("fake API");
    let server = TestServer::on(db, sandbox::allowing(&fake.base_url())).await?;
    claude::store_credentials(&server, &fake, "sk-ant-approvals-test").await;
    Some(Host { server, fake })
}

impl Host {
    /// Scripts the model: one Bash call that creates `file`, then a closing text.
    fn script_bash_touch(&self, file: &str) {
        let touch = Reply::tool_use("toolu_touch", "Bash", touch_input(file));
        self.fake.push(touch).push(Reply::text("finished"));
    }

    /// Submits `body` to claude of `project` and follows its stream.
    async fn start(&self, project: &str, body: Value) -> Running {
        self.server.run(project, "claude", body).await
    }

    /// Waits until the command ends; its view.
    async fn finished(&self, id: &str) -> Value {
        self.server.finished_within(id, WAIT).await
    }

    /// The text of the one tool result the model received in its last request, asserting
    /// that it reported an error.
    fn tool_error(&self) -> String {
        let results = self.last_tool_results();
        assert_eq!(results.len(), 1, "{results:?}");
        assert!(results[0].2, "the tool call failed: {results:?}");
        results[0].1.clone()
    }

    /// The tool results the model received in its last request.
    fn last_tool_results(&self) -> Vec<(String, String, bool)> {
        self.fake
            .stream_requests()
            .last()
            .map(|r| r.tool_results())
            .unwrap_or_default()
    }
}

async fn asked_then_allowed_the_tool_runs(db: Db) {
    let Some(host) = host(db).await else { return };
    host.script_bash_touch("approved-marker");
    let mut run = host.start("p", json!({"prompt": "make the marker"})).await;
    let approval = run.approval(WAIT).await;
    assert_eq!(approval["tool"], "Bash", "{approval}");
    assert_eq!(approval["input"]["command"], "touch approved-marker");
    assert_eq!(approval["summary"], "Bash: touch approved-marker");
    assert_eq!(approval["status"], "pending");
    assert!(
        !host.server.workspace("p").join("approved-marker").exists(),
        "nothing runs before the decision"
    );
    let id = approval["id"].as_str().expect("id");
    host.server.decide(id, json!({"decision": "allow"})).await;
    assert_eq!(
        run.next("approval_resolved", WAIT).await["approval"]["status"],
        "allowed"
    );
    let command = host.finished(&run.id).await;
    assert_completed(&command, "finished");
    assert!(host.server.workspace("p").join("approved-marker").exists());
    let results = host.last_tool_results();
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(!results[0].2, "the tool ran without error: {results:?}");
}

async fn denied_with_a_message_the_model_is_told(db: Db) {
    let Some(host) = host(db).await else { return };
    host.script_bash_touch("denied-marker");
    let mut run = host.start("p", json!({"prompt": "make the marker"})).await;
    let approval = run.approval(WAIT).await;
    let id = approval["id"].as_str().expect("id");
    let message = "not in this repository, use /tmp";
    host.server
        .decide(id, json!({"decision": "deny", "message": message}))
        .await;
    let command = host.finished(&run.id).await;
    assert_eq!(command["status"], "completed", "{command}");
    assert!(!host.server.workspace("p").join("denied-marker").exists());
    let results = host.last_tool_results();
    assert_eq!(
        results,
        [("toolu_touch".to_owned(), message.to_owned(), true)],
        "the denial reached the model as the tool's error"
    );
}

async fn follow_up_input_reaches_the_model(db: Db) {
    let Some(host) = host(db).await else { return };
    let words: Vec<String> = (0..40).map(|i| format!("w{i} ")).collect();
    host.fake
        .push(Reply::slow_text(&words, Duration::from_millis(50)));
    host.fake.push(Reply::text("answered the follow-up"));
    let mut run = host.start("p", json!({"prompt": "tell a story"})).await;
    run.running(WAIT).await;
    let deadline = std::time::Instant::now() + WAIT;
    while host.fake.stream_requests().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the model was never asked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    host.server
        .send_input(&run.id, "and end it with a dragon")
        .await;
    let command = host.finished(&run.id).await;
    assert_completed(&command, "answered the follow-up");
    let requests = host.fake.stream_requests();
    assert_eq!(requests.len(), 2, "one more turn for the follow-up");
    requests[1].assert_carries(&["tell a story", "and end it with a dragon"]);
}

rdev_tests::on_both_databases!(
    asked_then_allowed_the_tool_runs,
    denied_with_a_message_the_model_is_told,
    follow_up_input_reaches_the_model,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_mode_never_asks_and_the_model_learns_why() {
    let Some(host) = host(Db::Sqlite).await else {
        return;
    };
    host.script_bash_touch("never-marker");
    let run = host
        .start(
            "p",
            json!({"prompt": "make the marker", "permissions": "deny"}),
        )
        .await;
    let (events, command) = host.server.finish(run, WAIT).await;
    assert_nobody_asked(&events);
    assert_eq!(command["status"], "completed", "{command}");
    assert!(!host.server.workspace("p").join("never-marker").exists());
    let error = host.tool_error();
    assert!(error.contains("denied"), "{error}");
    let (_, approvals) = host
        .server
        .admin_call(Method::GET, "/projects/p/approvals", None)
        .await;
    assert_eq!(
        approvals["approvals"][0]["decided_by"], "policy",
        "{approvals}"
    );
    assert!(!all_texts(&host.fake.stream_requests()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_allows_without_asking() {
    let Some(host) = host(Db::Sqlite).await else {
        return;
    };
    host.server.create_project("p").await;
    let rule = json!({"rules": [{"tool": "Bash", "pattern": "touch ruled-*", "action": "allow"}]});
    host.server.put_policy("p", rule).await;
    host.script_bash_touch("ruled-marker");
    let run = host.start("p", json!({"prompt": "make the marker"})).await;
    let (events, command) = host.server.finish(run, WAIT).await;
    assert_nobody_asked(&events);
    assert_eq!(command["status"], "completed", "{command}");
    assert!(host.server.workspace("p").join("ruled-marker").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_asking_cancels_the_command_and_the_approval() {
    let Some(host) = host(Db::Sqlite).await else {
        return;
    };
    host.script_bash_touch("cancelled-marker");
    let mut run = host.start("p", json!({"prompt": "make the marker"})).await;
    let approval = run.approval(WAIT).await;
    let id = approval["id"].as_str().expect("id");
    let (status, body) = host.server.cancel(&run.id).await;
    assert!(status.is_success(), "{status} {body}");
    let command = host.finished(&run.id).await;
    assert_eq!(command["status"], "cancelled", "{command}");
    let (_, approval) = host
        .server
        .admin_call(Method::GET, &format!("/approvals/{id}"), None)
        .await;
    assert_eq!(approval["status"], "cancelled", "{approval}");
    assert!(!host.server.workspace("p").join("cancelled-marker").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nobody_decides_expires_as_a_denial_the_model_is_told() {
    let Some(host) = host(Db::Sqlite).await else {
        return;
    };
    host.server.create_project("p").await;
    let policy = json!({"mode": "ask", "timeout_secs": 1});
    host.server.put_policy("p", policy).await;
    host.script_bash_touch("expired-marker");
    let mut run = host.start("p", json!({"prompt": "make the marker"})).await;
    let approval = run.approval(WAIT).await;
    let id = approval["id"].as_str().expect("id");
    let resolved = run.next("approval_resolved", WAIT).await;
    assert_eq!(resolved["approval"]["status"], "expired", "{resolved}");
    assert_eq!(resolved["approval"]["decided_by"], "host", "{resolved}");
    let command = host.finished(&run.id).await;
    assert_eq!(command["status"], "completed", "{command}");
    assert!(!host.server.workspace("p").join("expired-marker").exists());
    let error = host.tool_error();
    assert!(
        error.starts_with("expired: nobody decided"),
        "the expiry reached the model as the tool's error: {error}"
    );
    let path = format!("/approvals/{id}");
    let late = json!({"decision": "allow"});
    host.server
        .as_admin()
        .post(&path, late, StatusCode::CONFLICT)
        .await;
}
