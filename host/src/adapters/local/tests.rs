//! Real processes in temporary workspaces.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::*;
use crate::ports::{EnvValue, ExitStatus, SecretError, SecretValue, Signal};

/// The port implemented over a map: enough for the executor, which only looks names up.
struct MapSecrets {
    values: HashMap<String, String>,
    unavailable: bool,
}

#[async_trait]
impl SecretResolver for MapSecrets {
    async fn resolve(&self, name: &str) -> Result<Option<SecretValue>, SecretError> {
        if self.unavailable {
            return Err(SecretError::Unavailable("store offline".to_owned()));
        }
        Ok(self.values.get(name).map(SecretValue::new))
    }
}

fn secrets(pairs: &[(&str, &str)]) -> Arc<dyn SecretResolver> {
    Arc::new(MapSecrets {
        values: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        unavailable: false,
    })
}

fn project(id: &str) -> ProjectId {
    ProjectId::parse(id).expect("valid project id")
}

fn spec(program: &str, args: &[&str]) -> SpawnSpec {
    SpawnSpec {
        program: program.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        env: Vec::new(),
        working_dir: None,
    }
}

fn sh(script: &str) -> SpawnSpec {
    spec("sh", &["-c", script])
}

async fn read_all(mut reader: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut out = String::new();
    reader.read_to_string(&mut out).await.expect("read stream");
    out
}

/// Runs to completion and returns (status, stdout, stderr).
async fn run(executor: &LocalExecutor, id: &str, spec: SpawnSpec) -> (ExitStatus, String, String) {
    let process = executor.spawn(&project(id), spec).await.expect("spawn");
    let (out, err) = tokio::join!(read_all(process.stdout), read_all(process.stderr));
    let status = process.control.wait().await.expect("wait");
    (status, out, err)
}

/// A process is gone when it no longer exists or is a zombie nobody reaped yet (a zombie
/// runs nothing). Polls, because reparenting and reaping happen asynchronously.
fn gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let missing = kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH);
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit(')')
                    .next()
                    .map(|rest| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(false);
        if missing || zombie {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn exit_code_stdout_and_stderr_are_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let executor = LocalExecutor::per_project(tmp.path(), secrets(&[]));
    assert_eq!(executor.kind(), "local");
    let (status, out, err) = run(&executor, "p", sh("echo out; echo err >&2; exit 3")).await;
    assert_eq!(
        status,
        ExitStatus {
            code: Some(3),
            signal: None
        }
    );
    assert!(!status.success());
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");

    let (status, _, _) = run(&executor, "p", sh("true")).await;
    assert!(status.success());
}

#[tokio::test]
async fn stdin_reaches_the_process() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let executor = LocalExecutor::per_project(tmp.path(), secrets(&[]));
    let mut process = executor
        .spawn(&project("p"), spec("cat", &[]))
        .await
        .expect("spawn");
    process.stdin.write_all(b"hello\n").await.expect("write");
    process.stdin.shutdown().await.expect("close stdin");
    drop(process.stdin);
    assert_eq!(read_all(process.stdout).await, "hello\n");
    assert!(process.control.wait().await.expect("wait").success());
}

#[tokio::test]
async fn child_sees_only_path_home_and_the_spec_env() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let executor = LocalExecutor::per_project(tmp.path(), secrets(&[]));
    let mut env_spec = spec("env", &[]);
    env_spec.env = vec![(
        "GREETING".to_owned(),
        EnvValue::Plain("hi there".to_owned()),
    )];
    let (status, out, _) = run(&executor, "envtest", env_spec).await;
    assert!(status.success());
    let vars: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(
        vars.keys().copied().collect::<Vec<_>>(),
        ["GREETING", "HOME", "PATH"],
        "unexpected environment: {out}"
    );
    assert_eq!(vars["GREETING"], "hi there");
    assert_eq!(
        std::env::var("PATH").expect("host PATH"),
        vars["PATH"],
        "the host's PATH is passed through"
    );
    let workspace = tmp.path().canonicalize().expect("canon").join("envtest");
    assert_eq!(
        vars["HOME"],
        workspace.join(".rdev/home").to_str().expect("utf-8")
    );
}

