//! ACP's edge cases, which no real agent produces on demand, through a real, confined
//! `rdev serve` running the real `acp.wasm`: the agent is a scripted double
//! (`tests/acp-double/acp-agent-double`, Node, newline-delimited JSON-RPC 2.0 like a real
//! agent) added with a manifest like any ACP agent. Covered: a malformed line, an agent that
//! exits mid-prompt, a permission request after a cancel, and the client's `fs/*` methods
//! (advertised, confined to the workspace, `line`/`limit`, `..` and symlink escapes refused).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use rdev_tests::harness::Database as Db;
use rdev_tests::harness::server::TestServer;
use rdev_tests::harness::{self, plugins};

/// Generous for a loaded machine; every scenario ends far sooner or it is a hang.
const WAIT: Duration = Duration::from_secs(60);
const PROJECT: &str = "p";
const PROVIDER: &str = "acp-double";

/// The double's manifest: the shared component, the double as the agent program.
const MANIFEST: &str = r#"
name = "acp-double"
version = "0.1.0"
abi = "0.2.0"
description = "A scripted ACP agent for protocol edge cases"
component = "acp.wasm"

[options]
command = "acp-agent-double"
args = []
cancel_grace_ms = 5000

[grants]
exec = ["acp-agent-double", "pwd", "realpath", "cat", "dd"]
project_http_ports = []
credentials = []

[limits]
memory_mib = 128
max_timeout_secs = 600
"#;

struct Host {
    server: TestServer,
}

fn double() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("acp-double/acp-agent-double")
}

