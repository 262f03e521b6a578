//! Claude provider overhead: the plain case (one prompt, one text reply from the fake
//! Messages API) run by spawning the CLI directly in the mode the plugin uses (`claude -p
//! --input-format stream-json --output-format stream-json --verbose --permission-prompt-tool
//! stdio`, the prompt written to stdin as a `user` message, stdin then closed), and through rdev — the real `claude` component in the real runtime over the
//! LocalExecutor, as the worker runs every command (`CodeAgent::execute` on a `WasmAgent`,
//! which instantiates the component, spawns the CLI with the resolved secrets, parses its
//! output in the guest and emits normalized events). Both modes use the same CLI, fake API,
//! workspace, HOME and environment, alternating run by run so machine load hits both alike.
//!
//! Time to first event: direct, from spawn to the CLI's first stdout line (its `init`);
//! through rdev, from `execute` to the first event (the parsed `init`). Total: direct, until
//! the process exited and its output was read; through rdev, until `execute` returned the
//! result. The queue and HTTP layers are not included (the queue bench measures them).
//!
//! The CLI itself takes ~400 ms and varies by more than rdev's share on a loaded machine, so a
//! second pair of modes replaces it with a stand-in `claude` that prints the recorded plain
//! transcript (`plugins/claude/tests/fixtures/plain.jsonl`) once it read the prompt line, and
//! exits: what is left is rdev's
//! own cost per command. Besides the p50 of each mode, the p50 of the paired differences
//! (each rdev run minus the direct run next to it) is printed.
//!
//! A third pair runs the real CLI through rdev twice, over the unconfined and the confined
//! local executor (the sandbox of docs/sandbox.md, the fake API reachable through the
//! project's allow-list): what confinement adds to a whole command.
//!
//! Run: `cargo xtask plugins && cargo bench -p rdev-tests --bench claude` (iterations per
//! mode from `RDEV_BENCH_ITERATIONS`, default 20, after 2 unmeasured warm-ups each).

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdev::adapters::local::{Workspace, WorkspaceLayout};
use rdev::domain::{AgentRequest, CommandId, ProjectId, ResultStatus};
use rdev::ports::{CodeAgent, Execution};
use rdev::runtime::{Runtime, RuntimeConfig, WasmAgent};
use rdev_tests::doubles::anthropic::{FakeAnthropic, Reply};
use rdev_tests::harness::bench::{env_count, median, ms};
use rdev_tests::harness::runtime::{MapSecrets, runtime_with_secrets};
use rdev_tests::harness::{claude, plugins, put_on_path, sandbox};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

const PROMPT: &str = "say hello";
const REPLY: &str = "Hello from the benchmark";
const PROJECT: &str = "bench";
const API_KEY: &str = "sk-ant-bench";

/// One run's two timings.
#[derive(Debug, Clone, Copy)]
struct Sample {
    first_event: Duration,
    total: Duration,
}

/// What the claude plugin sets for the CLI (plugins/claude/src/lib.rs), so the direct run
/// sees the same environment the executor gives it.
fn plugin_env(base_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ANTHROPIC_API_KEY", API_KEY.to_owned()),
        ("ANTHROPIC_BASE_URL", base_url.to_owned()),
        ("CLAUDE_CODE_MAX_RETRIES", "3".to_owned()),
        ("DISABLE_AUTOUPDATER", "1".to_owned()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_owned()),
    ]
}

async fn direct(cli: &Path, workspace: &Path, home: &Path, base_url: &str, reply: &str) -> Sample {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(cli)
        .args([
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-prompt-tool",
            "stdio",
        ])
        .current_dir(workspace)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .envs(plugin_env(base_url))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn claude");
    // The prompt as the plugin writes it; closing stdin then ends the CLI after this turn,
    // as the plugin does when no follow-up input waits.
    let mut stdin = child.stdin.take().expect("piped stdin");
    let message =
        serde_json::json!({"type": "user", "message": {"role": "user", "content": PROMPT}});
    stdin
        .write_all(format!("{message}\n").as_bytes())
        .await
        .expect("write the prompt");
    drop(stdin);
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let drain_stderr = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(_)) = lines.next_line().await {}
    });
    let mut lines = BufReader::new(stdout).lines();
    let mut first_event = None;
    let mut saw_reply = false;
    while let Some(line) = lines.next_line().await.expect("read stdout") {
        first_event.get_or_insert_with(|| started.elapsed());
        saw_reply |= line.contains(reply);
    }
    let status = child.wait().await.expect("wait");
    let _ = drain_stderr.await;
    let total = started.elapsed();
    assert!(status.success() && saw_reply, "direct run failed: {status}");
    Sample {
        first_event: first_event.expect("the CLI printed something"),
        total,
    }
}

