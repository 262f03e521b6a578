//! ACP agents added with nothing but a manifest: the shipped `plugins/acp/agents/acp-claude.toml`
//! beside the one `acp.wasm`, run by a real, confined `rdev serve` with the real Claude ACP
//! adapter from npm (`@zed-industries/claude-agent-acp`, which drives the Claude Code CLI it
//! bundles) against the fake Messages API. The adapter's credentials come from the store
//! through the manifest's fixed options; a request cannot change what the manifest fixes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use rdev_tests::doubles::anthropic::{FakeAnthropic, Reply};
use rdev_tests::harness::Database as Db;
use rdev_tests::harness::server::{Running, TestServer, field_strings};
use rdev_tests::harness::{self, claude, npm, plugins, sandbox};

/// The adapter version the test pins; its package was renamed before (`claude-code-acp`).
const ADAPTER: (&str, &str, &str) = (
    "@zed-industries/claude-agent-acp",
    "0.23.1",
    "claude-agent-acp",
);
/// Generous: every command starts node twice (adapter, CLI) and the machine may be loaded.
const WAIT: Duration = Duration::from_secs(120);

struct Host {
    server: TestServer,
    fake: FakeAnthropic,
}

/// The agent manifest as shipped, for an operator to copy.
fn shipped_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/acp/agents/acp-claude.toml")
}

async fn host() -> Option<Host> {
    let (package, version, bin) = ADAPTER;
    let adapter = match npm::install(package, version, bin) {
        Ok(adapter) => adapter,
        Err(reason) => {
            harness::skip_or_fail(&reason);
            return None;
        }
    };
    harness::put_on_path(&adapter);
    // The operator's whole job: the shared component and one manifest per agent.
    let manifest = std::fs::read_to_string(shipped_manifest()).expect("manifest");
    let dir = plugins::with_acp(&[("acp-claude.toml", &manifest)]);
    let fake = FakeAnthropic::start().expect("fake API");
    let server =
        TestServer::with_plugins(Db::Sqlite, dir, sandbox::allowing(&fake.base_url())).await?;
    claude::store_credentials(&server, &fake, "sk-ant-acp-agents-test").await;
    Some(Host { server, fake })
}

impl Host {
    async fn start(&self, body: Value) -> Running {
        self.server.run("p", "acp-claude", body).await
    }
}

#[tokio::test]
async fn a_manifest_alone_adds_an_agent_that_answers_through_the_shared_component() {
    let Some(host) = host().await else { return };
    let (status, listed) = host
        .server
        .admin_call(Method::GET, "/providers", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let names = field_strings(&listed["providers"], "name");
    assert_eq!(
        names,
        ["acp-claude"],
        "the manifest is the provider: {listed}"
    );

    host.fake.push(Reply::text("hello from the fake model"));
    let run = host.start(json!({"prompt": "say hello"})).await;
    let (events, command) = host.server.finish(run, WAIT).await;
    assert_eq!(command["status"], "completed", "{command} {events:?}");
    assert_eq!(command["provider"], "acp-claude", "{command}");
    let text: String = events
        .iter()
        .filter(|(kind, _)| kind == "message")
        .filter_map(|(_, data)| data["text"].as_str())
        .collect();
    assert!(text.contains("hello from the fake model"), "{events:?}");
    assert!(
        command["result"]["session_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "the adapter's session is kept for continuation: {command}"
    );
    let asked: Vec<String> = host
        .fake
        .stream_requests()
        .iter()
        .flat_map(|r| r.message_texts())
        .collect();
    assert!(
        asked.iter().any(|t| t.contains("say hello")),
        "the prompt reached the model through the adapter: {asked:?}"
    );
    host.server.stop().await;
}

#[tokio::test]
async fn a_request_cannot_change_what_the_manifest_fixes() {
    let Some(host) = host().await else { return };
    let body = json!({"prompt": "hi", "options": {"command": "sh", "args": ["-c", "id"]}});
    let body = host
        .server
        .as_admin()
        .post(
            "/projects/p/acp-claude",
            body,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert_eq!(body["code"], "option_fixed", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.ends_with("cannot be changed: `args`, `command`")),
        "both changed options are named: {body}"
    );
    let (status, listed) = host
        .server
        .admin_call(Method::GET, "/projects/p/commands", None)
        .await;
    assert!(
        status == StatusCode::NOT_FOUND || listed["commands"].as_array().is_some_and(Vec::is_empty),
        "nothing was queued: {status} {listed}"
    );
    // Repeating a fixed value is not a change.
    host.fake.push(Reply::text("same program"));
    let run = host
        .start(json!({"prompt": "hi", "options": {"command": "claude-agent-acp"}}))
        .await;
    let command = host.server.finished_within(&run.id, WAIT).await;
    assert_eq!(command["status"], "completed", "{command}");
    host.server.stop().await;
}