#[tokio::test]
async fn each_project_runs_in_its_own_workspace_with_its_own_home() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let executor = LocalExecutor::per_project(tmp.path().join("data"), secrets(&[]));
    let root = tmp.path().canonicalize().expect("canon").join("data");
    for id in ["alpha", "beta"] {
        let (status, out, _) = run(
            &executor,
            id,
            sh("pwd -P; echo \"$HOME\"; touch \"$HOME/session\""),
        )
        .await;
        assert!(status.success());
        let ws = root.join(id);
        assert_eq!(
            out,
            format!("{}\n{}\n", ws.display(), ws.join(".rdev/home").display())
        );
        assert!(ws.join(".rdev/home/session").is_file());
    }
}

#[tokio::test]
async fn working_dir_is_relative_to_the_workspace_and_cannot_escape() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let executor = LocalExecutor::fixed_dir(tmp.path(), secrets(&[]));
    let ws = tmp.path().canonicalize().expect("canon");
    std::fs::create_dir(ws.join("src")).expect("mkdir");
    std::os::unix::fs::symlink(outside.path(), ws.join("link")).expect("symlink");

    let mut inside = sh("pwd -P");
    inside.working_dir = Some("src".to_owned());
    let (_, out, _) = run(&executor, "any", inside).await;
    assert_eq!(out.trim_end(), ws.join("src").to_str().expect("utf-8"));

    for bad in ["..", "src/../../x", "/", "link"] {
        let mut escape = sh("pwd");
        escape.working_dir = Some(bad.to_owned());
        match executor.spawn(&project("any"), escape).await {
            Err(ExecError::SpawnFailed { reason, .. }) => assert!(reason.contains(bad), "{reason}"),
            Err(other) => panic!("{bad:?}: unexpected error {other}"),
            Ok(_) => panic!("{bad:?}: escaping working directory accepted"),
        }
    }
}

#[tokio::test]
async fn a_missing_program_fails_to_spawn() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let executor = LocalExecutor::per_project(tmp.path(), secrets(&[]));
    match executor
        .spawn(&project("p"), spec("rdev-no-such-program", &[]))
        .await
    {
        Err(ExecError::SpawnFailed { program, .. }) => assert_eq!(program, "rdev-no-such-program"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("spawned a program that does not exist"),
    }
}

#[tokio::test]
async fn secrets_are_resolved_at_spawn_time() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let executor = LocalExecutor::per_project(tmp.path(), secrets(&[("API_KEY", "sk-test-42")]));
    let secret = |name: &str, required| EnvValue::Secret {
        name: name.to_owned(),
        required,
    };

    let mut with_secret = sh("echo \"key=$KEY optional=${OPT-unset}\"");
    with_secret.env = vec![
        ("KEY".to_owned(), secret("API_KEY", true)),
        ("OPT".to_owned(), secret("NOT_THERE", false)),
    ];
    let (status, out, _) = run(&executor, "p", with_secret).await;
    assert!(status.success());
    assert_eq!(out, "key=sk-test-42 optional=unset\n");

    let mut missing = sh("true");
    missing.env = vec![("KEY".to_owned(), secret("NOT_THERE", true))];
    match executor.spawn(&project("p"), missing).await {
        Err(ExecError::MissingSecret(name)) => assert_eq!(name, "NOT_THERE"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("spawned without a required secret"),
    }

    let offline = LocalExecutor::per_project(
        tmp.path(),
        Arc::new(MapSecrets {
            values: HashMap::new(),
            unavailable: true,
        }),
    );
    let mut needs = sh("true");
    needs.env = vec![("KEY".to_owned(), secret("API_KEY", true))];
    assert!(matches!(
        offline.spawn(&project("p"), needs).await,
        Err(ExecError::Secrets(_))
    ));
}

