//! A plugin runtime over the real local executor, plus helpers to install plugins into a
//! plugins directory and to run one execution with a chosen event-sink capacity.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdev::adapters::local::LocalExecutor;
use rdev::domain::mcp::McpServer;
use rdev::domain::{AgentEvent, AgentRequest, AgentResult, CommandId, ProjectId};
use rdev::ports::{
    AgentError, CodeAgent, Execution, Interaction, SecretError, SecretResolver, SecretValue,
};
use rdev::runtime::{Runtime, RuntimeConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Credentials from a map: the port's contract is only "look a name up".
#[derive(Default)]
pub struct MapSecrets(pub HashMap<String, String>);

#[async_trait]
impl SecretResolver for MapSecrets {
    async fn resolve(&self, name: &str) -> Result<Option<SecretValue>, SecretError> {
        Ok(self.0.get(name).map(SecretValue::new))
    }
}

/// A runtime whose processes run in per-project directories under `workspaces`, with the
/// given cancel grace period and a compile cache in `workspaces/.cache`.
pub fn runtime(workspaces: &Path, grace: Duration) -> Runtime {
    runtime_with_secrets(workspaces, grace, MapSecrets::default())
}

/// [`runtime`] with the given credentials available to the executor and project-http.
pub fn runtime_with_secrets(workspaces: &Path, grace: Duration, secrets: MapSecrets) -> Runtime {
    Runtime::new(config(workspaces, grace, secrets)).expect("runtime starts")
}

/// [`runtime`] whose providers' permission requests and follow-up input go to
/// `interaction` (instead of the default that denies everything).
pub fn runtime_with_interaction(
    workspaces: &Path,
    grace: Duration,
    interaction: Arc<dyn Interaction>,
) -> Runtime {
    let mut config = config(workspaces, grace, MapSecrets::default());
    config.interaction = interaction;
    Runtime::new(config).expect("runtime starts")
}

fn config(workspaces: &Path, grace: Duration, secrets: MapSecrets) -> RuntimeConfig {
    let secrets: Arc<dyn SecretResolver> = Arc::new(secrets);
    let executor = Arc::new(LocalExecutor::per_project(
        workspaces.join("projects"),
        secrets.clone(),
    ));
    let mut config = RuntimeConfig::new(executor, secrets);
    config.cancel_grace = grace;
    config.max_instances = 16;
    config.cache_dir = Some(workspaces.join("cache"));
    config
}

/// One execution's inputs, and the receiving end of its event sink.
pub struct Run {
    pub execution: Execution,
    pub events: mpsc::Receiver<AgentEvent>,
    pub cancel: CancellationToken,
}

/// An execution of `prompt` in project `test` with a sink of `capacity` events.
pub fn run(prompt: &str, timeout: Duration, capacity: usize) -> Run {
    let (tx, rx) = mpsc::channel(capacity);
    let cancel = CancellationToken::new();
    let mut request = AgentRequest::new(prompt);
    request.timeout = timeout;
    Run {
        execution: Execution {
            command_id: CommandId::from_uuid(uuid::Uuid::now_v7()),
            project_id: ProjectId::parse("test").expect("valid id"),
            request,
            events: tx,
            cancel: cancel.clone(),
            mcp_servers: Vec::new(),
        },
        events: rx,
        cancel,
    }
}

/// What one execution produced: every event in order and the provider's answer.
pub struct Collected {
    pub events: Vec<AgentEvent>,
    pub result: Result<AgentResult, AgentError>,
}

/// Runs `request` in `project` on `agent`, collecting its events; `on_event` sees each one
/// as it arrives and may cancel the token. Fails the test when the execution takes longer
/// than `wait` (a hang).
pub async fn execute(
    agent: &dyn CodeAgent,
    project: &str,
    request: AgentRequest,
    cancel: CancellationToken,
    wait: Duration,
    on_event: impl Fn(&AgentEvent, &CancellationToken) + Send + 'static,
) -> Collected {
    execute_with_mcp(agent, project, request, Vec::new(), cancel, wait, on_event).await
}

/// [`execute`] in a project whose MCP servers are `mcp_servers`.
pub async fn execute_with_mcp(
    agent: &dyn CodeAgent,
    project: &str,
    request: AgentRequest,
    mcp_servers: Vec<McpServer>,
    cancel: CancellationToken,
    wait: Duration,
    on_event: impl Fn(&AgentEvent, &CancellationToken) + Send + 'static,
) -> Collected {
    let (tx, mut rx) = mpsc::channel(1024);
    let token = cancel.clone();
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(event) = rx.recv().await {
            on_event(&event, &token);
            events.push(event);
        }
        events
    });
    let execution = Execution {
        command_id: CommandId::from_uuid(uuid::Uuid::now_v7()),
        project_id: ProjectId::parse(project).expect("valid project id"),
        request,
        events: tx,
        cancel,
        mcp_servers,
    };
    let result = tokio::time::timeout(wait, agent.execute(execution))
        .await
        .unwrap_or_else(|_| panic!("the execution did not end within {wait:?}"));
    let events = collector.await.expect("the event collector");
    Collected { events, result }
}

/// Installs `<from>/<plugin>.wasm` as `<to>/<name>.wasm` with its manifest renamed (and
/// its version replaced when `version` is given), each file replaced atomically, the
/// component first, as `cargo xtask plugins` does.
pub fn install(from: &Path, plugin: &str, to: &Path, name: &str, version: Option<&str>) {
    let wasm = std::fs::read(from.join(format!("{plugin}.wasm"))).expect("component exists");
    let manifest =
        std::fs::read_to_string(from.join(format!("{plugin}.toml"))).expect("manifest exists");
    let mut lines: Vec<String> = Vec::new();
    for line in manifest.lines() {
        if line.starts_with("name = ") {
            lines.push(format!("name = {name:?}"));
        } else if let (Some(v), true) = (version, line.starts_with("version = ")) {
            lines.push(format!("version = {v:?}"));
        } else {
            lines.push(line.to_owned());
        }
    }
    write_atomically(&to.join(format!("{name}.wasm")), &wasm);
    write_atomically(
        &to.join(format!("{name}.toml")),
        lines.join("\n").as_bytes(),
    );
}

/// Replaces `path` in one rename, so a watcher never sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp: PathBuf = path.with_extension("tmp-test");
    std::fs::write(&tmp, bytes).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}
