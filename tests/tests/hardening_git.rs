//! The git provider through a real `rdev serve` (SQLite, the real git plugin, real git): a
//! prompt cannot make git run a program of its choosing (#21 part 3).

use serde_json::Value;

use rdev_tests::harness::server::TestServer;

/// Submits `prompt` to the git provider of `project`, follows the stream to `done` and
/// returns the command as `GET /commands/{id}` reports it.
async fn run_git(server: &TestServer, project: &str, prompt: &str) -> Value {
    let submitted = server.submit(project, "git", prompt).await;
    let (events, command) = server.follow(&submitted).await;
    assert_eq!(
        events.last().and_then(|e| e.event.as_deref()),
        Some("done"),
        "{events:?}"
    );
    command
}

#[tokio::test]
async fn git_refuses_options_that_run_programs_and_still_runs_plain_commands() {
    let server = TestServer::sqlite().await;
    let outside = tempfile::tempdir().expect("marker dir");
    let marker = |name: &str| outside.path().join(name);

    let init = run_git(&server, "repo", "init -q").await;
    assert_eq!(init["status"], "completed", "{init}");
    let commit = run_git(
        &server,
        "repo",
        "-c user.name=T -c user.email=t@example.com commit -q --allow-empty -m first",
    )
    .await;
    assert_eq!(commit["status"], "completed", "{commit}");

    // Each of these ran `touch <marker>` on a git without the provider's checks.
    let attacks = [
        (
            "alias",
            format!("-c alias.pwn='!touch {}' pwn", marker("alias").display()),
        ),
        (
            "fsmonitor",
            format!(
                "-c core.fsmonitor='touch {}' status",
                marker("fsmonitor").display()
            ),
        ),
        (
            "config-then-alias",
            format!(
                "config alias.st '!touch {}'",
                marker("config-then-alias").display()
            ),
        ),
        (
            "rebase-exec",
            format!(
                "rebase --exec 'touch {}' --root",
                marker("rebase-exec").display()
            ),
        ),
        (
            "upload-pack",
            format!(
                "ls-remote --upload-pack='touch {}' .",
                marker("upload-pack").display()
            ),
        ),
    ];
    for (name, prompt) in &attacks {
        let command = run_git(&server, "repo", prompt).await;
        assert_eq!(command["status"], "failed", "{name}: {command}");
        let error = command["error"].as_str().unwrap_or_default();
        assert!(error.contains("refused"), "{name}: {command}");
        assert!(
            !marker(name).exists(),
            "{name}: git ran the prompt's program"
        );
    }
    // `config alias.st …` was refused, so `st` is no command either.
    let st = run_git(&server, "repo", "st").await;
    assert!(
        st["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a git command")),
        "{st}"
    );

    let log = run_git(&server, "repo", "log --format=%s").await;
    assert_eq!(log["status"], "completed", "{log}");
    server.stop().await;
}
