//! The opencode provider end to end: the real component in the real runtime, the real
//! `opencode serve` (the manifest's service, run by the host per project over the
//! unconfined LocalExecutor) talking to the fake OpenAI-compatible chat-completions API.
//!
//! No credential is set: the host mints the server's password. Every test gets its own
//! runtime, so its servers are its own; they pick their ports. The benchmark against curl
//! runs the server itself on a port it grants in a copy of the manifest (what an operator
//! running the server elsewhere does), with a password it sets.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdev::adapters::local::LocalExecutor;
use rdev::domain::interaction::{Decision, PermissionRequest};
use rdev::domain::{AgentEvent, AgentRequest, ProjectId, ResultStatus};
use rdev::ports::interaction::InputReceiver;
use rdev::ports::{Interaction, InteractionContext, InteractionError, SecretResolver};
use rdev::runtime::service::ServiceInfo;
use rdev::runtime::{Runtime, RuntimeConfig, WasmAgent};
use rdev_tests::doubles::openai::{FakeOpenAi, Reply, shell_input};
use rdev_tests::harness::runtime::{self, Collected, MapSecrets};
use rdev_tests::harness::{self, opencode, plugins};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The interaction port of these tests: allows every tool call and keeps what it was asked
/// (the approvals themselves are tested through `rdev serve` in opencode_approvals.rs).
#[derive(Default)]
struct Approver {
    asked: Mutex<Vec<PermissionRequest>>,
}

#[async_trait]
impl Interaction for Approver {
    async fn request_permission(
        &self,
        _ctx: &InteractionContext,
        request: PermissionRequest,
    ) -> Result<Decision, InteractionError> {
        self.asked.lock().unwrap().push(request);
        Ok(Decision::allow())
    }

    async fn open_input(&self, _ctx: &InteractionContext) -> Option<InputReceiver> {
        None
    }
}

/// The password of the operator-run server of the benchmark; no event may ever contain it.
const PASSWORD: &str = "oc-pw-5d1e9a77-never-in-events";
const PROJECT: &str = "opencode-e2e";
/// A second project, for the tests of two projects at once.
const OTHER: &str = "opencode-other";

struct Setup {
    fake: FakeOpenAi,
    approver: Arc<Approver>,
    agent: Arc<WasmAgent>,
    runtime: Runtime,
    /// The port of an operator-run server (the `port` option); `None` uses the host's.
    port: Option<u16>,
    _root: tempfile::TempDir,
    _plugins: tempfile::TempDir,
}

/// Copies the built component with its manifest changed by `edit`.
fn plugin_with(edit: impl FnOnce(String) -> String) -> (tempfile::TempDir, PathBuf) {
    let built = plugins::plugins_dir();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        built.join("opencode.wasm"),
        dir.path().join("opencode.wasm"),
    )
    .unwrap();
    let manifest = std::fs::read_to_string(built.join("opencode.toml")).unwrap();
    let path = dir.path().join("opencode.toml");
    std::fs::write(&path, edit(manifest)).unwrap();
    (dir, path)
}

/// The installed manifest's line `from`, which a test replaces.
fn replacing(from: &'static str, to: String) -> impl FnOnce(String) -> String {
    move |manifest: String| {
        assert!(manifest.contains(from), "{from:?} not in the manifest");
        manifest.replace(from, &to)
    }
}

/// A runtime with the installed opencode plugin, nothing in the credential store.
async fn setup() -> Option<Setup> {
    setup_with(None, |m| m).await
}

/// [`setup`] with the manifest changed by `edit`, and with `port`, an operator-run server
/// on that port whose password is in the credential store.
async fn setup_with(port: Option<u16>, edit: impl FnOnce(String) -> String) -> Option<Setup> {
    harness::on_path(opencode::install())?;
    let fake = FakeOpenAi::start().unwrap();
    let root = tempfile::tempdir().unwrap();
    for project in [PROJECT, OTHER] {
        opencode::write_config(&root.path().join(project), &fake.base_url()).unwrap();
    }
    let mut credentials = HashMap::new();
    if port.is_some() {
        credentials.insert("OPENCODE_SERVER_PASSWORD".to_owned(), PASSWORD.to_owned());
    }
    let secrets: Arc<dyn SecretResolver> = Arc::new(MapSecrets(credentials));
    let executor = Arc::new(LocalExecutor::per_project(root.path(), secrets.clone()));
    let mut config = RuntimeConfig::new(executor, secrets);
    config.cancel_grace = Duration::from_secs(15);
    let approver = Arc::new(Approver::default());
    config.interaction = approver.clone();
    let runtime = Runtime::new(config).unwrap();
    let (plugins_tmp, manifest) = plugin_with(edit);
    let agent = runtime.load(&manifest).await.unwrap();
    Some(Setup {
        fake,
        approver,
        agent,
        runtime,
        port,
        _root: root,
        _plugins: plugins_tmp,
    })
}

