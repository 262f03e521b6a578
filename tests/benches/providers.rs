//! Claude and OpenCode side by side (issue #19's benchmark): the same plain prompt, answered by
//! each provider's fake model API with the same reply in the same five pieces 20 ms apart,
//! run through the real components in one runtime over the LocalExecutor, as the worker runs
//! every command (`CodeAgent::execute` on a `WasmAgent`).
//!
//! - **Claude**: every command spawns the real `claude` CLI (npm), with live text deltas on
//!   (`include_partial_messages`), so its first text is a delta as OpenCode's is.
//! - **OpenCode cold**: the first command of a fresh project; the host starts the project's
//!   `opencode serve` (npm `opencode-ai`) before the prompt can be sent.
//! - **OpenCode warm**: the next commands of that project, served by the server the first one
//!   left running.
//!
//! The backend of OpenCode is configured through rdev's request options (base URL, key from
//! the credential store, model list), as docs/providers.md tells a user to. Each round uses a
//! new project and stops its server at the end, so every round has one cold command. Claude
//! runs alternate with OpenCode's so machine load hits both alike.
//!
//! Time to first text: from `execute` to the first `message` event. Total: until `execute`
//! returned a completed result. Printed: the p50 of each, the OpenCode warm/cold ratios, and
//! warm OpenCode's first text over Claude's (the goal: within 1.5×).
//!
//! Run: `cargo xtask plugins && cargo bench -p rdev-tests --bench providers` (rounds from
//! `RDEV_BENCH_ROUNDS`, default 5; warm commands per round from `RDEV_BENCH_WARM`, default 3).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdev::domain::{AgentEvent, AgentRequest, ResultStatus};
use rdev::runtime::WasmAgent;
use rdev_tests::doubles::{anthropic, openai};
use rdev_tests::harness::bench::{env_count, median_duration, ms};
use rdev_tests::harness::runtime::{self, MapSecrets, runtime_with_secrets};
use rdev_tests::harness::{claude, opencode, plugins, put_on_path};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PROMPT: &str = "say hello";
const PIECES: [&str; 5] = ["bench ", "reply ", "in ", "five ", "pieces"];
const PIECE_DELAY: Duration = Duration::from_millis(20);

/// One command's two timings.
#[derive(Debug, Clone, Copy)]
struct Sample {
    first_text: Duration,
    total: Duration,
}

/// Runs `PROMPT` in `project` and times it; panics unless the reply is the benchmark's.
async fn timed(
    agent: &WasmAgent,
    project: String,
    model: Option<String>,
    options: &Value,
) -> Sample {
    let mut request = AgentRequest::new(PROMPT);
    request.timeout = Duration::from_secs(180);
    request.model = model;
    request.options = options.as_object().cloned().unwrap_or_default();
    let first = Arc::new(OnceLock::new());
    let seen = first.clone();
    let started = Instant::now();
    let on_event = move |event: &AgentEvent, _: &CancellationToken| {
        if matches!(event, AgentEvent::Message { .. }) {
            seen.get_or_init(|| started.elapsed());
        }
    };
    let cancel = CancellationToken::new();
    let wait = Duration::from_secs(240);
    let collected = runtime::execute(agent, &project, request, cancel, wait, on_event).await;
    let total = started.elapsed();
    let result = collected.result.expect("execute");
    assert_eq!(result.status, ResultStatus::Completed, "{result:?}");
    assert_eq!(result.final_text.as_deref(), Some(PIECES.concat().as_str()));
    let first_text = *first.get().expect("a message");
    Sample { first_text, total }
}

