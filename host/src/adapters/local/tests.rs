//! Real processes in temporary workspaces: what only the local executor does (the exact
//! environment, per-project homes, its fixed-directory mode, pipes released by leftovers,
//! `connect`). What every executor does is the contract in `tests/tests/executor_contract.rs`,
//! which runs against the local executor too.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::*;
use crate::ports::{EnvValue, ExitStatus, SecretError, SecretValue};

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

fn sh(script: &str) -> SpawnSpec {
    SpawnSpec::new("sh", &["-c", script])
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
async fn child_sees_only_path_home_and_the_spec_env() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let executor = LocalExecutor::per_project(tmp.path(), secrets(&[]));
    assert_eq!(executor.kind(), "local");
    let env_spec = SpawnSpec::new("env", &[]).with_plain_env(&[("GREETING", "hi there")]);
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

/// The rest of the secret handling is the executor contract's (`tests/tests/executor_contract.rs`).
#[tokio::test]
async fn an_unreachable_secret_store_fails_the_spawn() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let offline = LocalExecutor::per_project(
        tmp.path(),
        Arc::new(MapSecrets {
            values: HashMap::new(),
            unavailable: true,
        }),
    );
    let mut needs = sh("true");
    needs.env = vec![(
        "KEY".to_owned(),
        EnvValue::Secret {
            name: "API_KEY".to_owned(),
            required: true,
        },
    )];
    assert!(matches!(
        offline.spawn(&project("p"), needs).await,
        Err(ExecError::Secrets(_))
    ));
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
