//! One Executor contract, run against the local executor (real processes in temporary
//! workspaces) and the Kubernetes executor (the real kube-rs client against the loopback
//! API-server double, which runs exec'd commands as real local processes).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdev::adapters::kubernetes::{Credentials, KubernetesConfig, KubernetesExecutor};
use rdev::adapters::local::sandbox::instance_name;
use rdev::adapters::local::{LocalExecutor, ProcessTracker};
use rdev::domain::ProjectId;
use rdev::ports::{
    EnvValue, ExecError, Executor, ExitStatus, SecretResolver, Signal, SpawnSpec, SpawnedProcess,
};
use rdev_tests::doubles::kube_api::FakeKubeApi;
use rdev_tests::harness::kubernetes::project_pod;
use rdev_tests::harness::runtime::{MapSecrets, read_all, sh};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Clone, Copy)]
enum Kind {
    /// Unconfined, as `rdev serve --unconfined` builds it: a cgroup per spawn where the host
    /// allows (it does here) and the environment tag.
    Local,
    /// Unconfined with the environment tag alone, as on a host without a writable cgroup
    /// hierarchy.
    LocalEnviron,
    /// The local executor inside its sandbox: each project's long-lived sandbox forks its
    /// commands (the default where cgroups are writable, as here).
    Confined,
    /// The local executor with a bubblewrap per command (the fallback without cgroups).
    ConfinedPerSpawn,
    Kubernetes,
}

/// An executor under test and where its project's workspace is on this machine.
struct Subject {
    kind: Kind,
    executor: Arc<dyn Executor>,
    /// Where the executor keeps its workspaces (and the sandbox its state).
    root: PathBuf,
    /// The Kubernetes executor's settings, to start another one as a restarted host would.
    kube: Option<KubernetesConfig>,
    project: ProjectId,
    workspace: PathBuf,
    home: PathBuf,
    /// Pids a process reports are those of its own PID namespace.
    own_pids: bool,
    _tmp: Option<tempfile::TempDir>,
    _api: Option<FakeKubeApi>,
}

fn secrets(pairs: &[(&str, &str)]) -> Arc<dyn SecretResolver> {
    Arc::new(MapSecrets(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<HashMap<_, _>>(),
    ))
}

/// The executor of `kind` over `root` (Kubernetes: the pod's API server at `api`).
async fn executor(
    kind: Kind,
    root: &std::path::Path,
    secrets: Arc<dyn SecretResolver>,
    kube: Option<(&FakeKubeApi, &KubernetesConfig)>,
) -> Arc<dyn Executor> {
    let tracker = |environ: bool| {
        let instance = instance_name(root);
        Arc::new(match environ {
            true => ProcessTracker::environ_only(&instance),
            false => ProcessTracker::detect(&instance),
        })
    };
    match (kind, kube) {
        (Kind::Local | Kind::LocalEnviron, _) => Arc::new(
            LocalExecutor::per_project(root, secrets)
                .tracked(tracker(matches!(kind, Kind::LocalEnviron))),
        ),
        (Kind::Confined | Kind::ConfinedPerSpawn, _) => {
            let mut config = rdev_tests::harness::sandbox::config(root, &[]);
            config.per_spawn = matches!(kind, Kind::ConfinedPerSpawn);
            let sandbox = rdev_tests::harness::sandbox::probe(config, root)
                .expect("this host can confine commands");
            Arc::new(LocalExecutor::per_project(root.join("projects"), secrets).confined(sandbox))
        }
        (Kind::Kubernetes, Some((api, config))) => Arc::new(
            KubernetesExecutor::connect(Credentials::Url(api.url()), config.clone(), secrets)
                .await
                .expect("client builds"),
        ),
        (Kind::Kubernetes, None) => panic!("a Kubernetes executor needs its API server"),
    }
}

