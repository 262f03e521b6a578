//! The opencode provider on ABI 0.2.0 with a person in the loop: a real `rdev serve`
//! (SQLite and PostgreSQL, confined like production) that runs the real `opencode serve` as
//! the plugin's service inside the project's sandbox, against the fake chat-completions
//! API, with no credential set. The fake model asks for a `bash` call that creates a file; the server's permission request
//! becomes an approval decided over HTTP, and the effect (or its absence) is looked for in
//! the workspace. What the model was told is read from the requests the fake received.

use std::time::Duration;

use serde_json::{Value, json};

use rdev_tests::doubles::openai::{FakeOpenAi, Reply, touch_input};
use rdev_tests::harness::Database as Db;
use rdev_tests::harness::server::{Running, TestServer, assert_completed, assert_nobody_asked};
use rdev_tests::harness::{self, opencode, sandbox};

/// Generous: every command starts the real server and the machine may be loaded.
const WAIT: Duration = Duration::from_secs(120);
const PROJECT: &str = "p";

/// A server whose project `p` is configured to use the fake model API.
struct Host {
    server: TestServer,
    fake: FakeOpenAi,
}

async fn host(db: Db) -> Option<Host> {
    harness::on_path(opencode::install())?;
    let fake = FakeOpenAi::start().expect("fake API");
    let server = TestServer::on(db, sandbox::allowing(&fake.base_url())).await?;
    // No credential is set: the host mints the server's password.
    server.create_project(PROJECT).await;
    opencode::write_config(&server.workspace(PROJECT), &fake.base_url()).expect("opencode.json");
    Some(Host { server, fake })
}

impl Host {
    fn workspace(&self) -> std::path::PathBuf {
        self.server.workspace(PROJECT)
    }

    /// Scripts the model: one `bash` call that creates `file`, then a closing text.
    fn script_bash_touch(&self, file: &str) {
        let touch = Reply::tool_call("call_touch", "bash", touch_input(file));
        self.fake.push(touch).push(Reply::text("finished"));
    }

    /// Submits `prompt` to opencode in the project and follows its stream.
    async fn start(&self, prompt: &str) -> Running {
        let body = json!({
            "prompt": prompt,
            "model": format!("{}/{}", opencode::PROVIDER, opencode::MODEL),
        });
        self.server.run(PROJECT, "opencode", body).await
    }

    async fn decide(&self, approval: &Value, body: Value) {
        let id = approval["id"].as_str().expect("approval id");
        self.server.decide(id, body).await;
    }

    async fn finished(&self, id: &str) -> Value {
        self.server.finished_within(id, WAIT).await
    }

    /// Every text of the last conversation request the fake model received.
    fn model_was_last_told(&self) -> String {
        self.fake
            .stream_requests()
            .last()
            .map(|r| r.message_texts().join("\n"))
            .unwrap_or_default()
    }
}

async fn asked_then_allowed_the_tool_runs(db: Db) {
    let Some(host) = host(db).await else { return };
    host.script_bash_touch("approved-marker");
    let mut run = host.start("make the marker").await;
    let approval = run.approval(WAIT).await;
    assert_eq!(approval["tool"], "bash", "{approval}");
    assert_eq!(approval["input"]["command"], "touch approved-marker");
    assert_eq!(approval["summary"], "bash: touch approved-marker");
    assert_eq!(approval["tool_call_id"], "call_touch", "{approval}");
    assert_eq!(approval["status"], "pending");
    assert!(
        !host.workspace().join("approved-marker").exists(),
        "nothing runs before the decision"
    );
    host.decide(&approval, json!({"decision": "allow"})).await;
    assert_eq!(
        run.next("approval_resolved", WAIT).await["approval"]["status"],
        "allowed"
    );
    let command = host.finished(&run.id).await;
    assert_completed(&command, "finished");
    assert!(host.workspace().join("approved-marker").exists());
}

async fn denied_with_a_message_the_model_is_told(db: Db) {
    let Some(host) = host(db).await else { return };
    host.script_bash_touch("denied-marker");
    let mut run = host.start("make the marker").await;
    let approval = run.approval(WAIT).await;
    let message = "not in this repository, use /tmp";
    host.decide(&approval, json!({"decision": "deny", "message": message}))
        .await;
    let command = host.finished(&run.id).await;
    assert_eq!(command["status"], "completed", "{command}");
    assert!(!host.workspace().join("denied-marker").exists());
    let told = host.model_was_last_told();
    assert!(told.contains(message), "the model was told why: {told}");
}

rdev_tests::on_both_databases!(
    asked_then_allowed_the_tool_runs,
    denied_with_a_message_the_model_is_told,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nobody_decides_expires_as_a_denial() {
    let Some(host) = host(Db::Sqlite).await else {
        return;
    };
    let policy = json!({"mode": "ask", "timeout_secs": 1});
    host.server.put_policy("p", policy).await;
    host.script_bash_touch("late-marker");
    let mut run = host.start("make the marker").await;
    let resolved = run.next("approval_resolved", WAIT).await;
    assert_eq!(resolved["approval"]["status"], "expired", "{resolved}");
    let command = host.finished(&run.id).await;
    assert_eq!(command["status"], "completed", "{command}");
    assert!(!host.workspace().join("late-marker").exists());
    let told = host.model_was_last_told();
    assert!(told.contains("expired"), "the model was told why: {told}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_allows_without_asking() {
    let Some(host) = host(Db::Sqlite).await else {
        return;
    };
    let rule = json!({"rules": [{"tool": "bash", "pattern": "touch ruled-*", "action": "allow"}]});
    host.server.put_policy("p", rule).await;
    host.script_bash_touch("ruled-marker");
    let run = host.start("make the marker").await;
    let (events, command) = host.server.finish(run, WAIT).await;
    assert_nobody_asked(&events);
    let resolved: Vec<&Value> = events
        .iter()
        .filter(|(kind, _)| kind == "approval_resolved")
        .map(|(_, data)| data)
        .collect();
    assert_eq!(resolved.len(), 1, "the policy's decision is on the trail");
    assert_eq!(resolved[0]["approval"]["decided_by"], "policy");
    assert_eq!(command["status"], "completed", "{command}");
    assert!(host.workspace().join("ruled-marker").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_up_input_continues_the_same_session() {
    let Some(host) = host(Db::Sqlite).await else {
        return;
    };
    let words: Vec<String> = (0..30).map(|i| format!("w{i} ")).collect();
    host.fake
        .push(Reply::slow_text(&words, Duration::from_millis(100)));
    host.fake.push(Reply::text("answered the follow-up"));
    let mut run = host.start("tell a story").await;
    run.next("message", WAIT).await;
    host.server
        .send_input(&run.id, "and end it with a dragon")
        .await;
    let command = host.finished(&run.id).await;
    assert_completed(&command, "answered the follow-up");
    assert_eq!(command["result"]["num_turns"], 2, "{command}");
    let requests = host.fake.stream_requests();
    assert_eq!(requests.len(), 2, "one more turn for the follow-up");
    requests[1].assert_carries(&["tell a story", "and end it with a dragon"]);
    let session = command["result"]["session_id"].as_str().expect("session");
    assert!(session.starts_with("ses"), "{command}");
}