#[tokio::test]
async fn wait_can_be_awaited_concurrently_and_repeatedly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let executor = LocalExecutor::per_project(tmp.path(), secrets(&[]));
    let process = executor
        .spawn(&project("p"), sh("read line; exit 7"))
        .await
        .expect("spawn");
    let control = process.control.clone();
    let first = tokio::spawn({
        let control = control.clone();
        async move { control.wait().await }
    });
    let second = tokio::spawn({
        let control = control.clone();
        async move { control.wait().await }
    });
    let mut stdin = process.stdin;
    stdin.write_all(b"go\n").await.expect("write");
    let expected = ExitStatus {
        code: Some(7),
        signal: None,
    };
    assert_eq!(first.await.expect("join").expect("wait"), expected);
    assert_eq!(second.await.expect("join").expect("wait"), expected);
    assert_eq!(control.wait().await.expect("wait again"), expected);
    // Signalling an exited process is not an error.
    control
        .signal(Signal::Terminate)
        .await
        .expect("signal after exit");
}

/// Spawns a group with two background sleepers and returns the process and their pids.
async fn spawn_sleepers(executor: &LocalExecutor, script: &str) -> (SpawnedProcess, Vec<i32>) {
    let mut process = executor
        .spawn(&project("p"), sh(script))
        .await
        .expect("spawn");
    let mut lines = BufReader::new(&mut process.stdout).lines();
    let mut pids = Vec::new();
    while pids.len() < 2 {
        let line = lines.next_line().await.expect("read").expect("a pid line");
        pids.push(line.trim().parse::<i32>().expect("pid"));
    }
    for pid in &pids {
        assert_eq!(
            kill(Pid::from_raw(*pid), None),
            Ok(()),
            "sleeper {pid} is running"
        );
    }
    (process, pids)
}

#[tokio::test]
async fn kill_takes_down_the_whole_process_group() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let executor = LocalExecutor::per_project(tmp.path(), secrets(&[]));
    let (process, pids) =
        spawn_sleepers(&executor, "sleep 30 & echo $!; sleep 30 & echo $!; wait").await;
    process.control.signal(Signal::Kill).await.expect("kill");
    let status = process.control.wait().await.expect("wait");
    assert_eq!(status.signal, Some(9));
    for pid in pids {
        assert!(gone(pid), "child {pid} survived the kill of its group");
    }
}

#[tokio::test]
async fn terminate_reaches_the_whole_group() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let executor = LocalExecutor::per_project(tmp.path(), secrets(&[]));
    let (process, pids) =
        spawn_sleepers(&executor, "sleep 30 & echo $!; sleep 30 & echo $!; wait").await;
    process
        .control
        .signal(Signal::Terminate)
        .await
        .expect("terminate");
    let status = process.control.wait().await.expect("wait");
    assert_eq!(status.signal, Some(15));
    for pid in pids {
        assert!(gone(pid), "child {pid} survived SIGTERM to its group");
    }
}

#[tokio::test]
async fn leftovers_die_with_their_leader_and_release_the_pipes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let executor = LocalExecutor::per_project(tmp.path(), secrets(&[]));
    let (process, pids) = spawn_sleepers(&executor, "sleep 30 & echo $!; sleep 30 & echo $!").await;
    assert!(process.control.wait().await.expect("wait").success());
    // The sleepers inherited stdout; it only reaches EOF because they were killed.
    assert_eq!(read_all(process.stdout).await, "");
    for pid in pids {
        assert!(gone(pid), "orphan {pid} outlived its leader");
    }
}

#[tokio::test]
async fn dropping_the_handles_kills_a_running_group() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let executor = LocalExecutor::per_project(tmp.path(), secrets(&[]));
    let (process, pids) =
        spawn_sleepers(&executor, "sleep 30 & echo $!; sleep 30 & echo $!; wait").await;
    drop(process);
    for pid in pids {
        assert!(gone(pid), "child {pid} survived the drop of its handles");
    }
}

#[tokio::test]
async fn connect_reaches_a_local_port() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let executor = LocalExecutor::per_project(tmp.path(), secrets(&[]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accept = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 4];
        socket.read_exact(&mut buf).await.expect("read");
        buf
    });
    let mut connection = executor
        .connect(&project("p"), port)
        .await
        .expect("connect");
    connection.write_all(b"ping").await.expect("write");
    assert_eq!(&accept.await.expect("join"), b"ping");

    drop(connection);
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let unused = closed.local_addr().expect("addr").port();
    drop(closed);
    assert!(matches!(
        executor.connect(&project("p"), unused).await,
        Err(ExecError::Connect { port, .. }) if port == unused
    ));
}
