//! ABI 0.2's `interaction` import end to end inside the runtime: the real `interact` test
//! guest (plugins/testing/interact) on the real wasmtime runtime and local executor, with
//! the [`Interaction`] port implemented by a small desk in this file that answers from a
//! list of decisions, waits for the cancel when it has none, and hands out input channels.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdev::domain::interaction::{Allow, Decision, FollowUp, OptionKind, PermissionRequest};
use rdev::domain::{AgentEvent, AgentResult, CommandId, ResultStatus};
use rdev::ports::interaction::{InputReceiver, NOBODY_TO_ASK};
use rdev::ports::{CodeAgent, Interaction, InteractionContext, InteractionError};
use rdev::runtime::{Runtime, WasmAgent};
use rdev_tests::harness::plugins::test_plugins_dir;
use rdev_tests::harness::runtime::{run, runtime, runtime_with_interaction};
use serde_json::json;
use tokio::sync::mpsc;

const GRACE: Duration = Duration::from_secs(2);
const LONG: Duration = Duration::from_secs(600);

/// An implementation of the port: decides from a list, then waits for the cancel.
struct Desk {
    decisions: Mutex<VecDeque<Decision>>,
    asked: mpsc::UnboundedSender<PermissionRequest>,
    opened: mpsc::UnboundedSender<(CommandId, mpsc::Sender<FollowUp>)>,
    cancelled: AtomicUsize,
}

#[async_trait]
impl Interaction for Desk {
    async fn request_permission(
        &self,
        ctx: &InteractionContext,
        request: PermissionRequest,
    ) -> Result<Decision, InteractionError> {
        let _ = self.asked.send(request);
        let next = self.decisions.lock().expect("lock").pop_front();
        if let Some(decision) = next {
            return Ok(decision);
        }
        ctx.cancel.cancelled().await;
        self.cancelled.fetch_add(1, Ordering::SeqCst);
        Err(InteractionError::Cancelled)
    }

    async fn open_input(&self, ctx: &InteractionContext) -> Option<InputReceiver> {
        let (tx, rx) = mpsc::channel(8);
        let _ = self.opened.send((ctx.command_id.clone(), tx));
        Some(rx)
    }
}

struct Host {
    work: tempfile::TempDir,
    runtime: Runtime,
    desk: Arc<Desk>,
    asked: mpsc::UnboundedReceiver<PermissionRequest>,
    opened: mpsc::UnboundedReceiver<(CommandId, mpsc::Sender<FollowUp>)>,
}

impl Host {
    fn new(decisions: Vec<Decision>) -> Self {
        let work = tempfile::tempdir().expect("tempdir");
        let (asked_tx, asked) = mpsc::unbounded_channel();
        let (opened_tx, opened) = mpsc::unbounded_channel();
        let desk = Arc::new(Desk {
            decisions: Mutex::new(decisions.into()),
            asked: asked_tx,
            opened: opened_tx,
            cancelled: AtomicUsize::new(0),
        });
        let runtime = runtime_with_interaction(work.path(), GRACE, desk.clone());
        Self {
            work,
            runtime,
            desk,
            asked,
            opened,
        }
    }

    fn workspace_file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.work.path().join("projects/test").join(name)).ok()
    }
}

async fn interact(runtime: &Runtime) -> Arc<WasmAgent> {
    runtime
        .load(&test_plugins_dir().join("interact.toml"))
        .await
        .expect("the interact plugin (ABI 0.2.0) loads")
}

async fn execute(agent: &WasmAgent, prompt: &str) -> AgentResult {
    let r = run(prompt, LONG, 64);
    agent.execute(r.execution).await.expect("execution runs")
}

#[tokio::test]
async fn an_allowed_tool_call_runs_and_its_effect_is_in_the_workspace() {
    let mut host = Host::new(vec![Decision::allow()]);
    let agent = interact(&host.runtime).await;
    let result = execute(&agent, "run echo yes > allowed").await;
    assert_eq!(result.status, ResultStatus::Completed, "{result:?}");
    assert_eq!(host.workspace_file("allowed").as_deref(), Some("yes\n"));

    let asked = host.asked.try_recv().expect("the port was asked");
    assert_eq!(asked.tool, "Bash");
    assert_eq!(asked.tool_call_id.as_deref(), Some("toolu_interact_1"));
    assert_eq!(asked.input, json!({"command": "echo yes > allowed"}));
    assert_eq!(asked.summary, "echo yes > allowed");
    let kinds: Vec<OptionKind> = asked.options.iter().map(|o| o.kind).collect();
    assert_eq!(kinds, [OptionKind::AllowOnce, OptionKind::RejectOnce]);
}

#[tokio::test]
async fn an_allow_with_edited_input_runs_the_edited_call() {
    let edited = Decision::Allow(Allow {
        updated_input: Some(json!({"command": "echo edited > edited"})),
        ..Allow::default()
    });
    let host = Host::new(vec![edited]);
    let agent = interact(&host.runtime).await;
    let result = execute(&agent, "run echo original > original").await;
    assert_eq!(result.status, ResultStatus::Completed, "{result:?}");
    assert_eq!(host.workspace_file("edited").as_deref(), Some("edited\n"));
    assert_eq!(host.workspace_file("original"), None);
}