async fn subject(kind: Kind, secrets: Arc<dyn SecretResolver>) -> Subject {
    let project = ProjectId::parse("p").expect("id");
    match kind {
        Kind::Local | Kind::LocalEnviron | Kind::Confined | Kind::ConfinedPerSpawn => {
            let confined = matches!(kind, Kind::Confined | Kind::ConfinedPerSpawn);
            // The confined executor keeps projects under `projects/`, as `rdev serve` does.
            let workspace = if confined { "projects/p" } else { "p" };
            let tmp = tempfile::tempdir().expect("tempdir");
            let root = tmp.path().canonicalize().expect("canon");
            let executor = executor(kind, &root, secrets, None).await;
            // The executor creates the workspace on first use; the tests write into it first.
            std::fs::create_dir_all(root.join(workspace)).expect("workspace");
            Subject {
                kind,
                executor,
                root: root.clone(),
                kube: None,
                project,
                workspace: root.join(workspace),
                home: root.join(workspace).join(".rdev/home"),
                own_pids: confined,
                _tmp: Some(tmp),
                _api: None,
            }
        }
        Kind::Kubernetes => {
            let pod = project_pod("p", secrets).await;
            Subject {
                kind,
                kube: Some(pod.executor.config().clone()),
                executor: Arc::new(pod.executor),
                root: pod.workspace.clone(),
                project,
                home: pod.workspace.join(".rdev/home"),
                workspace: pod.workspace,
                own_pids: false,
                _tmp: None,
                _api: Some(pod.api),
            }
        }
    }
}

impl Subject {
    /// Another executor over the same workspaces (and pod), as a restarted host builds.
    async fn restarted(&self) -> Arc<dyn Executor> {
        let kube = self._api.as_ref().zip(self.kube.as_ref());
        executor(self.kind, &self.root, secrets(&[]), kube).await
    }
}

async fn run(subject: &Subject, spec: SpawnSpec) -> (ExitStatus, String, String) {
    let process = subject
        .executor
        .spawn(&subject.project, spec)
        .await
        .expect("spawn");
    let (out, err) = tokio::join!(read_all(process.stdout), read_all(process.stderr));
    let status = process.control.wait().await.expect("wait");
    (status, out, err)
}

