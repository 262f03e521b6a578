//! `rdev run` at a terminal: the real `rdev` binary on a pseudo-terminal against a real
//! `rdev serve` (in process, SQLite) running the `interact` test guest (ABI 0.2.0). An
//! approval is asked inline and answered by typing (`y`, `n reason`, `a`lways), a typed
//! line reaches the agent as follow-up input; off a terminal `rdev run` reads nothing and
//! names the approval for `rdev approve`.

use std::process::Stdio;
use std::time::Duration;

use rdev::server::ServeConfig;
use rdev_tests::harness::plugins::with_interact;
use rdev_tests::harness::pty::Pty;
use rdev_tests::harness::server::TestServer;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Generous: a command runs a real plugin and the machine may be loaded.
const WAIT: Duration = Duration::from_secs(60);

/// The question `rdev run` asks for an approval.
const QUESTION: &str = "allow? [y]es / [n]o [reason] / [a]lways: ";

/// A server with `interact` in its plugins directory.
async fn server() -> (TestServer, tempfile::TempDir) {
    let plugins = with_interact();
    let dir = plugins.path().to_owned();
    let server =
        TestServer::sqlite_with(move |c: &mut ServeConfig| c.plugins_dir = Some(dir)).await;
    (server, plugins)
}

/// `rdev run --project p --provider interact PROMPT` as the admin.
fn rdev_run(server: &TestServer, prompt: &str) -> tokio::process::Command {
    let mut command = server.client(&server.admin);
    command.args(["run", "--project", "p", "--provider", "interact", prompt]);
    command
}

/// The command id `rdev run` announced.
fn queued_id(shown: &str) -> String {
    shown
        .lines()
        .find_map(|l| l.trim().strip_prefix("command ")?.strip_suffix(" queued"))
        .unwrap_or_else(|| panic!("no `command … queued` line: {shown}"))
        .to_owned()
}

fn final_text(command: &Value) -> &str {
    command["result"]["final_text"].as_str().unwrap_or("<none>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_is_asked_inline_and_the_typed_answer_decides_it() {
    let (server, _plugins) = server().await;
    let mut tty = Pty::spawn(rdev_run(&server, "run touch marker-$((40+2))"));
    let asked = tty.expect(QUESTION, 0, WAIT).await;
    let shown = tty.shown();
    assert!(shown.contains("Bash wants to run:"), "{shown}");
    assert!(shown.contains("touch marker-$((40+2))"), "{shown}");
    assert!(
        shown.contains(r#"input:   {"command":"touch marker-$((40+2))"}"#),
        "{shown}"
    );
    assert!(
        !server.workspace("p").join("marker-42").exists(),
        "nothing runs before the answer"
    );

    tty.type_line("maybe");
    let again = tty.expect(QUESTION, asked, WAIT).await;
    tty.type_line("y");
    tty.expect(" allowed", again, WAIT).await;
    assert_eq!(tty.exit_code(WAIT).await, Some(0), "{}", tty.shown());
    assert!(
        server.workspace("p").join("marker-42").exists(),
        "the allowed call ran: {}",
        tty.shown()
    );
    let command = server.finished_within(&queued_id(&tty.shown()), WAIT).await;
    assert_eq!(command["status"], "completed", "{command}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_denial_tells_the_agent_why_and_always_is_remembered() {
    let (server, _plugins) = server().await;
    let mut tty = Pty::spawn(rdev_run(&server, "run touch denied"));
    tty.expect(QUESTION, 0, WAIT).await;
    tty.type_line("n not on a Sunday");
    tty.expect(" denied", 0, WAIT).await;
    assert_eq!(tty.exit_code(WAIT).await, Some(0), "{}", tty.shown());
    let command = server.finished_within(&queued_id(&tty.shown()), WAIT).await;
    assert_eq!(final_text(&command), "denied: not on a Sunday", "{command}");
    assert!(!server.workspace("p").join("denied").exists());

    let mut tty = Pty::spawn(rdev_run(&server, "run touch always"));
    tty.expect(QUESTION, 0, WAIT).await;
    tty.type_line("a");
    tty.expect(" allowed (remembered)", 0, WAIT).await;
    assert_eq!(tty.exit_code(WAIT).await, Some(0), "{}", tty.shown());
    std::fs::remove_file(server.workspace("p").join("always")).expect("the call ran");

    // The same call again is decided by the remembered rule: nothing is asked.
    let mut tty = Pty::spawn(rdev_run(&server, "run touch always"));
    assert_eq!(tty.exit_code(WAIT).await, Some(0), "{}", tty.shown());
    assert!(!tty.shown().contains(QUESTION), "{}", tty.shown());
    assert!(server.workspace("p").join("always").exists());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_line_reaches_the_running_agent() {
    let (server, _plugins) = server().await;
    let mut tty = Pty::spawn(rdev_run(&server, "input"));
    let ready = tty.expect("[running]", 0, WAIT).await;
    tty.type_line("hello from the keyboard");
    let sent = tty.expect("[input sent]", ready, WAIT).await;
    // The guest emits each input it takes as a message, which `rdev run` prints.
    tty.expect("hello from the keyboard", sent, WAIT).await;
    tty.type_line("done");
    assert_eq!(tty.exit_code(WAIT).await, Some(0), "{}", tty.shown());
    let command = server.finished_within(&queued_id(&tty.shown()), WAIT).await;
    assert_eq!(
        final_text(&command),
        "hello from the keyboard,done",
        "{command}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_a_terminal_nothing_is_read_and_the_approval_is_named_for_rdev_approve() {
    let (server, _plugins) = server().await;
    let mut child = rdev_run(&server, "run touch scripted")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("rdev run starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let approval = tokio::time::timeout(WAIT, async {
        while let Some(line) = stderr.next_line().await.expect("stderr") {
            if let Some(rest) = line.strip_prefix("[approval ") {
                assert!(rest.contains("waiting: Bash touch scripted"), "{line}");
                return rest.split(' ').next().expect("id").to_owned();
            }
            assert!(!line.contains(QUESTION), "nothing is asked: {line}");
        }
        panic!("rdev run ended without naming the approval");
    })
    .await
    .expect("the approval is named within a minute");

    let mut approve = server.client(&server.admin);
    let approved = approve.args(["approve", &approval]).output().await;
    let approved = approved.expect("rdev approve runs");
    assert!(approved.status.success(), "{approved:?}");
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("rdev run ends")
        .expect("exit status");
    assert_eq!(status.code(), Some(0));
    assert!(server.workspace("p").join("scripted").exists());
    server.stop().await;
}
