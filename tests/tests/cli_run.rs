//! `rdev run` as a user runs it, against an in-process `rdev serve`: Ctrl-C cancels the
//! command on the server, a streamed reply is printed once, the provider's exit code is
//! the process's, and `--session`, `--model` and `--option` reach the provider.

use std::process::{Output, Stdio};
use std::time::Duration;

use rdev_tests::doubles::anthropic::{FakeAnthropic, Reply};
use rdev_tests::harness::bin::assert_exit;
use rdev_tests::harness::server::TestServer;
use rdev_tests::harness::{self, claude, sandbox};
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `rdev run` against `server` as the admin, with the URL and token from the environment.
fn run_command(server: &TestServer, args: &[&str]) -> tokio::process::Command {
    let mut cmd = server.client(&server.admin);
    cmd.arg("run").args(args).stdin(Stdio::null());
    cmd
}

async fn run(server: &TestServer, args: &[&str]) -> Output {
    run_command(server, args)
        .output()
        .await
        .expect("rdev run runs")
}

/// The command id `rdev run` announced on stderr.
fn queued_id(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("command ")?.strip_suffix(" queued"))
        .unwrap_or_else(|| panic!("no `command … queued` line: {stderr}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_command_on_the_server_and_exits_130() {
    let server = TestServer::sqlite().await;
    let mut child = run_command(
        &server,
        &[
            "--project",
            "sigint",
            "--provider",
            "shell",
            "echo started; sleep 60; echo never",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("rdev run starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    tokio::time::timeout(Duration::from_secs(60), stdout.read_line(&mut first))
        .await
        .expect("the command starts within a minute")
        .expect("stdout");
    assert_eq!(first, "started\n");

    let pid = child.id().expect("pid").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("rdev run ends after Ctrl-C")
        .expect("rdev run exits");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("[cancelled"), "{stderr}");
    assert!(!text(&output.stdout).contains("never"));

    let id = queued_id(&stderr);
    let command = server.command(&id).await;
    assert_eq!(command["status"], "cancelled", "{command}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_exit_code_is_the_exit_code() {
    let server = TestServer::sqlite().await;
    let failed = run(
        &server,
        &["--project", "codes", "--provider", "shell", "exit 3"],
    )
    .await;
    assert_eq!(failed.status.code(), Some(3), "{}", text(&failed.stderr));
    let bad_option = run(
        &server,
        &["--project", "codes", "--option", "novalue", "true"],
    )
    .await;
    assert_exit(&bad_option, 1, "KEY=VALUE");
    server.stop().await;
}

/// The real claude CLI, streaming text deltas (`--option include_partial_messages=true`)
/// against the fake Messages API, its key and URL in the server's credential store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_reply_is_printed_once_and_its_session_continues() {
    if harness::on_path(claude::install()).is_none() {
        return;
    }
    let fake = FakeAnthropic::start().expect("fake API");
    let allow = sandbox::allow_rule(&fake.base_url());
    let server = TestServer::sqlite_with(|c| c.confinement.allow_hosts.push(allow)).await;
    for (name, value) in [
        ("ANTHROPIC_API_KEY", "sk-ant-cli-run"),
        ("ANTHROPIC_BASE_URL", fake.base_url().as_str()),
    ] {
        let (status, body) = server
            .admin_call(
                Method::PUT,
                &format!("/credentials/{name}"),
                Some(json!({ "value": value })),
            )
            .await;
        assert!(status.is_success(), "{name}: {status} {body}");
    }

    let reply = ["Hello ", "from ", "a streamed ", "reply."];
    fake.push(Reply::slow_text(&reply, Duration::from_millis(20)));
    let first = run(
        &server,
        &[
            "--project",
            "streamed",
            "--provider",
            "claude",
            "--option",
            "include_partial_messages=true",
            "--model",
            "claude-cli-run-model",
            "say hello",
        ],
    )
    .await;
    let stderr = text(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&first.stdout), format!("{}\n", reply.concat()));
    let sent = &fake.stream_requests()[0];
    assert_eq!(sent.body["model"], "claude-cli-run-model", "{}", sent.body);
    let session = stderr
        .lines()
        .find_map(|l| l.strip_prefix("session "))
        .unwrap_or_else(|| panic!("no session line at the end: {stderr}"))
        .to_owned();

    fake.push(Reply::text("Still here"));
    let second = run(
        &server,
        &[
            "--project",
            "streamed",
            "--provider",
            "claude",
            "--session",
            &session,
            "and now?",
        ],
    )
    .await;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert_eq!(text(&second.stdout), "Still here\n");
    fake.stream_requests()[1].assert_carries(&["say hello"]);
    server.stop().await;
}