/// Gone: no such process, or a zombie (runs nothing). Polls, since killing and reaping
/// happen asynchronously.
fn gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit(')').next().map(|r| r.trim_start().to_owned()));
        match state {
            None => return true,
            Some(rest) if rest.starts_with('Z') => return true,
            Some(_) if Instant::now() > deadline => return false,
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

async fn exit_codes_and_both_streams(kind: Kind) {
    let s = subject(kind, secrets(&[])).await;
    let (status, out, err) = run(&s, sh("echo out; echo err >&2; exit 3")).await;
    assert_eq!(
        status,
        ExitStatus {
            code: Some(3),
            signal: None
        }
    );
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    let (status, out, _) = run(&s, sh("printf 'no newline'")).await;
    assert!(status.success());
    assert_eq!(out, "no newline");
}

async fn output_streams_before_the_process_ends(kind: Kind) {
    let s = subject(kind, secrets(&[])).await;
    let mut process = s
        .executor
        .spawn(
            &s.project,
            sh("echo first; read line; echo \"second $line\""),
        )
        .await
        .expect("spawn");
    let mut lines = BufReader::new(process.stdout).lines();
    // The process is blocked on stdin, so this line can only have been streamed.
    assert_eq!(
        lines.next_line().await.expect("read").as_deref(),
        Some("first")
    );
    process.stdin.write_all(b"go\n").await.expect("write");
    assert_eq!(
        lines.next_line().await.expect("read").as_deref(),
        Some("second go")
    );
    assert_eq!(lines.next_line().await.expect("read"), None);
    assert!(process.control.wait().await.expect("wait").success());
}

async fn stdin_reaches_the_process_and_closes(kind: Kind) {
    let s = subject(kind, secrets(&[])).await;
    let mut process = s
        .executor
        .spawn(&s.project, SpawnSpec::new("cat", &[]))
        .await
        .expect("spawn");
    process
        .stdin
        .write_all(b"hello\nworld\n")
        .await
        .expect("write");
    process.stdin.shutdown().await.expect("close stdin");
    drop(process.stdin);
    assert_eq!(read_all(process.stdout).await, "hello\nworld\n");
    assert!(process.control.wait().await.expect("wait").success());
}

async fn env_and_home_are_set(kind: Kind) {
    let s = subject(kind, secrets(&[])).await;
    let mut spec = sh("printf '%s|%s' \"$GREETING\" \"$HOME\"; test -d \"$HOME\"");
    spec.env = vec![(
        "GREETING".to_owned(),
        EnvValue::Plain("hi there\nsecond line".to_owned()),
    )];
    let (status, out, _) = run(&s, spec).await;
    assert!(status.success(), "HOME exists");
    assert_eq!(
        out,
        format!("hi there\nsecond line|{}", s.home.display()),
        "spec env and the per-project HOME"
    );
}

async fn working_dir_is_inside_the_workspace(kind: Kind) {
    let s = subject(kind, secrets(&[])).await;
    std::fs::create_dir_all(s.workspace.join("src/sub")).expect("mkdir");
    let (_, out, _) = run(&s, sh("pwd -P")).await;
    assert_eq!(out.trim_end(), s.workspace.display().to_string());
    let mut inside = sh("pwd -P");
    inside.working_dir = Some("src/sub".to_owned());
    let (_, out, _) = run(&s, inside).await;
    assert_eq!(
        out.trim_end(),
        s.workspace.join("src/sub").display().to_string()
    );
    for bad in ["..", "src/../../x", "/"] {
        let mut escape = sh("pwd");
        escape.working_dir = Some(bad.to_owned());
        match s.executor.spawn(&s.project, escape).await {
            Err(ExecError::SpawnFailed { reason, .. }) => {
                assert!(reason.contains(bad), "{reason}")
            }
            Err(other) => panic!("{bad:?}: unexpected error {other}"),
            Ok(_) => panic!("{bad:?}: escaping working directory accepted"),
        }
    }
}

async fn a_missing_program_fails_to_spawn(kind: Kind) {
    let s = subject(kind, secrets(&[])).await;
    match s
        .executor
        .spawn(&s.project, SpawnSpec::new("rdev-no-such-program", &[]))
        .await
    {
        Err(ExecError::SpawnFailed { program, .. }) => assert_eq!(program, "rdev-no-such-program"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("spawned a program that does not exist"),
    }
}

async fn secrets_are_resolved_at_spawn(kind: Kind) {
    let s = subject(kind, secrets(&[("API_KEY", "sk-test-42")])).await;
    let secret = |name: &str, required| EnvValue::Secret {
        name: name.to_owned(),
        required,
    };
    let mut with_secret = sh("echo \"key=$KEY optional=${OPT-unset}\"");
    with_secret.env = vec![
        ("KEY".to_owned(), secret("API_KEY", true)),
        ("OPT".to_owned(), secret("NOT_THERE", false)),
    ];
    let (status, out, _) = run(&s, with_secret).await;
    assert!(status.success());
    assert_eq!(out, "key=sk-test-42 optional=unset\n");

    let mut missing = sh("true");
    missing.env = vec![("KEY".to_owned(), secret("NOT_THERE", true))];
    match s.executor.spawn(&s.project, missing).await {
        Err(ExecError::MissingSecret(name)) => assert_eq!(name, "NOT_THERE"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("spawned without a required secret"),
    }
}

async fn wait_is_shared_and_repeatable(kind: Kind) {
    let s = subject(kind, secrets(&[])).await;
    let process = s
        .executor
        .spawn(&s.project, sh("read line; exit 7"))
        .await
        .expect("spawn");
    let control = process.control.clone();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let control = control.clone();
            tokio::spawn(async move { control.wait().await })
        })
        .collect();
    let mut stdin = process.stdin;
    stdin.write_all(b"go\n").await.expect("write");
    let expected = ExitStatus {
        code: Some(7),
        signal: None,
    };
    for waiter in waiters {
        assert_eq!(waiter.await.expect("join").expect("wait"), expected);
    }
    assert_eq!(control.wait().await.expect("again"), expected);
    control
        .signal(Signal::Terminate)
        .await
        .expect("signalling an exited process is fine");
}

/// A group with two background sleepers; returns the process and their pids.
async fn sleepers(s: &Subject, script: &str) -> (SpawnedProcess, Vec<i32>) {
    // Distinct durations, so a confined sleeper's host pid can be found by its command line.
    let tag = std::process::id() % 1000;
    let script = script
        .replacen("sleep 30", &format!("sleep 30.{tag}1"), 1)
        .replacen("sleep 30 ", &format!("sleep 30.{tag}2 "), 1);
    let mut process = s
        .executor
        .spawn(&s.project, sh(&script))
        .await
        .expect("spawn");
    let mut pids = Vec::new();
    {
        let mut lines = BufReader::new(&mut process.stdout).lines();
        while pids.len() < 2 {
            let line = lines.next_line().await.expect("read").expect("a pid line");
            pids.push(line.trim().parse::<i32>().expect("pid"));
        }
    }
    if s.own_pids && script.ends_with("wait") {
        pids = (1..=2)
            .map(|n| {
                let cmdline = format!("sleep 30.{tag}{n}");
                rdev_tests::harness::sandbox::wait_for_host_pid(&cmdline)
                    .expect("the sleeper's host pid")
            })
            .collect();
    }
    for pid in &pids {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "sleeper {pid} runs"
        );
    }
    (process, pids)
}

