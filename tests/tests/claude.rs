//! The claude provider end to end: the real component in the real runtime, the real `claude`
//! CLI spawned by the LocalExecutor, talking to the fake Messages API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdev::domain::mcp::{McpServer, McpVar};
use rdev::domain::{AgentEvent, AgentRequest, ResultStatus};
use rdev::runtime::WasmAgent;
use rdev_tests::doubles::anthropic::{FakeAnthropic, Reply, shell_input};
use rdev_tests::harness::runtime::{self, Collected, MapSecrets, runtime_with_secrets};
use rdev_tests::harness::{self, claude, plugins};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Longer than any request's own timeout: an execution still running then hangs.
const WAIT: Duration = Duration::from_secs(240);

/// A key no event may ever contain.
const API_KEY: &str = "sk-ant-test-3f9c2d71-never-in-events";
/// The stored credential an MCP server's environment references.
const MCP_TOKEN: &str = "mcp-token-5b0e-never-in-events";

struct Setup {
    fake: FakeAnthropic,
    agent: Arc<WasmAgent>,
    root: tempfile::TempDir,
}

/// The CLI on PATH (the executor passes the host's PATH to children), the fake API, and the
/// claude component loaded into a runtime over a LocalExecutor whose credential store holds
/// `with_key`'s API key and the fake's URL as ANTHROPIC_BASE_URL.
async fn setup(with_key: bool) -> Option<Setup> {
    setup_at(with_key, None).await
}

/// [`setup`] with ANTHROPIC_BASE_URL set to `base_url` instead of the fake's URL.
async fn setup_at(with_key: bool, base_url: Option<String>) -> Option<Setup> {
    harness::on_path(claude::install())?;
    let fake = FakeAnthropic::start().unwrap();
    let base_url = base_url.unwrap_or_else(|| fake.base_url());
    let mut secrets = HashMap::from([
        ("ANTHROPIC_BASE_URL".to_owned(), base_url),
        ("MCP_TOKEN".to_owned(), MCP_TOKEN.to_owned()),
    ]);
    if with_key {
        secrets.insert("ANTHROPIC_API_KEY".to_owned(), API_KEY.to_owned());
    }
    let root = tempfile::tempdir().unwrap();
    let runtime = runtime_with_secrets(root.path(), Duration::from_secs(15), MapSecrets(secrets));
    let agent = runtime
        .load(&plugins::plugins_dir().join("claude.toml"))
        .await
        .unwrap();
    Some(Setup { fake, agent, root })
}

fn request(prompt: &str, session: Option<&str>, options: serde_json::Value) -> AgentRequest {
    let mut request = AgentRequest::new(prompt);
    request.session_id = session.map(str::to_owned);
    request.timeout = Duration::from_secs(120);
    request.options = options.as_object().unwrap().clone();
    request
}

async fn execute(agent: &WasmAgent, request: AgentRequest, cancel: CancellationToken) -> Collected {
    execute_with(agent, request, cancel, Vec::new()).await
}

/// [`execute`] for a project with `mcp_servers`.
async fn execute_with(
    agent: &WasmAgent,
    request: AgentRequest,
    cancel: CancellationToken,
    mcp_servers: Vec<McpServer>,
) -> Collected {
    let Collected { events, result } = runtime::execute_with_mcp(
        agent,
        "claude-e2e",
        request,
        mcp_servers,
        cancel,
        WAIT,
        |_, _| {},
    )
    .await;
    let serialized = serde_json::to_string(&events).unwrap();
    assert!(
        !serialized.contains(API_KEY) && !serialized.contains(MCP_TOKEN),
        "a secret leaked into events"
    );
    assert!(
        !format!("{result:?}").contains(API_KEY),
        "the API key leaked into the result"
    );
    Collected { events, result }
}

async fn run(agent: &WasmAgent, request: AgentRequest) -> Collected {
    execute(agent, request, CancellationToken::new()).await
}

