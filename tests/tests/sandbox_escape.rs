//! The escape suite: model-written commands trying to leave a confined local executor's
//! sandbox, run as real processes through the executor. Every attempt fails, the host and the
//! other project are unaffected, and the same kind of command inside its own workspace works.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rdev::adapters::local::LocalExecutor;
use rdev::adapters::local::sandbox::Limits;
use rdev::domain::ProjectId;
use rdev::ports::{Executor, ExitStatus, SpawnedProcess};
use rdev_tests::harness::runtime::{MapSecrets, sh};
use rdev_tests::harness::sandbox;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SENTINEL: &str = "RDEV_ESCAPE_SENTINEL";

struct Host {
    root: PathBuf,
    executor: LocalExecutor,
    /// A loopback server on the allow-list and one that is not.
    allowed: u16,
    forbidden: u16,
    _tmp: tempfile::TempDir,
}

/// Answers every connection with `name` and closes.
async fn host(limits: Limits) -> Option<Host> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().canonicalize().expect("canon");
    // What rdev keeps next to the workspaces: none of it may be visible to a command.
    std::fs::write(root.join("master.key"), "MASTER-KEY-CONTENT").expect("key");
    std::fs::write(root.join("rdev.db"), "DATABASE-CONTENT").expect("db");
    std::fs::create_dir_all(root.join("projects/b")).expect("b");
    std::fs::write(root.join("projects/b/secret.txt"), "B-SECRET").expect("b secret");
    let allowed = sandbox::banner_server("allowed-server").await;
    let forbidden = sandbox::banner_server("forbidden-server").await;
    let mut config = sandbox::config(&root, &[]);
    config.limits = limits;
    config.egress_allow = vec![format!("127.0.0.1:{allowed}").parse().expect("rule")];
    let sandbox = sandbox::probe(config, &root)?;
    let secrets = Arc::new(MapSecrets(HashMap::new()));
    let executor = LocalExecutor::per_project(root.join("projects"), secrets).confined(sandbox);
    Some(Host {
        root,
        executor,
        allowed,
        forbidden,
        _tmp: tmp,
    })
}

fn project(id: &str) -> ProjectId {
    ProjectId::parse(id).expect("id")
}

async fn read_all(mut reader: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut out = String::new();
    let _ = reader.read_to_string(&mut out).await;
    out
}

async fn finish(process: SpawnedProcess) -> (ExitStatus, String) {
    let (out, err) = tokio::join!(read_all(process.stdout), read_all(process.stderr));
    let status = tokio::time::timeout(Duration::from_secs(60), process.control.wait())
        .await
        .expect("the command ends")
        .expect("wait");
    (status, format!("{out}{err}"))
}

async fn run(host: &Host, id: &str, script: &str) -> (ExitStatus, String) {
    let process = host
        .executor
        .spawn(&project(id), sh(script))
        .await
        .expect("spawn");
    finish(process).await
}