fn request(s: &Setup, prompt: &str, session: Option<&str>) -> AgentRequest {
    let mut request = AgentRequest::new(prompt);
    request.session_id = session.map(str::to_owned);
    request.model = Some(format!("{}/{}", opencode::PROVIDER, opencode::MODEL));
    request.timeout = Duration::from_secs(180);
    if let Some(port) = s.port {
        request.options = json!({"port": port}).as_object().unwrap().clone();
    }
    request
}

impl Setup {
    /// The host-run server of `project`, if one runs.
    fn service(&self, project: &str) -> Option<ServiceInfo> {
        self.runtime
            .services()
            .running()
            .into_iter()
            .find(|i| i.project.as_str() == project)
    }
}

/// What a running process's environment says `name` is.
fn environ(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|b| *b == 0).find_map(|entry| {
        let entry = String::from_utf8_lossy(entry);
        entry.strip_prefix(&format!("{name}=")).map(str::to_owned)
    })
}

/// Runs a request; `on_event` sees every event as it arrives and may cancel the token.
async fn execute(
    s: &Setup,
    request: AgentRequest,
    cancel: CancellationToken,
    on_event: impl Fn(&AgentEvent, &CancellationToken) + Send + 'static,
) -> Collected {
    execute_in(s, PROJECT, request, cancel, on_event).await
}

/// [`execute`] in `project`. Neither the operator's password nor the one the host minted
/// for the project's server may appear in an event or the result.
async fn execute_in(
    s: &Setup,
    project: &str,
    request: AgentRequest,
    cancel: CancellationToken,
    on_event: impl Fn(&AgentEvent, &CancellationToken) + Send + 'static,
) -> Collected {
    let Collected { events, result } = runtime::execute(
        s.agent.as_ref(),
        project,
        request,
        cancel,
        Duration::from_secs(240),
        on_event,
    )
    .await;
    let serialized = serde_json::to_string(&events).unwrap();
    let minted = s
        .service(project)
        .and_then(|i| i.pid)
        .and_then(|pid| environ(pid, "OPENCODE_SERVER_PASSWORD"));
    for secret in std::iter::once(PASSWORD.to_owned()).chain(minted) {
        assert!(!serialized.contains(&secret), "a password leaked");
        assert!(!format!("{result:?}").contains(&secret));
    }
    Collected { events, result }
}

/// [`execute`], cancelled at the first event `cancel_at` picks.
async fn cancelled_at(
    s: &Setup,
    request: AgentRequest,
    cancel_at: fn(&AgentEvent) -> bool,
) -> Collected {
    let cancel = CancellationToken::new();
    execute(s, request, cancel, move |e, token| {
        if cancel_at(e) {
            token.cancel();
        }
    })
    .await
}

