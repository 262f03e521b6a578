//! Provider ABI versions side by side. A component built against ABI 0.1.0 before 0.2.0
//! existed (`tests/fixtures/abi-v0.1.0`, checked in and never rebuilt) must keep loading and
//! running on every later host, through the adapter from 0.1.0 into the newest ABI.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rdev::domain::{AgentEvent, ResultStatus};
use rdev::ports::CodeAgent;
use rdev::runtime::{AbiVersion, Runtime, WasmAgent};
use rdev_tests::harness::runtime::{output, run, runtime};

/// Longer than the shell provider's own escalation from SIGINT to SIGTERM (2 s), so a
/// process that ignores SIGINT still ends within the grace period.
const GRACE: Duration = Duration::from_secs(10);
const LONG: Duration = Duration::from_secs(600);

fn frozen_0_1_0() -> PathBuf {
    xtask::workspace_root().join("tests/fixtures/abi-v0.1.0/shell.toml")
}

/// A runtime over `work` and the frozen 0.1.0 component it loaded.
async fn load_frozen(work: &Path) -> (Runtime, Arc<WasmAgent>) {
    let runtime = runtime(work, GRACE);
    let agent = runtime.load(&frozen_0_1_0()).await;
    (runtime, agent.expect("the 0.1.0 component loads"))
}

#[tokio::test]
async fn a_frozen_0_1_0_component_loads_runs_and_reaches_its_workspace() {
    let work = tempfile::tempdir().expect("tempdir");
    let (_runtime, agent) = load_frozen(work.path()).await;
    assert_eq!(agent.manifest().abi, AbiVersion::new(0, 1, 0));

    let mut r = run(
        "printf 'out\\n'; printf 'err\\n' >&2; echo made > by-0.1.0; exit 3",
        LONG,
        64,
    );
    let result = agent.execute(r.execution).await.expect("execution runs");
    assert_eq!(result.status, ResultStatus::Failed);
    assert_eq!(result.exit_code, Some(3));

    let (stdout, stderr) = output(&mut r.events);
    assert_eq!(stdout, "out\n");
    assert_eq!(stderr, "err\n");
    let made = std::fs::read_to_string(work.path().join("projects/test/by-0.1.0"))
        .expect("the process ran in the project's workspace");
    assert_eq!(made, "made\n");
}

#[tokio::test]
async fn a_frozen_0_1_0_component_honours_a_cancel() {
    let work = tempfile::tempdir().expect("tempdir");
    let (_runtime, agent) = load_frozen(work.path()).await;
    let r = run("echo started; sleep 600", LONG, 64);
    let cancel = r.cancel.clone();
    let mut events = r.events;
    let execution = tokio::spawn(async move { agent.execute(r.execution).await });
    // Cancel once the process is known to run, so the cancel reaches a blocking read.
    while let Some(event) = events.recv().await {
        if matches!(&event, AgentEvent::Output { text, .. } if text.contains("started")) {
            break;
        }
    }
    cancel.cancel();
    let result = execution
        .await
        .expect("task joins")
        .expect("a cancelled execution still returns a result");
    assert_eq!(result.status, ResultStatus::Cancelled);
}