/// A stdio MCP server of the project: the real CLI gets it as `--mcp-config`, starts it with
/// the credential the host put in its environment, and lists its tool at start-up.
#[tokio::test(flavor = "multi_thread")]
async fn a_project_mcp_server_is_started_by_the_cli_with_its_credential() {
    let double =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("acp-double/mcp-server-double");
    harness::put_on_path(&double);
    let Some(s) = setup(true).await else { return };
    s.fake.push(Reply::text("tools seen"));
    let var = |name: &str, value: Option<&str>, credential: Option<&str>| McpVar {
        name: name.to_owned(),
        value: value.map(str::to_owned),
        credential: credential.map(str::to_owned),
    };
    let servers = vec![McpServer::Stdio {
        name: "files".to_owned(),
        command: "mcp-server-double".to_owned(),
        args: vec!["MODE".to_owned(), "TOKEN".to_owned()],
        env: vec![
            var("MODE", Some("ro"), None),
            var("TOKEN", None, Some("MCP_TOKEN")),
        ],
    }];
    let request = request("list tools", None, json!({}));
    let outcome = execute_with(&s.agent, request, CancellationToken::new(), servers).await;
    let result = outcome.result();
    assert_eq!(result.status, ResultStatus::Completed, "{result:?}");
    let AgentEvent::Init { tools, .. } = &outcome.events[0] else {
        panic!("first event {:?}", outcome.events[0]);
    };
    assert!(tools.iter().any(|t| t == "mcp__files__echo"), "{tools:?}");
    let seen = std::fs::read_to_string(
        s.root
            .path()
            .join("projects/claude-e2e/mcp-server-env.json"),
    )
    .expect("the CLI started the server in the workspace");
    let seen: serde_json::Value = serde_json::from_str(&seen).expect("json");
    assert_eq!(seen, json!({"MODE": "ro", "TOKEN": MCP_TOKEN}));
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_reply_then_resume_continues_the_session() {
    let Some(s) = setup(true).await else { return };
    s.fake.push(Reply::text("Hello through rdev"));
    let first = run(&s.agent, request("say hello", None, json!({}))).await;
    let result = first.result();
    assert_eq!(result.status, ResultStatus::Completed, "{result:?}");
    assert_eq!(result.final_text.as_deref(), Some("Hello through rdev"));
    assert!(result.cost_usd.unwrap() > 0.0);
    assert_eq!(result.num_turns, Some(1));
    let session = result.session_id.clone().unwrap();
    let (session_id, version) = first.init();
    assert_eq!(session_id, Some(session.as_str()));
    assert_eq!(version, Some(claude::CLI_VERSION));
    assert!(first.events.contains(&AgentEvent::Message {
        text: "Hello through rdev".into(),
        partial: false
    }));
    assert!(first.reported_usage());
    // The key reached the CLI (it authenticated with it) but no event.
    assert_eq!(s.fake.stream_requests()[0].headers["x-api-key"], API_KEY);

    s.fake.push(Reply::text("Continued"));
    let second = run(&s.agent, request("and now?", Some(&session), json!({}))).await;
    assert_eq!(second.result().status, ResultStatus::Completed);
    assert_eq!(
        second.result().session_id.as_deref(),
        Some(session.as_str())
    );
    let history = &s.fake.stream_requests()[1];
    history.assert_carries(&["say hello", "Hello through rdev", "and now?"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bash_tool_call_round_trip() {
    let Some(s) = setup(true).await else { return };
    let input = shell_input("echo from-bash-$((6*7))", "marker");
    s.fake.push(Reply::tool_use("toolu_e2e", "Bash", input));
    s.fake.push(Reply::text("done"));
    let out = run(
        &s.agent,
        request("run it", None, json!({"allowed_tools": ["Bash"]})),
    )
    .await;
    out.completed();
    assert!(out.events.iter().any(|e| matches!(e,
        AgentEvent::ToolUse { id, name, input } if id == "toolu_e2e" && name == "Bash"
            && input["command"] == "echo from-bash-$((6*7))")));
    assert!(out.events.contains(&AgentEvent::ToolResult {
        id: "toolu_e2e".into(),
        content: "from-bash-42".into(),
        is_error: false
    }));
    s.fake.stream_requests()[1].assert_carries(&["from-bash-42"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_500s_warn_then_fail_with_the_api_message() {
    let Some(s) = setup(true).await else { return };
    s.fake
        .set_fallback(Reply::error(500, "api_error", "upstream exploded"));
    let out = run(&s.agent, request("hi", None, json!({"max_retries": 1}))).await;
    let error = out.failed();
    assert!(error.contains("upstream exploded"), "{error}");
    let warnings = out.warnings();
    let http_500 = warnings.iter().filter(|m| m.contains("HTTP 500")).count();
    assert_eq!(http_500, 1, "{:?}", out.events);
    assert_eq!(s.fake.stream_requests().len(), 2);
    // The retry in words, and one error event for the one error.
    assert!(
        warnings
            .iter()
            .any(|m| m.contains("retry 1 of 1 in ") && m.ends_with(" s")),
        "{:?}",
        out.events
    );
    let errors: Vec<_> = out
        .events
        .iter()
        .filter(|e| matches!(e, AgentEvent::Error { .. }))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permission_denial_is_a_warning_and_in_the_error_text() {
    let Some(s) = setup(true).await else { return };
    let input = shell_input("touch denied-marker", "marker");
    s.fake.push(Reply::tool_use("toolu_denied", "Bash", input));
    s.fake.push(Reply::text("I was not allowed to."));
    let out = run(&s.agent, request("make a file", None, json!({}))).await;
    let result = out.result();
    let warnings = out.warnings();
    let denied = warnings.iter().find(|m| m.starts_with("permission denied"));
    let warning = denied.unwrap_or_else(|| panic!("no denial warning: {:?}", out.events));
    assert!(
        warning.contains("Bash") && warning.contains("touch denied-marker"),
        "{warning}"
    );
    let error = result.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("permission denied") && error.contains("Bash"),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_fails_with_the_cli_message() {
    // A port that was just free: bound, read, released, so nothing listens on it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let Some(s) = setup_at(true, Some(format!("http://{closed}"))).await else {
        return;
    };
    let out = run(&s.agent, request("hi", None, json!({"max_retries": 1}))).await;
    let error = out.failed();
    assert!(
        error.contains("Connection refused") && error.contains("ECONNREFUSED"),
        "{error}"
    );
    let mut retries = out.warnings();
    retries.retain(|m| m.starts_with("API request failed"));
    assert_eq!(retries.len(), 1, "{:?}", out.events);
    assert!(s.fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthorized_fails_with_the_cli_message() {
    let Some(s) = setup(true).await else { return };
    s.fake.set_fallback(Reply::error(
        401,
        "authentication_error",
        "invalid x-api-key",
    ));
    let out = run(&s.agent, request("hi", None, json!({}))).await;
    let error = out.failed();
    assert!(error.contains("Invalid API key"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_mid_stream_then_resume() {
    let Some(s) = setup(true).await else { return };
    let words: Vec<String> = (0..400).map(|i| format!("w{i} ")).collect();
    s.fake
        .push(Reply::slow_text(&words, Duration::from_millis(50)));
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let fake_requests = {
        let agent = s.agent.clone();
        let run = tokio::spawn(async move {
            execute(
                &agent,
                request("tell a long story", None, json!({})),
                cancel,
            )
            .await
        });
        while s.fake.stream_requests().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        trigger.cancel();
        run.await.unwrap()
    };
    let result = fake_requests.result();
    assert_eq!(result.status, ResultStatus::Cancelled, "{result:?}");
    let shown = serde_json::to_string(&fake_requests.events).unwrap();
    assert!(!shown.contains("ede_diagnostic"), "{shown}");
    let session = result
        .session_id
        .clone()
        .expect("the session survives a cancel");

    s.fake.push(Reply::text("resumed fine"));
    let resumed = run(&s.agent, request("go on", Some(&session), json!({}))).await;
    resumed.completed();
    s.fake.stream_requests()[1].assert_carries(&["tell a long story"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_session_fails_with_the_cli_message() {
    let Some(s) = setup(true).await else { return };
    let out = run(
        &s.agent,
        request(
            "hi",
            Some("00000000-0000-4000-8000-000000000000"),
            json!({}),
        ),
    )
    .await;
    let result = out.result();
    assert_eq!(result.status, ResultStatus::Failed);
    assert_eq!(
        result.error.as_deref(),
        Some("No conversation found with session ID: 00000000-0000-4000-8000-000000000000")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_api_key_fails_clearly_without_running_the_cli() {
    let Some(s) = setup(false).await else { return };
    let out = run(&s.agent, request("hi", None, json!({}))).await;
    let error = out.failed();
    assert!(error.contains("ANTHROPIC_API_KEY is not set"), "{error}");
    assert!(s.fake.requests().is_empty());
}