async fn through_rdev(agent: &WasmAgent, reply: &str) -> Sample {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let mut request = AgentRequest::new(PROMPT);
    request.timeout = Duration::from_secs(120);
    let execution = Execution {
        command_id: CommandId::from_uuid(uuid::Uuid::now_v7()),
        project_id: ProjectId::parse(PROJECT).expect("valid id"),
        request,
        events: tx,
        cancel: CancellationToken::new(),
        mcp_servers: Vec::new(),
    };
    let started = Instant::now();
    let collector = tokio::spawn(async move {
        let mut first = None;
        while rx.recv().await.is_some() {
            first.get_or_insert_with(|| started.elapsed());
        }
        first
    });
    let result = agent.execute(execution).await.expect("execute");
    let total = started.elapsed();
    let first_event = collector.await.expect("collector").expect("an event");
    assert_eq!(result.status, ResultStatus::Completed, "{result:?}");
    assert_eq!(result.final_text.as_deref(), Some(reply));
    Sample { first_event, total }
}

/// A `claude` that prints the recorded plain transcript and exits, in `dir`.
fn stand_in_cli(dir: &Path) -> std::path::PathBuf {
    let fixture = xtask::workspace_root().join("plugins/claude/tests/fixtures/plain.jsonl");
    assert!(fixture.is_file(), "{} is missing", fixture.display());
    let cli = dir.join("claude");
    std::fs::write(
        &cli,
        format!("#!/bin/sh\nread -r _\nexec cat '{}'\n", fixture.display()),
    )
    .expect("write the stand-in");
    let mut permissions = std::fs::metadata(&cli).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&cli, permissions).expect("chmod");
    cli
}

/// Runs both modes `iterations` times, alternating which goes first, after two warm-ups.
async fn compare(
    iterations: usize,
    cli: &Path,
    agent: &WasmAgent,
    workspace: &Path,
    home: &Path,
    base_url: &str,
    reply: &str,
) -> (Vec<Sample>, Vec<Sample>) {
    for _ in 0..2 {
        through_rdev(agent, reply).await;
        direct(cli, workspace, home, base_url, reply).await;
    }
    let mut native = Vec::with_capacity(iterations);
    let mut rdev = Vec::with_capacity(iterations);
    for i in 0..iterations {
        if i % 2 == 0 {
            native.push(direct(cli, workspace, home, base_url, reply).await);
            rdev.push(through_rdev(agent, reply).await);
        } else {
            rdev.push(through_rdev(agent, reply).await);
            native.push(direct(cli, workspace, home, base_url, reply).await);
        }
    }
    (native, rdev)
}

/// Runs `a` and `b` through rdev `iterations` times each, alternating which goes first,
/// after two warm-ups each.
async fn compare_agents(
    iterations: usize,
    a: &WasmAgent,
    b: &WasmAgent,
    reply: &str,
) -> (Vec<Sample>, Vec<Sample>) {
    for _ in 0..2 {
        through_rdev(a, reply).await;
        through_rdev(b, reply).await;
    }
    let mut first = Vec::with_capacity(iterations);
    let mut second = Vec::with_capacity(iterations);
    for i in 0..iterations {
        if i % 2 == 0 {
            first.push(through_rdev(a, reply).await);
            second.push(through_rdev(b, reply).await);
        } else {
            second.push(through_rdev(b, reply).await);
            first.push(through_rdev(a, reply).await);
        }
    }
    (first, second)
}

/// A runtime over the confined local executor in `root` whose commands may reach `base_url`;
/// `None` when this host cannot confine.
fn confined_runtime(root: &Path, base_url: &str, secrets: MapSecrets) -> Option<Runtime> {
    let secrets: Arc<MapSecrets> = Arc::new(secrets);
    let rule = sandbox::allow_rule(base_url);
    let executor = sandbox::executor(root, secrets.clone(), &[rule.as_str()])?;
    let mut config = RuntimeConfig::new(Arc::new(executor), secrets);
    config.cache_dir = Some(root.join("cache"));
    Some(Runtime::new(config).expect("runtime starts"))
}

/// Which timing of a sample a row reports.
type Pick = fn(&Sample) -> Duration;