/// The p50 of each timing of `samples`.
fn p50(samples: &[Sample]) -> Sample {
    Sample {
        first_text: median_duration(samples.iter().map(|s| s.first_text).collect()),
        total: median_duration(samples.iter().map(|s| s.total).collect()),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = env_count("RDEV_BENCH_ROUNDS", 5);
    let warm_per_round = env_count("RDEV_BENCH_WARM", 3);
    // Both CLIs go on PATH before the runtime is built: its executor hands children the PATH
    // it saw then.
    let claude_cli = claude::install().unwrap_or_else(|e| panic!("installing claude: {e}"));
    put_on_path(&claude_cli);
    let opencode_bin = opencode::install().unwrap_or_else(|e| panic!("installing opencode: {e}"));
    put_on_path(&opencode_bin);

    let messages = anthropic::FakeAnthropic::start().expect("fake Messages API");
    messages.set_fallback(anthropic::Reply::slow_text(&PIECES, PIECE_DELAY));
    let completions = openai::FakeOpenAi::start().expect("fake chat-completions API");
    completions.set_fallback(openai::Reply::slow_text(&PIECES, PIECE_DELAY));

    let root = tempfile::tempdir().expect("temp dir");
    let secrets = MapSecrets(HashMap::from([
        ("ANTHROPIC_API_KEY".to_owned(), "sk-ant-bench".to_owned()),
        ("ANTHROPIC_BASE_URL".to_owned(), messages.base_url()),
        ("OPENAI_API_KEY".to_owned(), "sk-bench".to_owned()),
    ]));
    let runtime = runtime_with_secrets(root.path(), Duration::from_secs(5), secrets);
    let load = |name: &'static str| {
        let runtime = &runtime;
        async move {
            let manifest = plugins::plugins_dir().join(format!("{name}.toml"));
            runtime
                .load(&manifest)
                .await
                .unwrap_or_else(|e| panic!("loading {name}: {e}"))
        }
    };
    let claude: Arc<WasmAgent> = load("claude").await;
    let opencode_agent: Arc<WasmAgent> = load("opencode").await;

    let claude_options = json!({"include_partial_messages": true});
    let opencode_model = format!("{}/{}", opencode::PROVIDER, opencode::MODEL);
    let opencode_options = json!({
        "base_url": completions.base_url(),
        "api_key_credential": "OPENAI_API_KEY",
        "models": [opencode_model],
    });
    let run_claude = || timed(&claude, "bench-claude".to_owned(), None, &claude_options);
    let run_opencode = |project: String| {
        timed(
            &opencode_agent,
            project,
            Some(opencode_model.clone()),
            &opencode_options,
        )
    };

    // Unmeasured warm-up: the components' first instantiation, the CLIs' first start (page
    // cache), OpenCode's provider SDK install into its cache.
    run_claude().await;
    run_opencode("bench-warmup".to_owned()).await;
    runtime.services().stop_all().await;

    let (mut claude_samples, mut cold, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let project = format!("bench-{round}");
        claude_samples.push(run_claude().await);
        cold.push(run_opencode(project.clone()).await);
        for _ in 0..warm_per_round {
            claude_samples.push(run_claude().await);
            warm.push(run_opencode(project.clone()).await);
        }
        runtime.services().stop_all().await;
    }

    let (c, oc, ow) = (p50(&claude_samples), p50(&cold), p50(&warm));
    println!(
        "plain prompt, {rounds} rounds of 1 cold + {warm_per_round} warm OpenCode commands, \
         claude {}, opencode {} (ms; p50)",
        claude::CLI_VERSION,
        opencode::VERSION
    );
    println!("| provider | commands | time to first text | total |");
    println!("|---|---|---|---|");
    for (label, n, s) in [
        ("Claude (CLI per command)", claude_samples.len(), c),
        ("OpenCode cold (server started)", cold.len(), oc),
        ("OpenCode warm (server reused)", warm.len(), ow),
    ] {
        println!(
            "| {label} | {n} | {:.1} | {:.1} |",
            ms(s.first_text),
            ms(s.total)
        );
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "OpenCode warm / cold: first text {:.3}, total {:.3}",
        ratio(ow.first_text, oc.first_text),
        ratio(ow.total, oc.total)
    );
    println!(
        "OpenCode warm / Claude: first text {:.3} (goal <= 1.5), total {:.3}",
        ratio(ow.first_text, c.first_text),
        ratio(ow.total, c.total)
    );
}