fn python_connect(port: u16) -> String {
    format!(
        "/usr/bin/python3 -c 'import socket; s=socket.create_connection((\"127.0.0.1\", {port}), 3); print(s.recv(100).decode())'"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_outside_the_workspace_fail() {
    // SAFETY: set before any other thread of this test reads the environment.
    unsafe { std::env::set_var(SENTINEL, "HOST-ENVIRON-VISIBLE") };
    let Some(host) = host(Limits::default()).await else {
        return;
    };
    let root = host.root.display();
    let me = std::process::id();
    for (what, script) in [
        ("/etc/shadow", "cat /etc/shadow".to_owned()),
        ("the master key", format!("cat {root}/master.key")),
        ("the database", format!("cat {root}/rdev.db")),
        ("the data dir", format!("ls -la {root}")),
        (
            "another workspace",
            format!("cat {root}/projects/b/secret.txt"),
        ),
        ("pid 1's environ", "cat /proc/1/environ".to_owned()),
        ("rdev's environ", format!("cat /proc/{me}/environ")),
        ("every environ", "cat /proc/*/environ".to_owned()),
    ] {
        let (_, out) = run(&host, "a", &script).await;
        for secret in [
            "root:",
            "MASTER-KEY-CONTENT",
            "DATABASE-CONTENT",
            "B-SECRET",
            "HOST-ENVIRON-VISIBLE",
        ] {
            assert!(
                !out.contains(secret),
                "{what}: {script} read {secret}: {out}"
            );
        }
    }
    // rdev's data dir is not there at all: only the workspace's own path exists.
    let (_, out) = run(&host, "a", &format!("ls {root}; ls {root}/projects")).await;
    assert!(
        !out.contains("master.key") && !out.contains("rdev.db"),
        "{out}"
    );
    assert!(!out.lines().any(|line| line == "b"), "{out}");
    // The same kind of command inside its own workspace works.
    let (status, out) = run(&host, "a", "echo mine > own.txt && cat own.txt && id -un").await;
    assert!(status.success(), "{out}");
    assert_eq!(out, "mine\nrdev\n");
    assert_eq!(
        std::fs::read_to_string(host.root.join("projects/a/own.txt")).expect("own file"),
        "mine\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_outside_the_workspace_fail() {
    let Some(host) = host(Limits::default()).await else {
        return;
    };
    let root = host.root.display();
    let targets = [
        format!("{root}/planted"),
        format!("{root}/projects/b/planted"),
        "/usr/planted".to_owned(),
        "/etc/planted".to_owned(),
        "/root/planted".to_owned(),
    ];
    for target in &targets {
        let (status, out) = run(&host, "a", &format!("echo x > {target}")).await;
        // Paths under /tmp land in the command's private /tmp, if anywhere.
        assert!(
            target.starts_with("/tmp/") || !status.success(),
            "wrote {target}: {out}"
        );
        assert!(!Path::new(target).exists(), "{target} exists on the host");
    }
    // /tmp is the command's own.
    let (status, out) = run(&host, "a", "echo t > /tmp/scratch && cat /tmp/scratch").await;
    assert!(status.success(), "{out}");
    assert!(!Path::new("/tmp/scratch").exists() || out == "t\n");
    // Kernel-level escapes are refused by seccomp and the missing capabilities.
    for script in [
        "unshare -U true",
        "unshare -r true",
        "mount -t tmpfs none /tmp",
        "chroot / true",
    ] {
        let (status, out) = run(&host, "a", script).await;
        assert!(!status.success(), "{script} succeeded: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_only_the_commands_own_processes() {
    let Some(host) = host(Limits::default()).await else {
        return;
    };
    let sleeper = host
        .executor
        .spawn(&project("b"), sh("exec sleep 300.5"))
        .await
        .expect("spawn b");
    let b_pid = sandbox::wait_for_host_pid("sleep 300.5").expect("b's sleeper runs");
    let me = std::process::id();
    let (_, out) = run(
        &host,
        "a",
        &format!("kill -9 {me}; kill -9 {b_pid}; kill -9 1; ps -e -o pid=,comm="),
    )
    .await;
    // Still here, and b's process still runs.
    assert!(Path::new(&format!("/proc/{b_pid}")).exists(), "{out}");
    assert!(!out.contains("300.5"), "a sees b's process: {out}");
    sleeper
        .control
        .signal(rdev::ports::Signal::Kill)
        .await
        .expect("kill b");
    let _ = finish(sleeper).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_project_has_its_own_loopback() {
    let Some(host) = host(Limits::default()).await else {
        return;
    };
    let server = host
        .executor
        .spawn(
            &project("b"),
            sh("exec /usr/bin/python3 -c 'import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"127.0.0.1\", 4096)); s.listen(); print(\"listening\", flush=True)\n\
while True:\n    c,_=s.accept(); c.sendall(b\"b-server\\n\"); c.close()'"),
        )
        .await
        .expect("spawn b's server");
    let mut server = server;
    let mut first = [0u8; 10];
    server
        .stdout
        .read_exact(&mut first)
        .await
        .expect("listening");
    // The host reaches b's server through b's namespace, and only there.
    let mut stream = host
        .executor
        .connect(&project("b"), 4096)
        .await
        .expect("connect into b");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.expect("read");
    assert_eq!(reply, "b-server\n");
    assert!(host.executor.connect(&project("a"), 4096).await.is_err());
    // a's commands cannot reach it either.
    let (status, out) = run(&host, "a", &python_connect(4096)).await;
    assert!(!status.success() && !out.contains("b-server"), "{out}");
    server
        .control
        .signal(rdev::ports::Signal::Kill)
        .await
        .expect("kill");
    let _ = finish(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_follows_the_allow_list() {
    let Some(host) = host(Limits::default()).await else {
        return;
    };
    // An allow-listed loopback destination is forwarded into the namespace.
    let (status, out) = run(&host, "a", &python_connect(host.allowed)).await;
    assert!(status.success() && out.contains("allowed-server"), "{out}");
    // Anything else is unreachable directly, and refused (with a warning) by the proxy.
    let (status, out) = run(&host, "a", &python_connect(host.forbidden)).await;
    assert!(
        !status.success() && !out.contains("forbidden-server"),
        "{out}"
    );
    let through_proxy = format!(
        "/usr/bin/python3 -c 'import socket,os; p=os.environ[\"HTTPS_PROXY\"].rsplit(\":\",1)[1]; s=socket.create_connection((\"127.0.0.1\", int(p)), 3); s.sendall(b\"CONNECT {host}:{port} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n\"); print(s.recv(200).decode())'",
        host = "127.0.0.1",
        port = host.forbidden
    );
    let mut process = host
        .executor
        .spawn(&project("a"), sh(&through_proxy))
        .await
        .expect("spawn");
    let mut notices = process
        .notices
        .take()
        .expect("a confined spawn has notices");
    let (_, out) = finish(process).await;
    assert!(out.contains("403"), "{out}");
    let notice = notices.try_recv().expect("a refusal notice");
    assert!(
        notice.contains(&format!("127.0.0.1:{}", host.forbidden)),
        "{notice}"
    );
    let allowed_via_proxy = through_proxy.replace(
        &format!(":{} HTTP", host.forbidden),
        &format!(":{} HTTP", host.allowed),
    );
    let (_, out) = run(&host, "a", &allowed_via_proxy).await;
    assert!(out.contains("200 Connection Established"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bombs_and_memory_hogs_are_bounded() {
    let limits = Limits {
        pids: Some(64),
        memory_bytes: Some(128 << 20),
        cpu_percent: Some(100),
    };
    let Some(host) = host(limits).await else {
        return;
    };
    let started = std::time::Instant::now();
    let (status, out) = run(
        &host,
        "a",
        "bomb() { bomb | bomb & }; bomb; sleep 2; echo survived",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{status:?} {out}"
    );
    let (status, out) = run(
        &host,
        "a",
        "/usr/bin/python3 -c 'a = bytearray(1 << 30); print(\"allocated\")'",
    )
    .await;
    assert!(
        !status.success() && !out.contains("allocated"),
        "{status:?} {out}"
    );
    // The host and the project go on.
    let (status, out) = run(&host, "a", "echo fine").await;
    assert!(status.success() && out == "fine\n", "{out}");
}

/// The project's sandbox server, for the tests of the long-lived sandbox (skipped when this
/// host runs a bubblewrap per command).
async fn server_pid(host: &Host, id: &str) -> Option<i32> {
    let sandbox = host.executor.sandbox().expect("confined");
    if !sandbox.shared() {
        return None;
    }
    sandbox.server_pid(id).await
}

/// A sleeper of project `id` that runs until killed, and its host pid.
async fn sibling(host: &Host, id: &str, cmdline: &str) -> (SpawnedProcess, i32) {
    let process = host
        .executor
        .spawn(&project(id), sh(&format!("exec {cmdline}")))
        .await
        .expect("spawn the sibling");
    let pid = sandbox::wait_for_host_pid(cmdline).expect("the sibling runs");
    (process, pid)
}

async fn kill(process: SpawnedProcess) -> ExitStatus {
    process
        .control
        .signal(rdev::ports::Signal::Kill)
        .await
        .expect("kill");
    finish(process).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_replaced_at_the_next_spawn() {
    let Some(host) = host(Limits::default()).await else {
        return;
    };
    let (status, _) = run(&host, "a", "true").await;
    assert!(status.success());
    let Some(first) = server_pid(&host, "a").await else {
        return;
    };
    // SAFETY: kill(2) of the server this test's executor started.
    unsafe { libc::kill(first, libc::SIGKILL) };
    assert!(sandbox::stopped(first).await, "the server survived SIGKILL");
    let (status, out) = run(&host, "a", "echo again").await;
    assert!(status.success() && out == "again\n", "{status:?} {out}");
    let second = server_pid(&host, "a").await.expect("a new server");
    assert_ne!(first, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setsid_escapee_dies_with_its_command_while_a_sibling_runs() {
    let Some(host) = host(Limits::default()).await else {
        return;
    };
    let tag = std::process::id() % 1000;
    let (sibling, sibling_pid) = sibling(&host, "a", &format!("sleep 300.{tag}7")).await;
    let escape = format!(
        "setsid sh -c 'exec sleep 301.{tag}7' </dev/null >/dev/null 2>&1 & read line; echo done"
    );
    let mut process = host
        .executor
        .spawn(&project("a"), sh(&escape))
        .await
        .expect("spawn");
    let escapee =
        sandbox::wait_for_host_pid(&format!("sleep 301.{tag}7")).expect("the escapee runs");
    process.stdin.write_all(b"go\n").await.expect("write");
    let (status, out) = finish(process).await;
    assert!(status.success() && out == "done\n", "{status:?} {out}");
    assert!(
        !sandbox::running(escapee),
        "the escapee outlived its command"
    );
    assert!(
        sandbox::running(sibling_pid),
        "the project's other command was killed"
    );
    assert_eq!(kill(sibling).await.signal, Some(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_cannot_break_its_projects_server_or_siblings() {
    let Some(host) = host(Limits::default()).await else {
        return;
    };
    let tag = std::process::id() % 1000;
    let (sibling, sibling_pid) = sibling(&host, "a", &format!("sleep 302.{tag}7")).await;
    let server = server_pid(&host, "a").await;
    // Every process the command can see, the server and the sibling included.
    let (_, out) = run(
        &host,
        "a",
        "for p in $(ps -e -o pid=); do [ $p = $$ ] || { kill -STOP $p; kill -9 $p; }; done; \
         ps -e -o pid=,args=",
    )
    .await;
    assert!(
        out.contains(&format!("302.{tag}7")),
        "a sees its sibling: {out}"
    );
    assert!(
        sandbox::running(sibling_pid),
        "a command killed its sibling: {out}"
    );
    let (status, out) = run(&host, "a", "echo fine").await;
    assert!(status.success() && out == "fine\n", "{status:?} {out}");
    if let Some(server) = server {
        assert_eq!(
            server_pid(&host, "a").await,
            Some(server),
            "the server was replaced"
        );
    }
    kill(sibling).await;
}
