//! The OpenCode provider's model backend is configured through rdev (#19 part 3): request
//! options name the base URL of an OpenAI-compatible API, the credential holding its key and
//! the models it offers; the plugin hands OpenCode's configuration to the host, which puts it
//! and the resolved key into the environment of the project's `opencode serve`. Nothing is
//! written into the workspace, configuration above the workspace is never read, and options
//! or models the provider does not accept are refused at submit.
//!
//! The real `opencode serve` (npm opencode-ai) runs as the manifest's service over the
//! unconfined LocalExecutor, so the directory above a workspace is really there to be found;
//! the submit checks go through an in-process `rdev serve`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdev::adapters::local::LocalExecutor;
use rdev::domain::interaction::{Decision, PermissionRequest};
use rdev::domain::{AgentEvent, AgentRequest, AgentResult, ResultStatus};
use rdev::ports::interaction::InputReceiver;
use rdev::ports::{Interaction, InteractionContext, InteractionError, SecretResolver};
use rdev::runtime::{Runtime, RuntimeConfig, WasmAgent};
use rdev_tests::doubles::openai::{FakeOpenAi, Reply};
use rdev_tests::harness::runtime::{self, Collected, MapSecrets};
use rdev_tests::harness::{self, opencode, plugins, server::TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PROJECT: &str = "backend-e2e";
/// The key of the first backend, in the credential store as `OPENAI_API_KEY`.
const KEY: &str = "sk-test-4f1c2a90-never-in-events";
/// The key of the second backend, as `OPENROUTER_API_KEY`.
const OTHER_KEY: &str = "sk-or-test-77d3e5b1-never-in-events";

/// Allows every tool call (approvals are tested elsewhere).
struct Allow;

#[async_trait]
impl Interaction for Allow {
    async fn request_permission(
        &self,
        _ctx: &InteractionContext,
        _request: PermissionRequest,
    ) -> Result<Decision, InteractionError> {
        Ok(Decision::allow())
    }

    async fn open_input(&self, _ctx: &InteractionContext) -> Option<InputReceiver> {
        None
    }
}

struct Setup {
    runtime: Runtime,
    agent: Arc<WasmAgent>,
    root: tempfile::TempDir,
}

/// A runtime with the installed opencode plugin over workspaces in a temporary root, the two
/// keys in its credential store.
async fn setup() -> Option<Setup> {
    harness::on_path(opencode::install())?;
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join(PROJECT)).unwrap();
    let credentials = HashMap::from([
        ("OPENAI_API_KEY".to_owned(), KEY.to_owned()),
        ("OPENROUTER_API_KEY".to_owned(), OTHER_KEY.to_owned()),
    ]);
    let secrets: Arc<dyn SecretResolver> = Arc::new(MapSecrets(credentials));
    let executor = Arc::new(LocalExecutor::per_project(root.path(), secrets.clone()));
    let mut config = RuntimeConfig::new(executor, secrets);
    config.interaction = Arc::new(Allow);
    let runtime = Runtime::new(config).unwrap();
    let agent = runtime
        .load(&plugins::plugins_dir().join("opencode.toml"))
        .await
        .unwrap();
    Some(Setup {
        runtime,
        agent,
        root,
    })
}

impl Setup {
    fn workspace(&self) -> std::path::PathBuf {
        self.root.path().join(PROJECT)
    }

    fn server_pid(&self) -> Option<u32> {
        let running = self.runtime.services().running();
        running.first().and_then(|s| s.pid)
    }

    /// Runs `request` in the project; the events and the result, neither carrying a key.
    async fn run(&self, request: AgentRequest) -> (Vec<AgentEvent>, AgentResult) {
        let wait = Duration::from_secs(240);
        let cancel = CancellationToken::new();
        let Collected { events, result } = runtime::execute(
            self.agent.as_ref(),
            PROJECT,
            request,
            cancel,
            wait,
            |_, _| {},
        )
        .await;
        let result = result.expect("the execution ran");
        let seen = format!("{} {result:?}", serde_json::to_string(&events).unwrap());
        for key in [KEY, OTHER_KEY] {
            assert!(
                !seen.contains(key),
                "a key reached the events or the result"
            );
        }
        (events, result)
    }
}

fn request(prompt: &str, model: Option<&str>, options: Value) -> AgentRequest {
    let mut request = AgentRequest::new(prompt);
    request.model = model.map(str::to_owned);
    request.timeout = Duration::from_secs(180);
    request.options = options.as_object().cloned().unwrap_or_default();
    request
}