async fn host() -> Host {
    harness::put_on_path(&double());
    let dir = plugins::with_acp(&[("acp-double.toml", MANIFEST)]);
    let server = TestServer::with_plugins(Db::Sqlite, dir, |_| {})
        .await
        .expect("SQLite needs no server");
    let host = Host { server };
    let (status, body) = host
        .server
        .call(
            Method::POST,
            "/projects",
            Some(&host.server.admin),
            Some(json!({"id": PROJECT})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    std::fs::create_dir_all(host.workspace()).expect("workspace");
    host
}

impl Host {
    fn workspace(&self) -> PathBuf {
        self.server.workspace(PROJECT)
    }

    /// Runs `prompt` to its end: the command and the text of its message events.
    async fn run(&self, prompt: &str) -> (Value, String) {
        let run = self
            .server
            .run(PROJECT, PROVIDER, json!({"prompt": prompt}))
            .await;
        let id = run.id.clone();
        let events = run.rest(WAIT).await;
        let command = self.server.finished_within(&id, WAIT).await;
        let text = events
            .iter()
            .filter(|(kind, _)| kind == "message")
            .filter_map(|(_, data)| data["text"].as_str())
            .collect();
        (command, text)
    }

    /// Runs a script of client calls; the client's answers, in order.
    async fn calls(&self, script: Value) -> Vec<Value> {
        let (command, text) = self.run(&script.to_string()).await;
        assert_eq!(command["status"], "completed", "{command}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }
}

fn error_message(answer: &Value) -> &str {
    answer["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_line_fails_the_command_with_its_beginning() {
    let host = host().await;
    let started = Instant::now();
    let (command, _) = host.run("malformed").await;
    assert_eq!(command["status"], "failed", "{command}");
    let error = command["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("not JSON-RPC 2.0: this is not json-rpc at all {"),
        "{command}"
    );
    assert!(started.elapsed() < WAIT, "no hang");
    host.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_exits_mid_prompt_fails_the_command() {
    let host = host().await;
    let (command, text) = host.run("exit").await;
    assert_eq!(command["status"], "failed", "{command}");
    assert_eq!(text, "about to go", "the output before the exit is kept");
    let error = command["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("acp-agent-double closed its output before answering"),
        "{command}"
    );
    host.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permission_request_after_a_cancel_is_answered_cancelled() {
    let host = host().await;
    let mut run = host
        .server
        .run(
            PROJECT,
            PROVIDER,
            json!({"prompt": "permission after cancel"}),
        )
        .await;
    run.next("message", WAIT).await;
    let (status, body) = host
        .server
        .call(
            Method::POST,
            &format!("/commands/{}/cancel", run.id),
            Some(&host.server.admin),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let (events, command) = host.server.finish(run, WAIT).await;
    assert_eq!(command["status"], "cancelled", "{command}");
    assert!(
        !events.iter().any(|(kind, _)| kind == "approval_requested"),
        "nobody is asked once the command is cancelled: {events:?}"
    );
    let answer = std::fs::read_to_string(host.workspace().join("permission-answer.json"))
        .expect("the double wrote the answer it got");
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(
        answer,
        json!({"result": {"outcome": {"outcome": "cancelled"}}}),
        "never allowed"
    );
    host.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_advertises_text_files_and_no_terminal() {
    let host = host().await;
    let (command, text) = host.run("capabilities").await;
    assert_eq!(command["status"], "completed", "{command}");
    let capabilities: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        capabilities,
        json!({"fs": {"readTextFile": true, "writeTextFile": true}, "terminal": false})
    );
    host.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_read_and_written_inside_the_workspace() {
    let host = host().await;
    let ws = host.workspace();
    std::fs::create_dir_all(ws.join("src")).expect("dir");
    std::fs::write(ws.join("src/notes.txt"), "one\ntwo\nthree\nfour\n").expect("file");
    let answers = host
        .calls(json!([
            {"method": "fs/read_text_file", "params": {"path": "src/notes.txt"}},
            {"method": "fs/read_text_file", "params": {"path": "src/notes.txt", "line": 2, "limit": 2}},
            {"method": "fs/write_text_file", "params": {"path": "src/new.txt", "content": "written\n"}},
            {"method": "fs/write_text_file", "params": {"path": "src/notes.txt", "content": "short"}},
            {"method": "fs/read_text_file", "params": {"path": "src/../src/new.txt"}},
            {"method": "fs/read_text_file", "params": {"path": "missing.txt"}},
            {"method": "fs/read_text_file", "params": {"path": "a.txt", "line": 0}},
            {"method": "terminal/create", "params": {"command": "true"}},
        ]))
        .await;
    assert_eq!(
        answers[0],
        json!({"result": {"content": "one\ntwo\nthree\nfour\n"}})
    );
    assert_eq!(answers[1], json!({"result": {"content": "two\nthree\n"}}));
    assert_eq!(answers[2], json!({"result": {}}));
    assert_eq!(answers[3], json!({"result": {}}));
    assert_eq!(answers[4], json!({"result": {"content": "written\n"}}));
    assert_eq!(
        std::fs::read_to_string(ws.join("src/new.txt")).expect("new"),
        "written\n"
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("src/notes.txt")).expect("replaced"),
        "short",
        "a write replaces the whole file"
    );
    assert_eq!(answers[5]["error"]["code"], -32000, "{:?}", answers[5]);
    assert!(
        error_message(&answers[5]).contains("missing.txt"),
        "{:?}",
        answers[5]
    );
    assert_eq!(answers[6]["error"]["code"], -32602, "{:?}", answers[6]);
    assert_eq!(answers[7]["error"]["code"], -32601, "{:?}", answers[7]);
    host.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapes_from_the_workspace_are_refused() {
    let host = host().await;
    let ws = host.workspace();
    let outside = ws.parent().expect("projects dir").join("outside");
    std::fs::create_dir_all(&outside).expect("outside dir");
    std::fs::write(outside.join("secret.txt"), "not for the agent").expect("secret");
    std::os::unix::fs::symlink(&outside, ws.join("link")).expect("symlink");
    let absolute_outside = outside.join("written.txt");
    let answers = host
        .calls(json!([
            {"method": "fs/write_text_file", "params": {"path": "../outside/written.txt", "content": "x"}},
            {"method": "fs/write_text_file", "params": {"path": absolute_outside, "content": "x"}},
            {"method": "fs/write_text_file", "params": {"path": "link/written.txt", "content": "x"}},
            {"method": "fs/read_text_file", "params": {"path": "link/secret.txt"}},
            {"method": "fs/read_text_file", "params": {"path": "/etc/hostname"}},
        ]))
        .await;
    for answer in &answers {
        assert_eq!(answer["error"]["code"], -32000, "{answer}");
        assert!(
            error_message(answer).contains("outside the workspace"),
            "{answer}"
        );
    }
    assert_eq!(answers.len(), 5);
    assert!(
        !outside.join("written.txt").exists(),
        "nothing was written outside"
    );
    host.server.stop().await;
}
