//! No process outlives its command (#21 part 4), through a real `rdev serve`:
//! - confined, as in production, with the `hostile` test guest: a guest that ignores a cancel
//!   while it holds a running process is given up by the worker after its grace; the command
//!   still ends, and the process is killed with the abandoned execution;
//! - unconfined (`--unconfined`) with the real shell provider: a `setsid` escapee dies when
//!   its command ends, is cancelled or times out, and what a crashed (SIGKILLed) server's
//!   command left is dead before the project's next command runs.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use rdev_tests::harness::plugins::{plugins_dir, with_test_guest};
use rdev_tests::harness::runtime::edit_file;
use rdev_tests::harness::server::{ServeProcess, TestServer};

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
    edit_file(&plugins.path().join("hostile.toml"), |text| {
        text.replace("exec = [\"true\"]", "exec = [\"sleep\"]")
    });
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
    let (status, body) = server.cancel(&run.id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let command = server.finished_within(&run.id, WAIT).await;
    assert_eq!(command["status"], "cancelled", "{command}");
    until_gone(sleeper, "the abandoned execution's process").await;
    server.stop().await;
}

/// Waits until no process runs `command_line` (a killed one may take a moment to go).
async fn until_gone(command_line: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(command_line) {
        assert!(
            Instant::now() < deadline,
            "{what}: {command_line} still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A shell script that starts `sleep <secs>` in a new session (out of the command's process
/// group, with its own stdio), says `started`, then runs `rest`.
fn escape(secs: &str, rest: &str) -> String {
    format!("setsid sh -c 'exec sleep {secs}' </dev/null >/dev/null 2>&1 & echo started; {rest}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfined_setsid_escapees_die_when_their_command_ends_is_cancelled_or_times_out() {
    let server = TestServer::sqlite_with(|config| config.confinement.unconfined = true).await;
    let (_, ready) = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready["confinement"]["mode"], "unconfined", "{ready}");

    // Ends: the script returns at once, its escapee with it.
    let ended = "sleep 878.11";
    assert!(!running(ended), "a leftover of an earlier run");
    let mut run = server
        .run("p", "shell", json!({"prompt": escape("878.11", "true")}))
        .await;
    let command = server.finished_within(&run.id, WAIT).await;
    assert_eq!(command["status"], "completed", "{command}");
    let said = run.next("output", WAIT).await;
    assert_eq!(said["text"], "started\n", "{said}");
    until_gone(ended, "after its command ended").await;

    // Cancelled, and timed out, while the script still runs.
    for (secs, timeout, status) in [("878.12", 600, "cancelled"), ("878.13", 2, "failed")] {
        let escapee = format!("sleep {secs}");
        let mut run = server
            .run(
                "p",
                "shell",
                json!({"prompt": escape(secs, "exec sleep 1000"), "timeout_secs": timeout}),
            )
            .await;
        run.next("output", WAIT).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !running(&escapee) {
            assert!(Instant::now() < deadline, "{escapee} never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if status == "cancelled" {
            let (code, body) = server
                .admin_call(Method::POST, &format!("/commands/{}/cancel", run.id), None)
                .await;
            assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        }
        let command = server.finished_within(&run.id, WAIT).await;
        assert_eq!(command["status"], status, "{command}");
        until_gone(&escapee, &format!("after its command was {status}")).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfined_leftovers_of_a_crashed_server_die_before_the_projects_next_command() {
    let mut serve = ServeProcess::start(&plugins_dir(), &[("RDEV_UNCONFINED", "true")]).await;
    let (escapee, leader) = ("sleep 878.21", "sleep 878.22");
    assert!(
        !running(escapee) && !running(leader),
        "a leftover of an earlier run"
    );
    let prompt = escape("878.21", "exec sleep 878.22");
    let submitted = serve.submit("p", "shell", json!({"prompt": prompt})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(running(escapee) && running(leader)) {
        assert!(
            Instant::now() < deadline,
            "the command never started:\n{}",
            serve.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    serve.crash_and_restart().await;
    // The next command of the project runs only once the crashed one is rescued ("host
    // lost", after its lease); it reports whether the old processes still run.
    let check =
        format!("for p in '{escapee}' '{leader}'; do if pgrep -f \"$p\\$\"; then exit 1; fi; done");
    let next = serve.run_to_end("p", "shell", &check).await;
    assert_eq!(next["status"], "completed", "{next}\n{}", serve.logs());
    let first = serve
        .finished(submitted["command_id"].as_str().expect("id"))
        .await;
    assert_eq!(first["status"], "failed", "{first}");
    assert!(!running(escapee) && !running(leader));
    assert!(
        serve
            .logs()
            .contains("process tree killed with its command")
            || serve.logs().contains("are tracked and killed with it"),
        "the tracking mechanism is logged:\n{}",
        serve.logs()
    );
}