fn report(label: &str, native: &[Sample], rdev: &[Sample]) {
    let rows: [(&str, Pick); 2] = [
        ("time to first event", |s| s.first_event),
        ("total", |s| s.total),
    ];
    for (name, pick) in rows {
        let n = median(native.iter().map(|s| ms(pick(s))).collect());
        let r = median(rdev.iter().map(|s| ms(pick(s))).collect());
        let paired = median(
            native
                .iter()
                .zip(rdev)
                .map(|(a, b)| ms(pick(b)) - ms(pick(a)))
                .collect(),
        );
        println!(
            "| {label} | {name} | {n:.1} | {r:.1} | {:+.1} | {paired:+.1} | {:.3} |",
            r - n,
            r / n
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let iterations = env_count("RDEV_BENCH_ITERATIONS", 20);
    let cli = claude::install().unwrap_or_else(|e| panic!("installing the claude CLI: {e}"));
    put_on_path(&cli);
    let fake = FakeAnthropic::start().expect("fake API");
    fake.set_fallback(Reply::text(REPLY));
    let root = tempfile::tempdir().expect("temp dir");
    let secrets = MapSecrets(HashMap::from([
        ("ANTHROPIC_API_KEY".to_owned(), API_KEY.to_owned()),
        ("ANTHROPIC_BASE_URL".to_owned(), fake.base_url()),
    ]));
    let runtime = runtime_with_secrets(root.path(), Duration::from_secs(5), secrets);
    let agent: Arc<WasmAgent> = runtime
        .load(&plugins::plugins_dir().join("claude.toml"))
        .await
        .expect("load the claude plugin");

    // The first rdev run creates the project's workspace and HOME; the direct runs use the
    // same two directories, so both see the same files and session history.
    through_rdev(&agent, REPLY).await;
    let layout = WorkspaceLayout::PerProject {
        root: root.path().join("projects"),
    };
    let Workspace {
        root: workspace,
        home,
    } = layout
        .prepare(&ProjectId::parse(PROJECT).expect("valid id"))
        .expect("the workspace exists");
    let base_url = fake.base_url();
    let (native, rdev) = compare(
        iterations, &cli, &agent, &workspace, &home, &base_url, REPLY,
    )
    .await;

    let confined_root = tempfile::tempdir().expect("temp dir");
    let confined_root = confined_root
        .path()
        .canonicalize()
        .expect("canonical temp dir");
    let confined = confined_runtime(
        &confined_root,
        &base_url,
        MapSecrets(HashMap::from([
            ("ANTHROPIC_API_KEY".to_owned(), API_KEY.to_owned()),
            ("ANTHROPIC_BASE_URL".to_owned(), base_url.clone()),
        ])),
    );
    let confined_pair = match &confined {
        Some(runtime) => {
            let confined_agent = runtime
                .load(&plugins::plugins_dir().join("claude.toml"))
                .await
                .expect("load the claude plugin");
            Some(compare_agents(iterations, &agent, &confined_agent, REPLY).await)
        }
        None => None,
    };

    // The stand-in goes first on PATH for a second runtime (the executor hands children the
    // PATH it saw when it was built).
    let stand_in_dir = tempfile::tempdir().expect("temp dir");
    let stand_in = stand_in_cli(stand_in_dir.path());
    put_on_path(&stand_in);
    let replay_root = tempfile::tempdir().expect("temp dir");
    let replay_runtime = runtime_with_secrets(
        replay_root.path(),
        Duration::from_secs(5),
        MapSecrets(HashMap::from([
            ("ANTHROPIC_API_KEY".to_owned(), API_KEY.to_owned()),
            ("ANTHROPIC_BASE_URL".to_owned(), base_url.clone()),
        ])),
    );
    let replay_agent = replay_runtime
        .load(&plugins::plugins_dir().join("claude.toml"))
        .await
        .expect("load the claude plugin");
    let recorded = "Hello from the fake";
    let (replay_native, replay_rdev) = compare(
        iterations,
        &stand_in,
        &replay_agent,
        &workspace,
        &home,
        &base_url,
        recorded,
    )
    .await;

    println!(
        "claude plain case, {iterations} runs of each mode, CLI {} (ms; p50)",
        claude::CLI_VERSION
    );
    println!(
        "| CLI | measurement | direct | rdev | rdev − direct | paired difference | rdev / direct |"
    );
    println!("|---|---|---|---|---|---|---|");
    report("real `claude`", &native, &rdev);
    report(
        "stand-in (replays the transcript)",
        &replay_native,
        &replay_rdev,
    );
    match confined_pair {
        Some((unconfined, confined)) => {
            println!("real `claude` through rdev, unconfined then confined executor (ms; p50)");
            println!(
                "| CLI | measurement | unconfined | confined | confined − unconfined | paired difference | confined / unconfined |"
            );
            println!("|---|---|---|---|---|---|---|");
            report("real `claude`", &unconfined, &confined);
        }
        None => println!("this host cannot confine commands: no confined pair"),
    }
}
