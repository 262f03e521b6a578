//! The sandbox against hostile plugins: real components (`plugins/testing/hostile`, the
//! shell plugin) on the real wasmtime runtime and the local executor.

use std::sync::Arc;
use std::time::Duration;

use rdev::domain::{AgentEvent, ResultStatus};
use rdev::ports::{AgentError, CodeAgent};
use rdev::runtime::{LoadError, Runtime, WasmAgent};
use rdev_tests::harness::plugins::test_plugins_dir;
use rdev_tests::harness::runtime::{edit_file, install, load_shell, output, run, runtime};

const GRACE: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(600);

struct Host {
    _dir: tempfile::TempDir,
    runtime: Runtime,
}

fn host() -> Host {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = runtime(dir.path(), GRACE);
    Host { _dir: dir, runtime }
}

async fn hostile(host: &Host) -> Arc<WasmAgent> {
    host.runtime
        .load(&test_plugins_dir().join("hostile.toml"))
        .await
        .expect("hostile plugin loads")
}

/// Proves the plugin still serves: a plain execution completes with the prompt echoed.
async fn assert_serves(agent: &WasmAgent) {
    let r = run("still alive", LONG, 16);
    let result = agent.execute(r.execution).await.expect("execution runs");
    assert_eq!(result.status, ResultStatus::Completed);
    assert_eq!(result.final_text.as_deref(), Some("still alive"));
}

#[tokio::test]
async fn an_infinite_loop_is_killed_at_its_deadline_and_the_next_execution_runs() {
    let host = host();
    let agent = hostile(&host).await;
    let r = run("loop", Duration::from_secs(1), 16);
    let error = agent
        .execute(r.execution)
        .await
        .expect_err("a loop cannot finish");
    assert_eq!(error, AgentError::TimedOut { timeout_secs: 1 });
    assert_serves(&agent).await;
}

#[tokio::test]
async fn a_1_gib_allocation_traps_against_the_memory_limit() {
    let host = host();
    let agent = hostile(&host).await;
    let r = run("alloc", LONG, 16);
    match agent.execute(r.execution).await {
        Err(AgentError::Crashed(message)) => {
            assert!(message.contains("memory"), "{message}");
        }
        other => panic!("expected a crash, got {other:?}"),
    }
    assert_serves(&agent).await;
}

#[tokio::test]
async fn a_panic_fails_only_that_execution() {
    let host = host();
    let agent = hostile(&host).await;
    // A concurrent execution of the same plugin is unaffected by the panic.
    let other = run("wait-cancel", LONG, 16);
    let cancel_other = other.cancel.clone();
    let bystander = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.execute(other.execution).await })
    };
    let r = run("panic", LONG, 16);
    match agent.execute(r.execution).await {
        Err(AgentError::Crashed(message)) => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected a crash, got {other:?}"),
    }
    cancel_other.cancel();
    let bystander = bystander.await.expect("task").expect("bystander runs");
    assert_eq!(bystander.status, ResultStatus::Cancelled);
    assert_serves(&agent).await;
}

#[tokio::test]
async fn exec_of_a_program_not_on_the_allow_list_is_denied() {
    let host = host();
    let agent = hostile(&host).await;
    for program in ["cat", "/bin/true", "sh"] {
        let r = run(&format!("exec {program}"), LONG, 16);
        let result = agent.execute(r.execution).await.expect("runs");
        let text = result.final_text.unwrap_or_default();
        assert!(text.starts_with("denied:"), "{program}: {text}");
    }
    // The granted program does run, so the denial above is the allow-list at work.
    let r = run("exec true", LONG, 16);
    let result = agent.execute(r.execution).await.expect("runs");
    assert_eq!(result.final_text.as_deref(), Some("spawned"));
}

#[tokio::test]
async fn the_guest_sees_no_host_files_environment_or_network() {
    let host = host();
    let agent = hostile(&host).await;
    let r = run("fs", LONG, 16);
    let result = agent.execute(r.execution).await.expect("runs");
    let report: serde_json::Value =
        serde_json::from_str(result.final_text.as_deref().unwrap_or("")).expect("JSON report");
    for key in ["read", "cwd_file", "list", "socket"] {
        let outcome = report[key].as_str().unwrap_or_default();
        assert!(outcome.starts_with("error"), "{key}: {outcome}");
    }
    assert_eq!(report["env"], 0);
    assert_eq!(report["args"], 0);
}