const SLEEPERS: &str = "sleep 30 & echo $!; sleep 30 & echo $!; wait";

async fn kill_and_terminate_reach_the_whole_group(kind: Kind) {
    let s = subject(kind, secrets(&[])).await;
    for (signal, number) in [(Signal::Kill, 9), (Signal::Terminate, 15)] {
        let (process, pids) = sleepers(&s, SLEEPERS).await;
        process.control.signal(signal).await.expect("signal");
        let status = process.control.wait().await.expect("wait");
        assert_eq!(status.signal, Some(number), "{status:?}");
        assert!(!status.success());
        for pid in pids {
            assert!(gone(pid), "{pid} survived {signal:?} to its group");
        }
    }
}

async fn leftovers_die_with_their_leader(kind: Kind) {
    let s = subject(kind, secrets(&[])).await;
    let (process, pids) = sleepers(&s, "sleep 30 & echo $!; sleep 30 & echo $!").await;
    assert!(process.control.wait().await.expect("wait").success());
    if s.own_pids {
        // Reported pids are the namespace's: look for the sleepers on the host by name.
        let tag = std::process::id() % 1000;
        for n in 1..=2 {
            let cmdline = format!("sleep 30.{tag}{n}");
            let left = rdev_tests::harness::sandbox::host_pid(&cmdline);
            assert!(left.is_none_or(gone), "{cmdline} outlived its leader");
        }
        return;
    }
    for pid in pids {
        assert!(gone(pid), "orphan {pid} outlived its leader");
    }
}

async fn dropping_the_handles_kills_the_group(kind: Kind) {
    let s = subject(kind, secrets(&[])).await;
    let (process, pids) = sleepers(&s, SLEEPERS).await;
    drop(process);
    for pid in pids {
        assert!(gone(pid), "{pid} survived the drop of its handles");
    }
}

/// Whether `pid` has ended (gone, or a zombie) right now, without waiting.
fn dead_now(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit(')').next().map(|r| r.trim_start().to_owned()))
        .is_none_or(|rest| rest.starts_with('Z'))
}

