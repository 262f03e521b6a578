//! No process outlives its command (#21 part 4), through a real `rdev serve` (confined, as
//! in production) with the `hostile` test guest: a guest that ignores a cancel while it holds
//! a running process is given up by the worker after its grace; the command still ends, and
//! the process is killed with the abandoned execution.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use rdev_tests::harness::plugins::with_test_guest;
use rdev_tests::harness::server::TestServer;

const WAIT: Duration = Duration::from_secs(60);

/// Whether a process runs whose command line ends with this (the program may be named
/// by its full path).
fn running(command_line: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", &format!("{command_line}$")])
        .output()
        .expect("pgrep runs")
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_guest_the_worker_gives_up_on_ends_and_leaves_no_process() {
    let plugins = with_test_guest("hostile");
    let manifest = plugins.path().join("hostile.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(
        &manifest,
        text.replace("exec = [\"true\"]", "exec = [\"sleep\"]"),
    )
    .expect("manifest written");
    let dir = plugins.path().to_owned();
    let server = TestServer::sqlite_with(move |config| {
        config.plugins_dir = Some(dir);
        // The worker stops waiting for a cancelled guest long before the runtime would kill
        // it, so the worker's own give-up path is what ends the command.
        config.worker.timeout_grace = Duration::from_secs(1);
    })
    .await;
    let sleeper = "sleep 876.25";
    assert!(!running(sleeper), "a leftover of an earlier run");
    let mut run = server
        .run("p", "hostile", json!({"prompt": "hold-process 876.25"}))
        .await;
    let said = run.next("message", WAIT).await;
    assert_eq!(said["text"], "spawned", "{said}");
    assert!(running(sleeper), "the guest's process runs");
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/commands/{}/cancel", run.id),
            Some(&server.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let command = server.finished_within(&run.id, WAIT).await;
    assert_eq!(command["status"], "cancelled", "{command}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(sleeper) {
        assert!(
            Instant::now() < deadline,
            "the abandoned execution's process still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}