#[tokio::test]
async fn an_event_flood_is_back_pressured_and_nothing_is_lost() {
    let host = host();
    let agent = hostile(&host).await;
    let total = 20_000usize;
    let capacity = 8;
    let mut r = run(&format!("flood {total}"), LONG, capacity);
    let probe = r.execution.events.clone();
    let task = tokio::spawn({
        let agent = agent.clone();
        async move { agent.execute(r.execution).await }
    });
    // Wait until the guest has filled the sink...
    while probe.capacity() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...and see that it is held there: it cannot finish while nobody reads.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished(), "the guest ran ahead of a full sink");
    assert_eq!(probe.capacity(), 0);
    drop(probe);

    let mut expected = 0usize;
    while let Some(event) = r.events.recv().await {
        match event {
            AgentEvent::Message { text, .. } => {
                assert_eq!(text, expected.to_string(), "events out of order");
                expected += 1;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(expected, total);
    let result = task.await.expect("task").expect("flood completes");
    assert_eq!(result.final_text.as_deref(), Some("sent 20000"));
}

#[tokio::test]
async fn cancel_is_delivered_once_and_the_guest_cleans_up() {
    let host = host();
    let agent = hostile(&host).await;
    let mut r = run("cancel-once", LONG, 1024);
    let cancel = r.cancel.clone();
    let task = tokio::spawn({
        let agent = agent.clone();
        async move { agent.execute(r.execution).await }
    });
    let first = r.events.recv().await.expect("a first event");
    assert!(matches!(first, AgentEvent::Message { ref text, .. } if text == "tick"));
    cancel.cancel();
    let result = task.await.expect("task").expect("the guest returns");
    assert_eq!(result.status, ResultStatus::Cancelled);
    assert_eq!(result.final_text.as_deref(), Some("cleaned up"));
    let mut last = None;
    while let Ok(event) = r.events.try_recv() {
        last = Some(event);
    }
    assert!(
        matches!(last, Some(AgentEvent::Message { ref text, .. }) if text == "cleanup"),
        "{last:?}"
    );
}

#[tokio::test]
async fn a_guest_ignoring_cancel_is_stopped_after_the_grace_period() {
    let host = host();
    let agent = hostile(&host).await;
    let r = run("ignore-cancel", LONG, 16);
    let cancel = r.cancel.clone();
    let task = tokio::spawn({
        let agent = agent.clone();
        async move { agent.execute(r.execution).await }
    });
    cancel.cancel();
    let error = task.await.expect("task").expect_err("must be stopped");
    assert_eq!(error, AgentError::CancelIgnored { grace_secs: 1 });
    assert_serves(&agent).await;
}

#[tokio::test]
async fn a_timeout_above_the_manifest_ceiling_is_refused() {
    let host = host();
    let agent = hostile(&host).await;
    let r = run("hi", Duration::from_secs(7200), 16);
    assert!(matches!(
        agent.execute(r.execution).await,
        Err(AgentError::InvalidRequest(_))
    ));
}

#[tokio::test]
async fn the_shell_plugin_streams_output_and_reports_the_exit_code() {
    let host = host();
    let agent = load_shell(&host.runtime).await;
    let mut r = run("echo out; echo err >&2; exit 3", LONG, 64);
    let result = agent.execute(r.execution).await.expect("runs");
    assert_eq!(result.status, ResultStatus::Failed);
    assert_eq!(result.exit_code, Some(3));
    let (stdout, stderr) = output(&mut r.events);
    assert_eq!(stdout, "out\n");
    assert_eq!(stderr, "err\n");
}

#[tokio::test]
async fn load_errors_name_the_file_and_the_reason() {
    let host = host();
    let dir = tempfile::tempdir().expect("tempdir");
    let source = test_plugins_dir();
    let load_error = |name: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        let runtime = host.runtime.clone();
        async move { runtime.load(&path).await.err() }
    };

    install(&source, "versioned-v1", dir.path(), "garbage", None);
    std::fs::write(dir.path().join("garbage.wasm"), b"not wasm").expect("write");
    let text = load_error("garbage")
        .await
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        text.contains("garbage.wasm")
            && text.contains("not a WebAssembly component (bad magic number)"),
        "{text}"
    );

    install(&source, "versioned-v1", dir.path(), "future", None);
    let manifest = dir.path().join("future.toml");
    edit_file(&manifest, |text| {
        text.replace("abi = \"0.1.0\"", "abi = \"0.9.0\"")
    });
    let text = load_error("future")
        .await
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        text.contains("future.wasm") && text.contains("0.9.0 is not supported"),
        "{text}"
    );

    std::fs::write(dir.path().join("broken.toml"), "name = [").expect("write");
    let err = load_error("broken").await;
    assert!(matches!(err, Some(LoadError::Manifest(_))), "{err:?}");
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("broken.toml: malformed manifest"), "{text}");

    // A valid core module is not a provider component.
    install(&source, "versioned-v1", dir.path(), "core", None);
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").expect("write");
    let text = load_error("core")
        .await
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        text.contains("core.wasm") && text.contains("a core WebAssembly module, not a component"),
        "{text}"
    );
}

