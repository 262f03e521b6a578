//! A plugin runtime over the real local executor, plus helpers to install plugins into a
//! plugins directory and to run one execution with a chosen event-sink capacity.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdev::adapters::local::LocalExecutor;
use rdev::domain::OutputStream;
use rdev::domain::mcp::McpServer;
use rdev::domain::{AgentEvent, AgentRequest, AgentResult, CommandId, ProjectId};
use rdev::ports::{
    AgentError, CodeAgent, Execution, Interaction, SecretError, SecretResolver, SecretValue,
    SpawnSpec,
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

/// The real `shell` provider (from `target/plugins`), loaded by `runtime`.
pub async fn load_shell(runtime: &Runtime) -> Arc<rdev::runtime::WasmAgent> {
    let manifest = super::plugins::plugins_dir().join("shell.toml");
    runtime.load(&manifest).await.expect("shell loads")
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

/// The stdout and the stderr text of the output events `events` has received so far.
pub fn output(events: &mut mpsc::Receiver<AgentEvent>) -> (String, String) {
    let (mut stdout, mut stderr) = (String::new(), String::new());
    while let Ok(event) = events.try_recv() {
        if let AgentEvent::Output { stream, text } = event {
            match stream {
                OutputStream::Stdout => stdout.push_str(&text),
                OutputStream::Stderr => stderr.push_str(&text),
            }
        }
    }
    (stdout, stderr)
}

/// The final text of one run of `prompt` on `agent` (see [`run`]: a sink of 16 events,
/// `timeout`); the test fails when the execution does.
pub async fn final_text(agent: &dyn CodeAgent, prompt: &str, timeout: Duration) -> String {
    let r = run(prompt, timeout, 16);
    let result = agent.execute(r.execution).await.expect("runs");
    result.final_text.unwrap_or_default()
}

/// `sh -c script` at the workspace root with no environment of its own: what executor
/// tests spawn.
pub fn sh(script: &str) -> SpawnSpec {
    SpawnSpec::new("sh", &["-c", script])
}

/// Everything a spawned process wrote to `reader` (its stdout or stderr) until it closed.
pub async fn read_all(mut reader: impl tokio::io::AsyncRead + Unpin) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = String::new();
    reader.read_to_string(&mut out).await.expect("read stream");
    out
}

/// Serves `app` on an ephemeral loopback port (a project's HTTP server, for project-http
/// tests); the port and the serving task.
pub async fn serve_loopback(app: axum::Router) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("address").port();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, server)
}

/// What one execution produced: every event in order and the provider's answer.
pub struct Collected {
    pub events: Vec<AgentEvent>,
    pub result: Result<AgentResult, AgentError>,
}

impl Collected {
    /// The provider's answer; the test fails when the execution failed.
    pub fn result(&self) -> &AgentResult {
        self.result.as_ref().expect("the execution succeeded")
    }

    /// The provider's answer, asserting that it completed.
    pub fn completed(&self) -> &AgentResult {
        let result = self.result();
        let status = rdev::domain::ResultStatus::Completed;
        assert_eq!(result.status, status, "{result:?} {:?}", self.events);
        result
    }

    /// The error of the provider's answer, asserting that it failed with one.
    pub fn failed(&self) -> &str {
        let result = self.result();
        let status = rdev::domain::ResultStatus::Failed;
        assert_eq!(result.status, status, "{result:?} {:?}", self.events);
        let error = result.error.as_deref();
        error.unwrap_or_else(|| panic!("a failure without an error: {result:?}"))
    }

    /// The messages of the `warning` events, in order.
    pub fn warnings(&self) -> Vec<&str> {
        let events = self.events.iter();
        events
            .filter_map(|e| match e {
                AgentEvent::Warning { message } => Some(message.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The session id and agent version the first event (an `Init`) reports.
    pub fn init(&self) -> (Option<&str>, Option<&str>) {
        match &self.events[0] {
            AgentEvent::Init {
                session_id,
                version,
                ..
            } => (session_id.as_deref(), version.as_deref()),
            other => panic!("first event {other:?}"),
        }
    }

    /// Whether a `usage` event was streamed.
    pub fn reported_usage(&self) -> bool {
        let usage = |e: &&AgentEvent| matches!(e, AgentEvent::Usage { .. });
        self.events.iter().any(|e| usage(&e))
    }

    /// The streamed (partial) message text, joined.
    pub fn partial_text(&self) -> String {
        let partial = |e: &AgentEvent| match e {
            AgentEvent::Message {
                text,
                partial: true,
            } => Some(text.clone()),
            _ => None,
        };
        self.events.iter().filter_map(partial).collect()
    }
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

/// Installs the `hostile` test guest as `web` in `dir`, granted project-http to `port` (a
/// project's HTTP server on loopback); its manifest.
pub fn web_guest(dir: &Path, port: u16) -> PathBuf {
    install(
        &crate::harness::plugins::test_plugins_dir(),
        "hostile",
        dir,
        "web",
        None,
    );
    let manifest = dir.join("web.toml");
    let ports = format!("project_http_ports = [{port}]");
    edit_file(&manifest, |text| {
        text.replace("project_http_ports = []", &ports)
    });
    manifest
}

/// Rewrites the text file at `path` (a manifest, usually) with `edit`.
pub fn edit_file(path: &Path, edit: impl FnOnce(&str) -> String) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::write(path, edit(&text)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Replaces `path` in one rename, so a watcher never sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp: PathBuf = path.with_extension("tmp-test");
    std::fs::write(&tmp, bytes).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}
