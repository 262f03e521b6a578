//! The real `rdev` binary with the real shell and git plugins (and an out-of-tree example
//! plugin) against temporary workspaces.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rdev::domain::{AgentEvent, CommandStatus, HostEvent, OutputStream, ResultStatus, StreamEvent};
use rdev_tests::harness::bin::{assert_exit, rdev};
use rdev_tests::harness::examples;
use rdev_tests::harness::plugins::plugins_dir;
use rdev_tests::harness::sandbox;
use rdev_tests::harness::server::field_strings;

/// `rdev` loading plugins from `plugins` (through `RDEV_PLUGINS_DIR`, as users set it), with
/// a data dir under the target directory: `rdev exec` keeps its sandbox's state there, which
/// would otherwise be `./rdev-data` in the test's working directory.
fn command(plugins: &Path) -> Command {
    let mut cmd = Command::new(rdev());
    cmd.env("RDEV_PLUGINS_DIR", plugins).env(
        "RDEV_DATA_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-exec-data"),
    );
    cmd
}

fn exec(plugins: &Path, dir: &Path, provider: &str, extra: &[&str], prompt: &str) -> Output {
    command(plugins)
        .args(["exec", "--provider", provider, "--dir"])
        .arg(dir)
        .args(extra)
        .args(["--", prompt])
        .output()
        .expect("rdev runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every stdout line of a `--json` run, parsed.
fn json_lines(output: &Output) -> Vec<StreamEvent> {
    text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

fn stdout_text(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Agent(AgentEvent::Output {
                stream: OutputStream::Stdout,
                text,
            }) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn providers_lists_the_built_plugins() {
    let plugins = plugins_dir();
    let output = command(&plugins)
        .arg("providers")
        .output()
        .expect("rdev runs");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let table = text(&output.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    for name in ["git", "shell"] {
        let row = table
            .lines()
            .find(|l| l.trim_start_matches(name).starts_with(['*', ' ']) && l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}: {table}"));
        assert!(row.contains("0.1.0") && row.contains("serving"), "{row}");
        assert!(row.contains("streaming,cancel"), "{row}");
    }

    let output = command(&plugins)
        .args(["providers", "--json"])
        .output()
        .expect("rdev runs");
    assert_eq!(output.status.code(), Some(0));
    let listed: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let names: Vec<&str> = listed.iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(
        names.contains(&"git") && names.contains(&"shell"),
        "{names:?}"
    );
    assert_eq!(listed.iter().filter(|p| p["default"] == true).count(), 1);
}

#[test]
fn providers_shows_a_broken_plugin_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = plugins_dir();
    for ext in ["wasm", "toml"] {
        std::fs::copy(
            plugins.join(format!("shell.{ext}")),
            dir.path().join(format!("shell.{ext}")),
        )
        .expect("copy shell");
    }
    std::fs::write(
        dir.path().join("broken.toml"),
        "name = \"broken\"\nversion = ",
    )
    .expect("write");
    std::fs::write(dir.path().join("broken.wasm"), b"not a component").expect("write");
    let output = command(dir.path())
        .arg("providers")
        .output()
        .expect("rdev runs");
    assert_eq!(output.status.code(), Some(1));
    let table = text(&output.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("shell") && l.contains("serving")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("broken") && l.contains("failed")),
        "{table}"
    );
    assert!(
        table.contains("broken.toml"),
        "the error names the file: {table}"
    );
}

#[test]
fn a_missing_plugins_dir_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope");
    let output = command(&missing)
        .arg("providers")
        .output()
        .expect("rdev runs");
    assert_exit(&output, 1, "nope");
}

#[test]
fn shell_exit_codes_stdout_and_stderr() {
    let plugins = plugins_dir();
    let ws = tempfile::tempdir().expect("tempdir");
    let failed = exec(
        &plugins,
        ws.path(),
        "shell",
        &[],
        "echo out; echo err >&2; exit 3",
    );
    assert_eq!(failed.status.code(), Some(3), "the provider's exit code");
    assert_eq!(text(&failed.stdout), "out\n");
    let stderr = text(&failed.stderr);
    assert!(stderr.starts_with("err\n"), "{stderr}");
    assert!(stderr.contains("failed (exit 3)"), "{stderr}");

    let ok = exec(&plugins, ws.path(), "shell", &[], "printf 'a b'");
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert_eq!(text(&ok.stdout), "a b\n", "a newline ends the partial line");
    assert!(text(&ok.stderr).contains("completed (exit 0)"));
}

#[test]
fn json_output_is_one_stream_event_per_line_ending_with_done() {
    let plugins = plugins_dir();
    let ws = tempfile::tempdir().expect("tempdir");
    let output = exec(
        &plugins,
        ws.path(),
        "shell",
        &["--json"],
        "echo one; echo two >&2; exit 4",
    );
    assert_eq!(output.status.code(), Some(4), "the provider's exit code");
    let events = json_lines(&output);
    assert_eq!(stdout_text(&events), "one\n");
    assert!(events.iter().any(|e| matches!(
        e,
        StreamEvent::Agent(AgentEvent::Output { stream: OutputStream::Stderr, text }) if text == "two\n"
    )));
    match events.last() {
        Some(StreamEvent::Host(HostEvent::Done {
            status: CommandStatus::Failed,
            result: Some(result),
            ..
        })) => {
            assert_eq!(result.status, ResultStatus::Failed);
            assert_eq!(result.exit_code, Some(4));
        }
        other => panic!("last line is not a failed done event: {other:?}"),
    }
    assert_eq!(events.iter().filter(|e| e.is_terminal()).count(), 1);
}

#[test]
fn the_workspace_is_dir_with_its_own_home_and_no_host_environment() {
    let plugins = plugins_dir();
    let ws = tempfile::tempdir().expect("tempdir");
    let output = command(&plugins)
        .env("RDEV_LEAK_CHECK", "host-only")
        .args(["exec", "--provider", "shell", "--dir"])
        .arg(ws.path())
        .args(["--", "pwd -P; echo \"$HOME\"; env"])
        .output()
        .expect("rdev runs");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let root = ws.path().canonicalize().expect("canon");
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some(root.to_str().expect("utf-8")));
    assert_eq!(
        lines.next(),
        Some(root.join(".rdev/home").to_str().expect("utf-8"))
    );
    assert!(
        !stdout.contains("RDEV_LEAK_CHECK"),
        "host variable leaked: {stdout}"
    );
}

#[test]
fn git_runs_with_the_prompt_split_into_arguments() {
    let plugins = plugins_dir();
    let ws = tempfile::tempdir().expect("tempdir");
    let init = exec(&plugins, ws.path(), "git", &[], "init -q");
    assert_eq!(init.status.code(), Some(0), "{}", text(&init.stderr));
    assert!(ws.path().join(".git").is_dir());

    // Quotes group words; `;` is an ordinary character since no shell is involved.
    let commit = exec(
        &plugins,
        ws.path(),
        "git",
        &[],
        "git -c user.name='Test User' -c user.email=t@example.com commit -q --allow-empty -m \"first commit; not a command\"",
    );
    assert_eq!(commit.status.code(), Some(0), "{}", text(&commit.stderr));
    let log = exec(
        &plugins,
        ws.path(),
        "git",
        &["--json"],
        "log --format=%s|%an",
    );
    assert_eq!(log.status.code(), Some(0), "{}", text(&log.stderr));
    assert_eq!(
        stdout_text(&json_lines(&log)),
        "first commit; not a command|Test User\n"
    );

    let status = exec(&plugins, ws.path(), "git", &[], "status --porcelain");
    assert_eq!(
        text(&status.stdout),
        "",
        "rdev's state directory is invisible to git"
    );

    let unknown = exec(&plugins, ws.path(), "git", &[], "no-such-subcommand");
    assert_exit(&unknown, 1, "not a git command");

    let unbalanced = exec(&plugins, ws.path(), "git", &[], "commit -m 'open");
    assert_exit(&unbalanced, 1, "quote");
}

#[test]
fn usage_errors_exit_2() {
    let plugins = plugins_dir();
    let ws = tempfile::tempdir().expect("tempdir");
    let unknown = exec(&plugins, ws.path(), "nonexistent", &[], "x");
    assert_exit(&unknown, 2, "nonexistent");
    let bad_timeout = exec(&plugins, ws.path(), "shell", &["--timeout", "0"], "true");
    assert_eq!(bad_timeout.status.code(), Some(2));
    let bad_option = exec(
        &plugins,
        ws.path(),
        "shell",
        &["--option", "novalue"],
        "true",
    );
    assert_eq!(bad_option.status.code(), Some(2));
}

/// True once `pid` no longer runs (gone, or a zombie nobody reaped yet). Polls, because the
/// kill and the reaping are asynchronous.
fn gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z')) =>
            {
                return true;
            }
            Ok(_) if Instant::now() > deadline => return false,
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn ctrl_c_cancels_sleep_within_the_grace_period_and_kills_the_group() {
    let plugins = plugins_dir();
    let ws = tempfile::tempdir().expect("tempdir");
    let mut child = command(&plugins)
        .args([
            "exec",
            "--provider",
            "shell",
            "--json",
            "--grace",
            "60",
            "--dir",
        ])
        .arg(ws.path())
        .args(["--", "sleep 30.25 & echo started; sleep 30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rdev starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("first event");
    let event: StreamEvent = serde_json::from_str(&first).expect("json event");
    match event {
        StreamEvent::Agent(AgentEvent::Output { text, .. }) => assert_eq!(text, "started\n"),
        other => panic!("unexpected first event {other:?}"),
    }
    // The command's own `$!` is a pid in its sandbox's PID namespace: find the host's.
    let background = sandbox::wait_for_host_pid("sleep 30.25").expect("the background sleep");

    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("remaining events");
    let status = child.wait().expect("rdev exits");
    assert_eq!(status.code(), Some(130));

    // A result (rather than a forced stop, which has none) proves the provider stopped
    // cooperatively, well inside the 60 s grace period.
    let last: StreamEvent =
        serde_json::from_str(rest.lines().last().expect("a done line")).expect("json done");
    match last {
        StreamEvent::Host(HostEvent::Done {
            status: CommandStatus::Cancelled,
            result: Some(result),
            ..
        }) => assert_eq!(result.status, ResultStatus::Cancelled),
        other => panic!("not a cancelled result: {other:?}"),
    }
    assert!(
        gone(background),
        "the background sleep {background} survived the cancel"
    );
}

/// Copies a built example into `dir` as `<name>.wasm` + `<name>.toml`, the way its README
/// tells users to install it.
fn install_example(built: &examples::BuiltExample, dir: &Path, name: &str) -> PathBuf {
    std::fs::copy(&built.component, dir.join(format!("{name}.wasm"))).expect("copy component");
    std::fs::copy(&built.manifest, dir.join(format!("{name}.toml"))).expect("copy manifest");
    dir.to_owned()
}

#[test]
fn a_third_party_plugin_built_out_of_tree_runs_through_rdev_exec() {
    let built = examples::build("echo-provider", "echo-provider");
    let plugins = tempfile::tempdir().expect("tempdir");
    let dir = install_example(&built, plugins.path(), "echo");
    let ws = tempfile::tempdir().expect("tempdir");

    let listing = command(&dir).arg("providers").output().expect("rdev runs");
    assert_eq!(
        listing.status.code(),
        Some(0),
        "{}{}",
        text(&listing.stdout),
        text(&listing.stderr)
    );
    assert!(
        text(&listing.stdout)
            .lines()
            .any(|l| l.starts_with("echo*") && l.contains("serving"))
    );

    let output = exec(&dir, ws.path(), "echo", &["--json"], "hello from outside");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let events = json_lines(&output);
    assert!(
        events.iter().any(|e| matches!(
            e,
            StreamEvent::Agent(AgentEvent::Message { text, .. }) if text == "hello from outside"
        )),
        "{events:?}"
    );

    let via_exec = exec(
        &dir,
        ws.path(),
        "echo",
        &["--option", "via_exec=true"],
        "through echo",
    );
    assert_eq!(
        via_exec.status.code(),
        Some(0),
        "{}",
        text(&via_exec.stderr)
    );
    assert_eq!(text(&via_exec.stdout), "through echo\n");
}

/// `rdev <args>` against `server`, with the URL and token from the environment as users set
/// them; run off the test's runtime so the in-process server keeps answering.
async fn client(
    server: &rdev_tests::harness::server::TestServer,
    token: &str,
    args: &[&str],
) -> Output {
    let output = server.client(token).args(args).output().await;
    output.expect("rdev runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_are_listed_read_and_deleted_through_a_server() {
    let server = rdev_tests::harness::server::TestServer::sqlite().await;
    for (id, name) in [("alpha", "Alpha"), ("beta", "Beta")] {
        let response = server
            .request(reqwest::Method::POST, "/projects", Some(&server.admin))
            .json(&serde_json::json!({"id": id, "display_name": name}))
            .send()
            .await
            .expect("created");
        assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    }

    let listed = client(&server, &server.admin, &["projects", "list"]).await;
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed.stderr));
    let table = text(&listed.stdout);
    assert!(table.starts_with("ID"), "{table}");
    for (id, name) in [("alpha", "Alpha"), ("beta", "Beta")] {
        assert!(
            table.lines().any(|l| l.starts_with(id) && l.contains(name)),
            "{table}"
        );
    }
    let listed = client(&server, &server.admin, &["projects", "list", "--json"]).await;
    let value: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    let ids = field_strings(&value["projects"], "id");
    assert_eq!(ids.len(), 2, "{value}");

    let got = client(&server, &server.admin, &["projects", "get", "alpha"]).await;
    assert_eq!(got.status.code(), Some(0), "{}", text(&got.stderr));
    let project: serde_json::Value = serde_json::from_slice(&got.stdout).expect("JSON");
    assert_eq!(
        (project["id"].as_str(), project["display_name"].as_str()),
        (Some("alpha"), Some("Alpha"))
    );

    let deleted = client(&server, &server.admin, &["projects", "delete", "beta"]).await;
    assert_eq!(deleted.status.code(), Some(0), "{}", text(&deleted.stderr));
    assert_eq!(text(&deleted.stdout).trim(), "beta deleted");
    let gone = client(&server, &server.admin, &["projects", "get", "beta"]).await;
    assert_exit(&gone, 1, "project_not_found");
    let bad = client(&server, &server.admin, &["projects", "get", "../tokens"]).await;
    assert_exit(&bad, 1, "project id");

    // A member token sees only its projects and may not delete.
    let member = server.member_token(&["alpha"]).await;
    let listed = client(&server, &member, &["projects", "list", "--json"]).await;
    let value: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(
        value["projects"].as_array().map(Vec::len),
        Some(1),
        "{value}"
    );
    let refused = client(&server, &member, &["projects", "delete", "alpha"]).await;
    assert_exit(&refused, 1, "forbidden");

    // The --token flag wins over the environment.
    let mut cmd = tokio::process::Command::new(rdev());
    let flagged = cmd
        .args([
            "projects",
            "list",
            "--server",
            &server.base,
            "--token",
            &server.admin,
        ])
        .env("RDEV_TOKEN", "rdev_wrong")
        .output()
        .await
        .expect("rdev runs");
    assert_eq!(flagged.status.code(), Some(0), "{}", text(&flagged.stderr));
    let untokened = tokio::process::Command::new(rdev())
        .args(["projects", "list", "--server", &server.base])
        .env_remove("RDEV_TOKEN")
        .output()
        .await
        .expect("rdev runs");
    assert_exit(&untokened, 1, "a token is required");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_draws_no_spinner_when_stderr_is_not_a_terminal() {
    let server = rdev_tests::harness::server::TestServer::sqlite().await;
    let output = client(
        &server,
        &server.admin,
        &[
            "run",
            "--project",
            "quiet",
            "--provider",
            "shell",
            "sleep 0.5; echo done-here",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "done-here\n");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("[completed]"), "{stderr}");
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "no terminal control characters in piped stderr: {stderr:?}"
    );
    server.stop().await;
}

/// Runs the client with no `RDEV_URL`/`RDEV_TOKEN`, so only `home`'s config can supply them.
async fn client_from_config(home: &Path, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(rdev());
    cmd.args(args)
        .env_remove("RDEV_URL")
        .env_remove("RDEV_TOKEN")
        .env_remove("RDEV_CLIENT_CONFIG")
        .env_remove("RDEV_DATA_DIR")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"));
    cmd.output().await.expect("rdev runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_read_server_and_token_from_the_config_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = rdev_tests::harness::server::TestServer::sqlite().await;
    let response = server
        .request(reqwest::Method::POST, "/projects", Some(&server.admin))
        .json(&serde_json::json!({"id": "configured"}))
        .send()
        .await
        .expect("created");
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);

    let home = tempfile::tempdir().expect("home");
    let dir = home.path().join(".config/rdev");
    std::fs::create_dir_all(&dir).expect("config dir");
    let config = dir.join("client.toml");

    // Without a file there is no token, and the error says where one can come from.
    let missing = client_from_config(home.path(), &["projects", "list"]).await;
    assert_exit(&missing, 1, "client config");

    std::fs::write(
        &config,
        format!(
            "server = \"{}\"\ntoken = \"{}\"\n",
            server.base, server.admin
        ),
    )
    .expect("config written");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let listed = client_from_config(home.path(), &["projects", "list"]).await;
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed.stderr));
    assert!(text(&listed.stdout).contains("configured"));
    assert!(
        !text(&listed.stderr).contains("warning"),
        "{}",
        text(&listed.stderr)
    );

    // A flag still wins over the file: a wrong token from the flag is refused.
    let flagged =
        client_from_config(home.path(), &["projects", "list", "--token", "rdev_wrong"]).await;
    assert_exit(&flagged, 1, "401");

    // A file others can read is used, with a warning.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let loose = client_from_config(home.path(), &["projects", "list"]).await;
    assert_eq!(loose.status.code(), Some(0), "{}", text(&loose.stderr));
    assert!(
        text(&loose.stderr).contains("readable by other users"),
        "{}",
        text(&loose.stderr)
    );

    // A malformed file is refused without echoing its contents (the token).
    std::fs::write(&config, format!("token = {}\n", server.admin)).expect("bad config");
    let broken = client_from_config(home.path(), &["projects", "list"]).await;
    assert_eq!(broken.status.code(), Some(1));
    let stderr = text(&broken.stderr);
    assert!(stderr.contains("line 1"), "{stderr}");
    assert!(!stderr.contains(&server.admin), "{stderr}");

    // An explicitly named file must exist.
    let absent = client_from_config(
        home.path(),
        &[
            "projects",
            "list",
            "--client-config",
            "/nonexistent/client.toml",
        ],
    )
    .await;
    assert_exit(&absent, 1, "/nonexistent/client.toml");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_created_listed_and_deleted_through_a_server() {
    let server = rdev_tests::harness::server::TestServer::sqlite_with(|config| {
        config.webhooks.allow_private = true;
    })
    .await;
    let created = client(
        &server,
        &server.admin,
        &[
            "webhooks",
            "create",
            "--project",
            "hooked",
            "--url",
            "http://127.0.0.1:9/hook",
            "--event",
            "command.failed",
        ],
    )
    .await;
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
    let out = text(&created.stdout);
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .map(str::trim)
        .expect("an id line")
        .to_owned();
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret:"))
        .map(str::trim)
        .expect("a secret line");
    assert!(secret.starts_with("whsec_"), "{out}");

    let listed = client(
        &server,
        &server.admin,
        &["webhooks", "list", "--project", "hooked"],
    )
    .await;
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed.stderr));
    let table = text(&listed.stdout);
    assert!(
        table.lines().any(|l| l.starts_with(&id)
            && l.contains("enabled")
            && l.contains("command.failed")
            && l.contains("http://127.0.0.1:9/hook")),
        "{table}"
    );
    assert!(!table.contains(secret), "the secret is shown only once");

    let deliveries = client(
        &server,
        &server.admin,
        &["webhooks", "deliveries", "--project", "hooked", &id],
    )
    .await;
    assert_eq!(
        deliveries.status.code(),
        Some(0),
        "{}",
        text(&deliveries.stderr)
    );

    // Refusals come back as the server's or the client's error, with nothing changed.
    let private = client(
        &server,
        &server.admin,
        &["webhooks", "list", "--project", "../tokens"],
    )
    .await;
    assert_eq!(private.status.code(), Some(1));
    let bad_id = client(
        &server,
        &server.admin,
        &["webhooks", "delete", "--project", "hooked", "../x"],
    )
    .await;
    assert_exit(&bad_id, 1, "not a webhook id");

    let deleted = client(
        &server,
        &server.admin,
        &["webhooks", "delete", "--project", "hooked", &id],
    )
    .await;
    assert_eq!(deleted.status.code(), Some(0), "{}", text(&deleted.stderr));
    let gone = client(
        &server,
        &server.admin,
        &["webhooks", "delete", "--project", "hooked", &id],
    )
    .await;
    assert_exit(&gone, 1, "webhook_not_found");
}