/// Files in the compile cache: a refusal before compiling leaves it as it was.
fn cached_artifacts(cache: &std::path::Path) -> usize {
    std::fs::read_dir(cache).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn a_component_importing_wasi_http_is_refused_before_compiling_with_advice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = runtime(dir.path(), GRACE);
    let started = std::time::Instant::now();
    let err = runtime
        .load(&test_plugins_dir().join("needs-http.toml"))
        .await
        .err()
        .expect("a wasi:http import is refused");
    let elapsed = started.elapsed();
    let text = err.to_string();
    assert!(text.contains("needs-http.wasm"), "{text}");
    assert!(text.contains("`wasi:http/outgoing-handler@0.2."), "{text}");
    assert!(text.contains("this host provides no `wasi:http`"), "{text}");
    assert!(
        text.contains("disableFeatures: ['http', 'fetch-event']"),
        "{text}"
    );
    // Refused before Cranelift ran: nothing was compiled into the cache.
    assert_eq!(cached_artifacts(&dir.path().join("cache")), 0);
    println!("wasi:http refusal took {elapsed:?}");

    // The file name without the directory, for callers who must not see server paths.
    let public = err.without_path();
    assert!(public.starts_with("needs-http.wasm: "), "{public}");
    assert!(!public.contains("test-plugins/"), "{public}");
}

/// `versioned-v1` installed in `dir` as `name`, with `from` replaced by `to` in its manifest;
/// returns the manifest's path.
fn versioned_edited(dir: &std::path::Path, name: &str, from: &str, to: &str) -> std::path::PathBuf {
    install(&test_plugins_dir(), "versioned-v1", dir, name, None);
    let manifest = dir.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&manifest).expect("read");
    assert!(text.contains(from), "{text}");
    std::fs::write(&manifest, text.replace(from, to)).expect("write");
    manifest
}

#[tokio::test]
async fn a_manifest_naming_a_compatible_patch_abi_loads() {
    let host = host();
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = versioned_edited(dir.path(), "patched", "abi = \"0.1.0\"", "abi = \"0.1.7\"");
    // 0.1.7 is served by the 0.1 module: the component's 0.1.0 imports and export match.
    host.runtime
        .load(&manifest)
        .await
        .expect("a compatible patch version loads");
}

#[tokio::test]
async fn a_memory_limit_hit_at_load_names_the_manifest_key_and_the_size_needed() {
    let host = host();
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = versioned_edited(dir.path(), "tiny", "memory_mib = 32", "memory_mib = 1");
    let text = host
        .runtime
        .load(&manifest)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(text.contains("tiny.wasm"), "{text}");
    assert!(text.contains("`limits.memory_mib = 1`"), "{text}");
    assert!(
        text.contains("set `limits.memory_mib` to at least 2"),
        "{text}"
    );
    assert!(!text.contains("forcing trap"), "{text}");
}

#[tokio::test]
async fn process_output_is_read_as_lines_across_batches_and_chunk_boundaries() {
    let work = tempfile::tempdir().expect("tempdir");
    let plugins = tempfile::tempdir().expect("tempdir");
    let runtime = runtime(work.path(), GRACE);
    install(
        &test_plugins_dir(),
        "hostile",
        plugins.path(),
        "parser",
        None,
    );
    let manifest = plugins.path().join("parser.toml");
    edit_file(&manifest, |text| {
        text.replace("exec = [\"true\"]", "exec = [\"cat\"]")
    });
    let agent = runtime.load(&manifest).await.expect("loads");

    // 3,000 lines (more than one 256-line batch, more than one 64 KiB pipe read), CRLF
    // endings, one line of 200 KB, and a last line without a terminator.
    let mut stream = String::new();
    for i in 0..3000 {
        let padding = if i == 1500 {
            "x".repeat(200_000)
        } else {
            "y".repeat(i % 97)
        };
        stream.push_str(&format!("{{\"type\":\"t{i}\",\"pad\":\"{padding}\"}}\r\n"));
    }
    stream.push_str("{\"type\":\"last\"}");
    let project = work.path().join("projects/test");
    std::fs::create_dir_all(&project).expect("project dir");
    std::fs::write(project.join("stream.jsonl"), stream).expect("write");

    let r = run("parse stream.jsonl", LONG, 16);
    let result = agent.execute(r.execution).await.expect("runs");
    assert_eq!(result.final_text.as_deref(), Some("3001 3001"));
}