async fn run(s: &Setup, request: AgentRequest) -> Collected {
    execute(s, request, CancellationToken::new(), |_, _| {}).await
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_reply_starts_the_server_and_a_continued_session_keeps_history() {
    let Some(s) = setup().await else { return };
    s.fake.push(Reply::text("Hello through rdev"));
    let first = run(&s, request(&s, "say hello", None)).await;
    let result = first.result();
    assert_eq!(result.status, ResultStatus::Completed, "{result:?}");
    assert_eq!(result.final_text.as_deref(), Some("Hello through rdev"));
    let usage = result.usage.unwrap();
    assert!(
        usage.input_tokens > 0 && usage.output_tokens > 0,
        "{usage:?}"
    );
    assert!(result.cost_usd.is_some());
    // The host started the project's server, with a password it minted (nobody set one).
    assert_eq!(result.details.as_ref().unwrap()["host_run_server"], true);
    let service = s.service(PROJECT).expect("the project's server runs");
    let pid = service.pid.unwrap();
    let minted = environ(pid, "OPENCODE_SERVER_PASSWORD").expect("a minted password");
    assert_eq!(minted.len(), 64, "256 bits, hex");
    let session = result.session_id.clone().unwrap();
    let (session_id, version) = first.init();
    assert_eq!(session_id, Some(session.as_str()));
    assert_eq!(version, Some(opencode::VERSION));
    assert_eq!(first.partial_text(), "Hello through rdev");
    assert!(first.events.contains(&AgentEvent::Message {
        text: "Hello through rdev".into(),
        partial: false
    }));
    assert!(first.reported_usage());

    s.fake.push(Reply::text("Continued"));
    let second = run(&s, request(&s, "and now?", Some(&session))).await;
    second.completed();
    assert_eq!(second.result().final_text.as_deref(), Some("Continued"));
    assert_eq!(
        second.result().session_id.as_deref(),
        Some(session.as_str())
    );
    let requests = s.fake.stream_requests();
    let history = requests.last().expect("a request");
    history.assert_carries(&["say hello", "Hello through rdev", "and now?"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bash_tool_call_and_its_result() {
    let Some(s) = setup().await else { return };
    let input = shell_input("echo from-bash-$((6*7))", "marker");
    s.fake.push(Reply::tool_call("call_e2e", "bash", input));
    s.fake.push(Reply::text("done"));
    let out = run(&s, request(&s, "run it", None)).await;
    out.completed();
    assert!(out.events.iter().any(|e| matches!(e,
        AgentEvent::ToolUse { id, name, input } if id == "call_e2e" && name == "bash"
            && input["command"].as_str().unwrap().contains("from-bash"))));
    assert!(out.events.iter().any(|e| matches!(e,
        AgentEvent::ToolResult { id, content, is_error: false }
            if id == "call_e2e" && content.contains("from-bash-42"))));
    assert_eq!(out.result().final_text.as_deref(), Some("done"));
    assert_eq!(out.result().num_turns, Some(2));
    // The server asked before running it, and the host was asked with the call's input.
    let asked = s.approver.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].tool, "bash");
    assert_eq!(asked[0].tool_call_id.as_deref(), Some("call_e2e"));
    assert_eq!(asked[0].input["command"], "echo from-bash-$((6*7))");
    assert_eq!(asked[0].summary, "bash: echo from-bash-$((6*7))");
    // The tool's output went back to the model.
    let last = s.fake.stream_requests().last().unwrap().body.to_string();
    assert!(last.contains("from-bash-42"), "{last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_401_fails_with_the_api_message() {
    let Some(s) = setup().await else { return };
    s.fake
        .set_fallback(Reply::error(401, "invalid_api_key", "Incorrect API key"));
    let out = run(&s, request(&s, "hello?", None)).await;
    let error = out.failed();
    assert!(error.contains("Incorrect API key"), "{error}");
    assert!(out.events.iter().any(
        |e| matches!(e, AgentEvent::Error { message } if message.contains("Incorrect API key"))
    ));
}

/// A backend that keeps failing: OpenCode would retry it with growing pauses for minutes;
/// the `max_retries` bound ends the command after that many retries, each announced in
/// words, with the backend's message in the error.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_backend_fails_after_the_bounded_retries() {
    let Some(s) = setup().await else { return };
    s.fake
        .set_fallback(Reply::error(500, "server_error", "upstream overloaded"));
    let mut request = request(&s, "hello?", None);
    request.options.insert("max_retries".into(), json!(1));
    let out = run(&s, request).await;
    let error = out.failed();
    assert!(
        error.starts_with("the model call failed after 1 retry:"),
        "{error}"
    );
    let mut retries = out.warnings();
    retries.retain(|m| m.contains("retry 1 of 1"));
    assert_eq!(retries.len(), 1, "{:?}", out.events);
    assert!(!retries[0].contains("epoch"), "{}", retries[0]);
    assert_eq!(
        s.fake.stream_requests().len(),
        2,
        "the first call and one retry"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_before_the_session_exists() {
    let Some(s) = setup().await else { return };
    let cancel = CancellationToken::new();
    cancel.cancel();
    let out = execute(&s, request(&s, "never sent", None), cancel, |_, _| {}).await;
    let result = out.result();
    assert_eq!(result.status, ResultStatus::Cancelled, "{result:?}");
    assert_eq!(result.session_id, None);
    assert!(s.fake.stream_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_as_the_prompt_is_sent() {
    let Some(s) = setup().await else { return };
    s.fake.set_fallback(Reply::slow_text(
        &["never ", "finished"],
        Duration::from_secs(2),
    ));
    // The init event comes right before the subscription and the send.
    let out = cancelled_at(&s, request(&s, "cancel me", None), |e| {
        matches!(e, AgentEvent::Init { .. })
    })
    .await;
    let result = out.result();
    assert_eq!(result.status, ResultStatus::Cancelled, "{result:?}");
    assert!(result.session_id.is_some());
    assert_ne!(
        result.final_text.as_deref(),
        Some("never finished"),
        "the turn ran to its end"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_while_streaming_keeps_the_partial_output() {
    let Some(s) = setup().await else { return };
    s.fake.push(Reply::slow_text(
        &[
            "one ", "two ", "three ", "four ", "five ", "six ", "seven ", "eight",
        ],
        Duration::from_millis(600),
    ));
    let out = cancelled_at(&s, request(&s, "count slowly", None), |e| {
        matches!(e, AgentEvent::Message { partial: true, .. })
    })
    .await;
    let result = out.result();
    assert_eq!(result.status, ResultStatus::Cancelled, "{result:?}");
    let partial = out.partial_text();
    assert!(partial.starts_with("one"), "{partial:?}");
    assert!(!partial.contains("eight"), "{partial:?}");
    assert!(result.session_id.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_after_completion_keeps_the_completed_turn() {
    let Some(s) = setup().await else { return };
    s.fake.push(Reply::text("finished before the cancel"));
    // Cancelled once the complete text arrived: the model is done, so either the turn is
    // already idle (completed) or it is cancelled with its whole output kept.
    let out = cancelled_at(&s, request(&s, "quick", None), |e| {
        matches!(e, AgentEvent::Message { partial: false, .. })
    })
    .await;
    let result = out.result();
    assert!(
        matches!(
            result.status,
            ResultStatus::Completed | ResultStatus::Cancelled
        ),
        "{result:?}"
    );
    assert_eq!(
        result.final_text.as_deref(),
        Some("finished before the cancel")
    );
}

fn kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

#[tokio::test(flavor = "multi_thread")]
async fn server_dying_mid_turn_fails_clearly() {
    let Some(s) = setup().await else { return };
    s.fake.push(Reply::slow_text(
        &["one ", "two ", "three ", "four ", "five ", "six"],
        Duration::from_millis(600),
    ));
    let services = s.runtime.services().clone();
    let out = execute(
        &s,
        request(&s, "count slowly", None),
        CancellationToken::new(),
        move |e, _| {
            if matches!(e, AgentEvent::Message { partial: true, .. })
                && let Some(pid) = services.running().first().and_then(|i| i.pid)
            {
                kill(pid);
            }
        },
    )
    .await;
    let error = out.failed();
    assert!(
        error.contains("opencode server stopped mid-turn"),
        "{error}"
    );
}

/// One measured turn: time to the first text delta and to the end of the turn.
#[derive(Debug, Clone, Copy)]
struct Timing {
    first: Duration,
    total: Duration,
}

/// The same turn sent straight to `opencode serve` with curl: subscribe to `/event`, create
/// a session, `prompt_async`, wait for its `session.idle`, fetch its messages.
fn direct_turn(port: u16, prompt: &str) -> Timing {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let base = format!("http://127.0.0.1:{port}");
    let user = format!("opencode:{PASSWORD}");
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--fail",
                "-u",
                &user,
                "-H",
                "content-type: application/json",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "curl {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let started = std::time::Instant::now();
    let mut events = Command::new("curl")
        .args(["-sSN", "-u", &user, &format!("{base}/event")])
        .stdout(Stdio::piped())
        // It is killed while writing; its complaint about that is noise.
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(events.stdout.take().unwrap()).lines();
    // The subscription is live once the server's greeting arrived.
    let greeting = lines.next().unwrap().unwrap();
    assert!(greeting.contains("server.connected"), "{greeting}");
    let session: serde_json::Value = serde_json::from_str(&curl(&[
        "-X",
        "POST",
        "-d",
        "{}",
        &format!("{base}/session"),
    ]))
    .unwrap();
    let session = session["id"].as_str().unwrap().to_owned();
    let body = json!({"parts": [{"type": "text", "text": prompt}],
        "model": {"providerID": opencode::PROVIDER, "modelID": opencode::MODEL}});
    curl(&[
        "-X",
        "POST",
        "-d",
        &body.to_string(),
        &format!("{base}/session/{session}/prompt_async"),
    ]);
    let mut first = None;
    for line in lines {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let event: serde_json::Value = serde_json::from_str(data).unwrap();
        if event["properties"]["sessionID"] != session.as_str() {
            continue;
        }
        if event["type"] == "message.part.delta" && first.is_none() {
            first = Some(started.elapsed());
        }
        if event["type"] == "session.idle" {
            break;
        }
    }
    let messages = curl(&[&format!("{base}/session/{session}/message")]);
    assert!(messages.contains("bench reply"), "{messages}");
    let total = started.elapsed();
    let _ = events.kill();
    let _ = events.wait();
    Timing {
        first: first.expect("a text delta"),
        total,
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// The benchmark of the issue: time to the first text delta and to the end of a turn,
/// through rdev (component, runtime, project-http) versus straight to `opencode serve` with
/// curl, against one server started by the test. Prints the medians and their ratio; it
/// asserts only that every turn completed (speed is measured, not judged, here).
#[tokio::test(flavor = "multi_thread")]
async fn benchmark_through_rdev_versus_curl() {
    let port = opencode::free_port().unwrap();
    let grant = replacing(
        "project_http_ports = []",
        format!("project_http_ports = [{port}]"),
    );
    let Some(s) = setup_with(Some(port), grant).await else {
        return;
    };
    s.fake.set_fallback(Reply::slow_text(
        &["bench ", "reply ", "in ", "four ", "pieces"],
        Duration::from_millis(20),
    ));
    let bin = opencode::install().unwrap();
    let workspace = s._root.path().join(PROJECT);
    let home = tempfile::tempdir().unwrap();
    let mut server = opencode::serve_command(&bin, port, &workspace, home.path(), PASSWORD)
        .spawn()
        .unwrap();
    let client = harness::http_client();
    let health = format!("http://127.0.0.1:{port}/global/health");
    let mut healthy = false;
    for _ in 0..300 {
        let answer = client
            .get(&health)
            .basic_auth("opencode", Some(PASSWORD))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(healthy, "opencode serve never got healthy");

    const ROUNDS: usize = 5;
    let mut rdev = Vec::new();
    let mut direct = Vec::new();
    // Round 0 warms both paths up (provider SDK load, component compile) and is not counted.
    for round in 0..=ROUNDS {
        let timing = tokio::task::spawn_blocking(move || direct_turn(port, "bench"))
            .await
            .unwrap();
        if round > 0 {
            direct.push(timing);
        }
        let (out, timing) = timed(&s, PROJECT, "bench").await;
        assert_eq!(
            out.result().details.as_ref().unwrap()["host_run_server"],
            false
        );
        if round > 0 {
            rdev.push(timing);
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    let r_first = median(rdev.iter().map(|t| t.first).collect());
    let r_total = median(rdev.iter().map(|t| t.total).collect());
    let d_first = median(direct.iter().map(|t| t.first).collect());
    let d_total = median(direct.iter().map(|t| t.total).collect());
    println!(
        "opencode benchmark (median of {ROUNDS}): first text delta rdev {r_first:?} / curl \
         {d_first:?} = {:.2}x; whole turn rdev {r_total:?} / curl {d_total:?} = {:.2}x",
        r_first.as_secs_f64() / d_first.as_secs_f64(),
        r_total.as_secs_f64() / d_total.as_secs_f64(),
    );
}

/// Whether process `pid` still exists (a reaped one has no /proc entry).
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Runs `prompt` in `project` and returns the outcome with its time to the first text delta
/// and to the result.
async fn timed(s: &Setup, project: &str, prompt: &str) -> (Collected, Timing) {
    let first = Arc::new(Mutex::new(None));
    let seen = first.clone();
    let started = std::time::Instant::now();
    let out = execute_in(
        s,
        project,
        request(s, prompt, None),
        CancellationToken::new(),
        move |e, _| {
            if matches!(e, AgentEvent::Message { partial: true, .. }) {
                seen.lock().unwrap().get_or_insert(started.elapsed());
            }
        },
    )
    .await;
    let total = started.elapsed();
    out.completed();
    let first = first.lock().unwrap().expect("a text delta");
    (out, Timing { first, total })
}

/// Issue #19 part 1: the second command of a project is served by the server the first one
/// started (same process, same port, no start-up wait), and a server unused for the idle
/// timeout is stopped.
#[tokio::test(flavor = "multi_thread")]
async fn the_second_command_reuses_the_warm_server_until_it_idles_out() {
    let idle = replacing(
        "idle_timeout_secs = 900",
        "idle_timeout_secs = 3".to_owned(),
    );
    let Some(s) = setup_with(None, idle).await else {
        return;
    };
    s.fake.set_fallback(Reply::text("warm or cold"));
    let (_, cold) = timed(&s, PROJECT, "first").await;
    let started = s
        .service(PROJECT)
        .expect("the server runs after the command");
    let (second, warm) = timed(&s, PROJECT, "second").await;
    assert_eq!(second.result().final_text.as_deref(), Some("warm or cold"));
    let reused = s.service(PROJECT).expect("still running");
    assert_eq!((reused.pid, reused.port), (started.pid, started.port));
    assert!(reused.uses > started.uses, "{reused:?} after {started:?}");
    println!("opencode first text: cold {cold:?}, warm {warm:?}");
    assert!(
        warm.first < cold.first,
        "the warm command waited for a start: {warm:?} vs {cold:?}"
    );
    // Unused for 3 s, the server is stopped and forgotten.
    let pid = started.pid.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (s.service(PROJECT).is_some() || alive(pid)) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        s.service(PROJECT).is_none(),
        "the idle server is still listed"
    );
    assert!(!alive(pid), "the idle server's process {pid} still runs");
    // The next command starts a new one.
    timed(&s, PROJECT, "third").await;
    assert_ne!(s.service(PROJECT).unwrap().pid, Some(pid));
}

/// Issue #19 part 1: two projects running OpenCode at the same time each get their own
/// server, on its own port, in its own workspace (before, both used port 4096 and whichever
/// server came first served both projects, in its own workspace).
#[tokio::test(flavor = "multi_thread")]
async fn two_projects_at_once_each_have_their_own_server_in_their_own_workspace() {
    let Some(s) = setup().await else { return };
    s.fake.set_fallback(Reply::slow_text(
        &["side ", "by ", "side"],
        Duration::from_millis(100),
    ));
    let (a, b) = tokio::join!(timed(&s, PROJECT, "one"), timed(&s, OTHER, "two"));
    for (out, _) in [&a, &b] {
        assert_eq!(out.result().final_text.as_deref(), Some("side by side"));
    }
    let one = s.service(PROJECT).expect("the first project's server");
    let two = s.service(OTHER).expect("the second project's server");
    assert_ne!(one.port, two.port);
    assert_ne!(one.pid, two.pid);
    for (info, project) in [(&one, PROJECT), (&two, OTHER)] {
        let cwd = std::fs::read_link(format!("/proc/{}/cwd", info.pid.unwrap())).unwrap();
        let workspace = s._root.path().join(project).canonicalize().unwrap();
        assert_eq!(cwd, workspace, "{project}'s server runs elsewhere");
    }
    // The sessions live in each project's own server.
    let sessions: Vec<_> = [&a, &b]
        .iter()
        .map(|(o, _)| o.result().session_id.clone().unwrap())
        .collect();
    assert_ne!(sessions[0], sessions[1]);
    s.runtime
        .services()
        .stop_project(&ProjectId::parse(PROJECT).unwrap())
        .await;
    assert!(s.service(PROJECT).is_none());
    assert!(!alive(one.pid.unwrap()), "the stopped server still runs");
    assert!(
        alive(two.pid.unwrap()),
        "the other project's server was stopped too"
    );
}
