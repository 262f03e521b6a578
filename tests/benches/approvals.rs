//! Approval round-trip benchmark: the host's overhead of asking a person, on SQLite and
//! PostgreSQL. A real `rdev serve` (in process) runs the `interact` guest on an `input`
//! prompt, so a command is running; the broker the worker uses is called as the runtime
//! calls it, and an SSE client of the command's stream stands for the person's screen.
//!
//! - **request → SSE**: from `request_permission` being called to the `approval_requested`
//!   event arriving at the SSE client (policy read, the pending row with its event, audit
//!   entry and webhook in one transaction, fan-out, HTTP);
//! - **decision → agent**: from sending `POST /approvals/{id}` to `request_permission`
//!   returning the decision (HTTP, decide-once update with its event and audit entry, the
//!   decision signal — NOTIFY on PostgreSQL — and the broker's re-read). Handing the
//!   decision to the guest adds one wasmtime return (microseconds).
//!
//! Run: `cargo bench -p rdev-tests --bench approvals` (guests built first by
//! `cargo xtask plugins`; `RDEV_TEST_POSTGRES` for the PostgreSQL row).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdev::domain::interaction::{Decision, PermissionRequest};
use rdev::domain::{CommandId, ProjectId, ProviderName};
use rdev::ports::Interaction;
use rdev::ports::InteractionContext;
use rdev::server::ServeConfig;
use rdev::services::approvals::ApprovalBroker;
use rdev_tests::harness::plugins::with_interact;
use rdev_tests::harness::server::TestServer;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SAMPLES: usize = 200;

/// The median and the 95th percentile (ms) of `all`.
fn percentiles(mut all: Vec<f64>) -> (f64, f64) {
    all.sort_by(f64::total_cmp);
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    (at(0.5), at(0.95))
}

/// How long one event may take to arrive before the run is given up.
const WAIT: Duration = Duration::from_secs(60);

/// The median and p95 (ms) of both legs over [`SAMPLES`] round trips on `server`.
async fn measure(server: &TestServer) -> ((f64, f64), (f64, f64)) {
    let mut run = server
        .run("bench", "interact", json!({"prompt": "input"}))
        .await;
    run.running(WAIT).await;
    let stores = &server.server().state().stores;
    let broker = Arc::new(ApprovalBroker::new(
        stores.approvals.clone(),
        stores.events.clone(),
    ));
    let ctx = InteractionContext {
        command_id: CommandId::parse(&run.id).expect("command id"),
        project_id: ProjectId::parse("bench").expect("project"),
        provider: ProviderName::parse("interact").expect("provider"),
        cancel: CancellationToken::new(),
        permissions: None,
    };
    let (mut to_sse, mut to_agent) = (Vec::new(), Vec::new());
    for n in 0..SAMPLES {
        let request = PermissionRequest {
            tool_call_id: Some(format!("toolu_{n}")),
            tool: "Bash".into(),
            input: json!({"command": format!("echo {n}")}),
            summary: format!("echo {n}"),
            options: Vec::new(),
        };
        let started = Instant::now();
        let (b, c) = (broker.clone(), ctx.clone());
        let waiting = tokio::spawn(async move {
            let decision = b.request_permission(&c, request).await;
            (decision, Instant::now())
        });
        let requested = run.next("approval_requested", WAIT).await;
        let id = requested["approval"]["id"].as_str().expect("id");
        to_sse.push(started.elapsed().as_secs_f64() * 1000.0);
        let posted = Instant::now();
        server.decide(id, json!({"decision": "allow"})).await;
        let (decision, returned) = waiting.await.expect("broker task");
        assert!(matches!(decision, Ok(Decision::Allow(_))), "{decision:?}");
        to_agent.push((returned - posted).as_secs_f64() * 1000.0);
    }
    server.cancel(&run.id).await;
    (percentiles(to_sse), percentiles(to_agent))
}

async fn row(name: &str, server: Option<TestServer>) {
    let Some(server) = server else {
        println!("| {name:<10} | skipped (no database) | | | |");
        return;
    };
    let ((sse, sse95), (agent, agent95)) = measure(&server).await;
    println!(
        "| {name:<10} | {sse:>6.2} ms | {sse95:>6.2} ms | {agent:>6.2} ms | {agent95:>6.2} ms |"
    );
    server.stop().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let plugins = with_interact();
    let dir = plugins.path().to_owned();
    let quiet = |config: &mut ServeConfig| config.plugins_dir = Some(dir.clone());
    println!("approval round trip over {SAMPLES} samples (goal: p50 ≤ 5 ms per leg)");
    println!("| database   | request → SSE p50 | p95 | decision → agent p50 | p95 |");
    println!("|------------|-------------------|-----|----------------------|-----|");
    row("SQLite", Some(TestServer::sqlite_with(quiet).await)).await;
    row("PostgreSQL", TestServer::postgres_with(quiet).await).await;
}