fn text(events: &[AgentEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Message {
                text,
                partial: false,
            } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// The names in workspace `dir` other than rdev's own state directory (the project's HOME,
/// where OpenCode keeps its sessions), sorted: the user's files.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != rdev::adapters::local::STATE_DIR)
        .collect();
    names.sort();
    names
}

fn authorization(fake: &FakeOpenAi) -> Vec<String> {
    fake.stream_requests()
        .iter()
        .filter_map(|r| r.headers.get("authorization"))
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backend_comes_from_options_and_the_credential_store_and_a_change_restarts_the_server()
{
    let Some(s) = setup().await else { return };
    let (first, second) = (FakeOpenAi::start().unwrap(), FakeOpenAi::start().unwrap());
    first.push(Reply::text("hello from the first backend"));
    second.push(Reply::text("hello from the second backend"));
    let model = format!("{}/{}", opencode::PROVIDER, opencode::MODEL);
    let options = json!({
        "base_url": first.base_url(),
        "api_key_credential": "OPENAI_API_KEY",
        "models": [model],
    });
    let (events, result) = s.run(request("say hello", None, options)).await;
    assert_eq!(
        result.status,
        ResultStatus::Completed,
        "{result:?} {events:?}"
    );
    assert!(
        text(&events).contains("hello from the first backend"),
        "{events:?}"
    );
    assert_eq!(authorization(&first), [format!("Bearer {KEY}")]);
    assert_eq!(
        listing(&s.workspace()),
        Vec::<String>::new(),
        "nothing is written into the workspace"
    );
    let pid = s.server_pid().expect("the project's server runs");

    let options = json!({
        "base_url": second.base_url(),
        "api_key_credential": "OPENROUTER_API_KEY",
    });
    let (events, result) = s.run(request("again", Some(&model), options)).await;
    assert_eq!(
        result.status,
        ResultStatus::Completed,
        "{result:?} {events:?}"
    );
    assert!(
        text(&events).contains("hello from the second backend"),
        "{events:?}"
    );
    assert_eq!(authorization(&second), [format!("Bearer {OTHER_KEY}")]);
    assert_eq!(
        first.stream_requests().len(),
        1,
        "the first backend is not asked again"
    );
    assert_ne!(
        s.server_pid(),
        Some(pid),
        "the server restarted for the new backend"
    );
    assert_eq!(listing(&s.workspace()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_opencode_json_above_the_workspace_has_no_effect() {
    let Some(s) = setup().await else { return };
    let decoy = FakeOpenAi::start().unwrap();
    decoy.set_fallback(Reply::text("the decoy answered"));
    // Without a boundary OpenCode walks up from the workspace to / (no git repository here)
    // and takes the first opencode.json it finds: this one, one level up.
    opencode::write_config(s.root.path(), &decoy.base_url()).unwrap();
    let model = format!("{}/{}", opencode::PROVIDER, opencode::MODEL);
    let (events, result) = s.run(request("say hello", Some(&model), json!({}))).await;
    assert!(
        decoy.requests().is_empty(),
        "the parent directory's configuration routed the command to its backend: {events:?}"
    );
    assert!(!text(&events).contains("decoy"), "{events:?}");
    assert_eq!(result.status, ResultStatus::Failed, "{result:?}");
}

async fn submit(server: &TestServer, body: Value) -> (StatusCode, Value) {
    server
        .admin_call(Method::POST, "/projects/p/opencode", Some(body))
        .await
}

#[tokio::test]
async fn unknown_options_and_models_are_refused_at_submit_with_the_valid_ones() {
    let server = TestServer::sqlite().await;
    let (status, body) = submit(
        &server,
        json!({"prompt": "hi", "options": {"agnet": "plan"}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "unknown_option", "{body}");
    let valid: Vec<&str> = body["valid"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for option in ["agent", "base_url", "api_key_credential", "models"] {
        assert!(valid.contains(&option), "{body}");
    }
    assert!(
        body["detail"].as_str().unwrap().contains("`agnet`"),
        "{body}"
    );

    let models = json!(["fake/fake-model", "fake/other-model"]);
    let (status, body) = submit(
        &server,
        json!({"prompt": "hi", "model": "fake/gpt-typo", "options": {"models": models}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "unknown_model", "{body}");
    assert_eq!(body["valid"], models, "{body}");

    let (status, body) = submit(
        &server,
        json!({"prompt": "hi", "options": {"models": "fake/x"}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "invalid_option", "{body}");

    let (status, body) = server
        .admin_call(Method::GET, "/projects/p/commands", None)
        .await;
    // A refused submit registers nothing: the project does not exist, so nothing is queued.
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    server.stop().await;
}