/// Starts a command whose two sleepers escape its process group (`setsid` in the background,
/// and `setsid` after a double fork) while it waits for a line on stdin; returns the process
/// and the escapees' pids on this machine.
async fn escapees(s: &Subject, executor: &Arc<dyn Executor>, n: u32) -> (SpawnedProcess, Vec<i32>) {
    let tag = std::process::id() % 1000;
    let sleeps = [format!("sleep 41.{tag}{n}1"), format!("sleep 41.{tag}{n}2")];
    let script = format!(
        "setsid sh -c 'exec {}' </dev/null >/dev/null 2>&1 & \
         ( (setsid sh -c 'exec {}' </dev/null >/dev/null 2>&1 &) & ); read line",
        sleeps[0], sleeps[1]
    );
    let process = executor
        .spawn(&s.project, sh(&script))
        .await
        .expect("spawn");
    let pids = sleeps
        .iter()
        .map(|cmdline| {
            rdev_tests::harness::sandbox::wait_for_host_pid(cmdline)
                .unwrap_or_else(|| panic!("{cmdline} runs"))
        })
        .collect();
    (process, pids)
}

async fn setsid_escapees_die_with_their_leader(kind: Kind) {
    let s = subject(kind, secrets(&[])).await;
    let (mut process, pids) = escapees(&s, &s.executor, 1).await;
    process.stdin.write_all(b"go\n").await.expect("write");
    assert!(process.control.wait().await.expect("wait").success());
    for pid in pids {
        assert!(gone(pid), "escapee {pid} outlived its command");
    }
}

async fn a_kill_reaches_setsid_escapees(kind: Kind) {
    let s = subject(kind, secrets(&[])).await;
    let (process, pids) = escapees(&s, &s.executor, 2).await;
    process.control.signal(Signal::Kill).await.expect("kill");
    assert_eq!(process.control.wait().await.expect("wait").signal, Some(9));
    for pid in pids {
        assert!(gone(pid), "escapee {pid} survived the kill of its command");
    }
}

async fn a_dead_hosts_leftovers_die_before_the_next_spawn_returns(kind: Kind) {
    let s = subject(kind, secrets(&[])).await;
    let (process, mut pids) = escapees(&s, &s.executor, 3).await;
    // The host dies: nothing of the old executor ever kills, waits for or drops its process.
    std::mem::forget(process);
    assert!(pids.iter().all(|pid| !dead_now(*pid)), "the leftovers run");
    // A restart may kill them at once (the sandbox does); the next spawn must find them dead.
    let restarted = s.restarted().await;
    let next = restarted
        .spawn(&s.project, sh("true"))
        .await
        .expect("spawn");
    pids.retain(|pid| !dead_now(*pid));
    assert!(
        pids.is_empty(),
        "leftovers {pids:?} outlived the restart into the next spawn"
    );
    assert!(next.control.wait().await.expect("wait").success());
}

/// One module of tests per executor kind, each test running the contract function of its
/// name against that kind.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        contract!(@kind local, Local; $($name),*);
        contract!(@kind local_environ, LocalEnviron; $($name),*);
        contract!(@kind confined, Confined; $($name),*);
        contract!(@kind confined_per_spawn, ConfinedPerSpawn; $($name),*);
        contract!(@kind kubernetes, Kubernetes; $($name),*);
    };
    (@kind $module:ident, $kind:ident; $($name:ident),*) => {
        mod $module {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Kind::$kind).await
            })*
        }
    };
}

contract!(
    exit_codes_and_both_streams,
    output_streams_before_the_process_ends,
    stdin_reaches_the_process_and_closes,
    env_and_home_are_set,
    working_dir_is_inside_the_workspace,
    a_missing_program_fails_to_spawn,
    secrets_are_resolved_at_spawn,
    wait_is_shared_and_repeatable,
    kill_and_terminate_reach_the_whole_group,
    leftovers_die_with_their_leader,
    dropping_the_handles_kills_the_group,
    setsid_escapees_die_with_their_leader,
    a_kill_reaches_setsid_escapees,
    a_dead_hosts_leftovers_die_before_the_next_spawn_returns,
);