#[tokio::test]
async fn a_denial_reaches_the_provider_with_its_message_and_nothing_runs() {
    let host = Host::new(vec![Decision::deny("not on a Sunday")]);
    let agent = interact(&host.runtime).await;
    let result = execute(&agent, "run echo no > denied").await;
    assert_eq!(
        result.final_text.as_deref(),
        Some("denied: not on a Sunday")
    );
    assert_eq!(host.workspace_file("denied"), None);
}

#[tokio::test]
async fn without_an_approval_service_every_request_is_denied() {
    let work = tempfile::tempdir().expect("tempdir");
    let runtime = runtime(work.path(), GRACE);
    let agent = interact(&runtime).await;
    let result = execute(&agent, "run echo no > denied").await;
    assert_eq!(
        result.final_text.as_deref(),
        Some(format!("denied: {NOBODY_TO_ASK}").as_str())
    );
    assert!(!work.path().join("projects/test/denied").exists());
}

#[tokio::test]
async fn a_cancel_while_a_decision_is_pending_cancels_the_execution_and_the_request() {
    let mut host = Host::new(Vec::new());
    let agent = interact(&host.runtime).await;
    let r = run("run echo late > late", LONG, 64);
    let cancel = r.cancel.clone();
    let execution = tokio::spawn(async move { agent.execute(r.execution).await });
    host.asked
        .recv()
        .await
        .expect("the request reaches the port");
    cancel.cancel();
    let result = execution.await.expect("joins").expect("a result");
    assert_eq!(result.status, ResultStatus::Cancelled);
    assert_eq!(host.desk.cancelled.load(Ordering::SeqCst), 1);
    assert_eq!(host.workspace_file("late"), None);
}

#[tokio::test]
async fn an_oversized_request_is_refused_before_anyone_sees_it() {
    let mut host = Host::new(vec![Decision::allow()]);
    let agent = interact(&host.runtime).await;
    let result = execute(&agent, "oversized").await;
    let text = result.final_text.unwrap_or_default();
    assert!(
        text.starts_with("invalid: ") && text.contains("summary"),
        "{text}"
    );
    assert!(host.asked.try_recv().is_err(), "the port was not asked");
}

/// Starts `prompt` and returns the execution and the sender of its input.
async fn start_with_input(
    host: &mut Host,
    prompt: &str,
) -> (
    tokio::task::JoinHandle<AgentResult>,
    mpsc::Sender<FollowUp>,
    mpsc::Receiver<AgentEvent>,
) {
    let agent = interact(&host.runtime).await;
    let r = run(prompt, LONG, 64);
    let command_id = r.execution.command_id.clone();
    let execution =
        tokio::spawn(async move { agent.execute(r.execution).await.expect("execution runs") });
    let (opened_for, input) = host.opened.recv().await.expect("input was opened");
    assert_eq!(opened_for, command_id);
    (execution, input, r.events)
}

fn follow_up(id: &str, text: &str) -> FollowUp {
    FollowUp {
        id: id.into(),
        text: text.into(),
    }
}

#[tokio::test]
async fn follow_up_input_reaches_the_provider_in_order_and_closes_with_the_execution() {
    let mut host = Host::new(Vec::new());
    let (execution, input, mut events) = start_with_input(&mut host, "input").await;
    input.send(follow_up("i1", "one")).await.expect("sent");
    input.send(follow_up("i2", "done")).await.expect("sent");
    let result = execution.await.expect("joins");
    assert_eq!(result.final_text.as_deref(), Some("one,done"));
    let mut messages = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let AgentEvent::Message { text, .. } = event {
            messages.push(text);
        }
    }
    assert_eq!(messages, ["one", "done"]);
    assert!(
        input.is_closed(),
        "the execution ended, so its input is closed"
    );
}

#[tokio::test]
async fn a_closed_input_ends_the_providers_wait() {
    let mut host = Host::new(Vec::new());
    let (execution, input, _events) = start_with_input(&mut host, "input").await;
    input.send(follow_up("i1", "one")).await.expect("sent");
    drop(input);
    let result = execution.await.expect("joins");
    assert_eq!(result.final_text.as_deref(), Some("one,closed"));
}

#[tokio::test]
async fn input_interrupts_a_blocking_read() {
    let mut host = Host::new(Vec::new());
    let (execution, input, mut events) = start_with_input(&mut host, "input-while-reading").await;
    // The guest's process printed this; the guest now blocks reading its output.
    while let Some(event) = events.recv().await {
        if matches!(&event, AgentEvent::Message { text, .. } if text == "reading") {
            break;
        }
    }
    input.send(follow_up("i1", "hello")).await.expect("sent");
    let result = execution.await.expect("joins");
    assert_eq!(result.status, ResultStatus::Completed);
    assert_eq!(result.final_text.as_deref(), Some("hello"));
}

#[tokio::test]
async fn a_0_1_0_provider_is_offered_no_input() {
    let mut host = Host::new(Vec::new());
    let fixture = xtask::workspace_root().join("tests/fixtures/abi-v0.1.0/shell.toml");
    let agent = host.runtime.load(&fixture).await.expect("0.1.0 loads");
    let result = execute(&agent, "echo hi").await;
    assert_eq!(result.status, ResultStatus::Completed);
    assert!(
        host.opened.try_recv().is_err(),
        "no input channel was opened"
    );
}
