//! Fault tests with real processes: `rdev worker` subprocesses on one PostgreSQL database,
//! killed with SIGKILL or drained with SIGTERM.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use rdev::adapters::store::{MASTER_KEY_ENV, StoreOptions, connect};
use rdev::domain::{
    AgentEvent, AgentRequest, CommandFilter, CommandId, CommandStatus, HOST_LOST, HostEvent,
    MasterKey, NewCommand, ProjectId, ProviderName, QueueConfig, StreamEvent,
};
use rdev::ports::{ChangesOutcome, Stores, UnknownProject};
use rdev_tests::harness::bin::rdev as rdev_binary;
use rdev_tests::harness::plugins::plugins_dir;
use rdev_tests::harness::postgres::{PrivateCluster, TestDatabase};
use rdev_tests::harness::queue::new_command;
use rdev_tests::harness::runtime::install;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn master_key() -> MasterKey {
    MasterKey::from_bytes([5; 32])
}

struct Setup {
    db: TestDatabase,
    stores: Stores,
    dir: tempfile::TempDir,
    plugins: PathBuf,
}

async fn setup() -> Option<Setup> {
    let db = TestDatabase::create().await?;
    let (stores, dir, plugins) = connect_with_shell(&db.url).await;
    Some(Setup {
        db,
        stores,
        dir,
        plugins,
    })
}

/// The stores of database `url`, and a scratch directory holding a plugins directory
/// (returned too) with the real `shell`.
async fn connect_with_shell(url: &str) -> (Stores, tempfile::TempDir, PathBuf) {
    let options = StoreOptions {
        queue: QueueConfig::default(),
        master_key: master_key(),
    };
    let stores = connect(url, options).await.expect("connect");
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    install(&plugins_dir(), "shell", &plugins, "shell", None);
    (stores, dir, plugins)
}

/// Lease, heartbeat and safety-poll of a worker process, in milliseconds.
#[derive(Clone, Copy)]
struct Timing {
    lease_ms: u64,
    heartbeat_ms: u64,
    poll_ms: u64,
}

/// A 1 s lease and 200 ms heartbeat, so lost hosts are found quickly.
const QUICK: Timing = Timing {
    lease_ms: 1000,
    heartbeat_ms: 200,
    poll_ms: 1000,
};

/// Starts `rdev worker` with [`QUICK`] timing; returns once it is ready.
async fn spawn_worker(url: &str, data: &Path, plugins: &Path, id: &str) -> Child {
    spawn_worker_timed(url, data, plugins, id, QUICK, &[]).await
}

/// Starts `rdev worker` with `timing` and any `extra` flags; returns once it is ready.
async fn spawn_worker_timed(
    url: &str,
    data: &Path,
    plugins: &Path,
    id: &str,
    timing: Timing,
    extra: &[&str],
) -> Child {
    let mut child = Command::new(rdev_binary())
        .args(["worker", "--database-url", url, "--worker-id", id])
        .arg("--data-dir")
        .arg(data)
        .arg("--plugins-dir")
        .arg(plugins)
        .args(["--lease-ms", &timing.lease_ms.to_string()])
        .args(["--heartbeat-ms", &timing.heartbeat_ms.to_string()])
        .args(["--poll-ms", &timing.poll_ms.to_string()])
        .args(["--concurrency", "4"])
        .args(extra)
        .env(MASTER_KEY_ENV, master_key().to_base64())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn rdev worker");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("ready") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready.ok(), Some(true), "worker {id} did not become ready");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

async fn submit(stores: &Stores, project: &str, prompt: &str) -> CommandId {
    let project = ProjectId::parse(project).expect("project");
    let command = new_command(&project, prompt);
    let submitted = stores.queue.submit(command, UnknownProject::Register).await;
    submitted.expect("submit").command.id
}

async fn wait_done(stores: &Stores, id: &CommandId) -> Vec<StreamEvent> {
    let events = tokio::time::timeout(
        Duration::from_secs(120),
        stores.events.subscribe(id, 0).collect::<Vec<_>>(),
    )
    .await
    .expect("command ends");
    events
        .into_iter()
        .map(|e| e.expect("event").event.clone())
        .collect()
}

/// Returns once the command's output contains `needle`: its process is running.
async fn wait_for_output(stores: &Stores, id: &CommandId, needle: &str) {
    let mut stream = stores.events.subscribe(id, 0);
    loop {
        let event = stream.next().await.expect("open").expect("event");
        if matches!(&event.event, StreamEvent::Agent(AgentEvent::Output { text, .. }) if text.contains(needle))
        {
            return;
        }
    }
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("running") as i32;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_leaves_its_command_failed_and_the_queue_moving() {
    let Some(s) = setup().await else { return };
    let url = s.db.url.clone();
    let mut first = spawn_worker(&url, &s.dir.path().join("a"), &s.plugins, "a").await;
    let long = submit(&s.stores, "p", "echo started; sleep 20").await;
    let queued: Vec<CommandId> = {
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(submit(&s.stores, "p", &format!("echo queued-{n}")).await);
        }
        ids
    };
    wait_for_output(&s.stores, &long, "started").await;
    first.kill().await.expect("kill -9");
    first.wait().await.expect("reaped");

    let mut second = spawn_worker(&url, &s.dir.path().join("b"), &s.plugins, "b").await;
    let events = wait_done(&s.stores, &long).await;
    match events.last() {
        Some(StreamEvent::Host(HostEvent::Done { status, error, .. })) => {
            assert_eq!(*status, CommandStatus::Failed);
            assert_eq!(error.as_deref(), Some(HOST_LOST));
        }
        other => panic!("unexpected end {other:?}"),
    }
    let record = s.stores.queue.get(&long).await.unwrap();
    assert_eq!(
        (record.status, record.attempts),
        (CommandStatus::Failed, 1),
        "never re-run"
    );
    let mut previous_finish = record.finished_at.unwrap();
    for id in &queued {
        wait_done(&s.stores, id).await;
        let record = s.stores.queue.get(id).await.unwrap();
        assert_eq!(record.status, CommandStatus::Completed);
        assert_eq!(record.attempts, 1);
        assert!(record.started_at.unwrap() >= previous_finish, "order");
        previous_finish = record.finished_at.unwrap();
    }
    sigterm(&second);
    let status = second.wait().await.expect("exits");
    assert!(status.success(), "drained worker exits cleanly: {status}");
    let verified = s.stores.audit.verify().await.unwrap();
    assert_eq!(verified.first_broken, None);
}

/// The lease is kept from the claim until the final status is written, not only while the
/// provider runs: a command whose workspace diff takes longer than the 1 s lease (git hashing
/// and compressing the 100 MB of random bytes it wrote) completes, once, with its changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_diff_longer_than_the_lease_keeps_the_lease() {
    let Some(s) = setup().await else { return };
    let worker = spawn_worker(&s.db.url, &s.dir.path().join("a"), &s.plugins, "a").await;
    let write = "head -c 100000000 /dev/urandom > big.bin && echo written";
    let id = submit(&s.stores, "big", write).await;
    let events = wait_done(&s.stores, &id).await;
    let record = s.stores.queue.get(&id).await.unwrap();
    assert_eq!(
        record.status,
        CommandStatus::Completed,
        "{:?}\n{events:?}",
        record.error
    );
    assert_eq!(record.attempts, 1);
    let stored = s.stores.changes.changes(&id).await.unwrap();
    let Some(ChangesOutcome::Recorded(changes)) = stored.map(|c| c.outcome) else {
        panic!("the changes were recorded");
    };
    assert!(
        changes
            .files
            .iter()
            .any(|f| f.path == "big.bin" && f.binary),
        "{changes:?}"
    );
    sigterm(&worker);
    let mut worker = worker;
    assert!(worker.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_run_each_command_once_in_project_order() {
    let Some(s) = setup().await else { return };
    let url = s.db.url.clone();
    let mut a = spawn_worker(&url, &s.dir.path().join("a"), &s.plugins, "a").await;
    let mut b = spawn_worker(&url, &s.dir.path().join("b"), &s.plugins, "b").await;
    let total = 500;
    let projects = 20;
    let mut order: HashMap<String, Vec<CommandId>> = HashMap::new();
    for n in 0..total {
        let project = format!("p{}", n % projects);
        let id = submit(&s.stores, &project, &format!("echo {n}")).await;
        order.entry(project).or_default().push(id);
    }
    for ids in order.values() {
        let mut previous_finish = None;
        for id in ids {
            let events = wait_done(&s.stores, id).await;
            let runs = events
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        StreamEvent::Host(HostEvent::Status {
                            status: CommandStatus::Running
                        })
                    )
                })
                .count();
            assert_eq!(runs, 1, "{id} ran {runs} times");
            let record = s.stores.queue.get(id).await.unwrap();
            assert_eq!(
                record.status,
                CommandStatus::Completed,
                "{id}: {:?} {:?}\n{events:?}",
                record.error,
                record.result
            );
            assert_eq!(record.attempts, 1);
            if let Some(previous) = previous_finish {
                assert!(record.started_at.unwrap() >= previous, "project order");
            }
            previous_finish = record.finished_at;
        }
    }
    let by_worker = s
        .stores
        .audit
        .list(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "command.started")
        .fold(HashMap::<String, usize>::new(), |mut counts, e| {
            *counts.entry(e.actor).or_default() += 1;
            counts
        });
    assert_eq!(by_worker.values().sum::<usize>(), total);
    assert_eq!(by_worker.len(), 2, "both processes worked: {by_worker:?}");
    let pending = s
        .stores
        .queue
        .list(&CommandFilter {
            status: Some(CommandStatus::Pending),
            ..CommandFilter::default()
        })
        .await
        .unwrap();
    assert!(pending.is_empty());
    sigterm(&a);
    sigterm(&b);
    assert!(a.wait().await.unwrap().success());
    assert!(b.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_the_worker_process_at_once_not_at_its_heartbeat() {
    let Some(s) = setup().await else { return };
    // The heartbeat (and with it the cancel flag check) is ten minutes away: only the
    // cross-process announcement can stop the command before the test's timeout.
    let slow = Timing {
        lease_ms: 1_200_000,
        heartbeat_ms: 600_000,
        poll_ms: 1000,
    };
    let mut worker = spawn_worker_timed(
        &s.db.url,
        &s.dir.path().join("a"),
        &s.plugins,
        "a",
        slow,
        &[],
    )
    .await;
    let id = submit(&s.stores, "p", "echo started; sleep 600").await;
    wait_for_output(&s.stores, &id, "started").await;
    s.stores.queue.cancel(&id, "tester").await.expect("cancel");
    let events = wait_done(&s.stores, &id).await;
    match events.last() {
        Some(StreamEvent::Host(HostEvent::Done { status, .. })) => {
            assert_eq!(*status, CommandStatus::Cancelled);
        }
        other => panic!("unexpected end {other:?}"),
    }
    sigterm(&worker);
    assert!(worker.wait().await.unwrap().success());
}

/// Reads a command's status, retrying while the database is unreachable.
async fn status_of(stores: &Stores, id: &CommandId) -> CommandStatus {
    loop {
        match stores.queue.get(id).await {
            Ok(record) => return record.status,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Submits, retrying while the database is unreachable (the test's own store reconnects
/// like the workers' do).
async fn submit_retrying(stores: &Stores, project: &str, prompt: &str) -> CommandId {
    let project = ProjectId::parse(project).expect("project");
    for _ in 0..600 {
        let queued = async {
            stores
                .queue
                .submit(
                    NewCommand {
                        project_id: project.clone(),
                        provider: ProviderName::parse("shell").expect("name"),
                        request: AgentRequest::new(prompt),
                        idempotency_key: Some(prompt.to_owned()),
                        submitted_by: "tester".into(),
                    },
                    UnknownProject::Register,
                )
                .await
        };
        match queued.await {
            Ok(enqueued) => return enqueued.command.id,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("the database never came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_survive_a_postgres_restart_under_load_and_run_each_command_once() {
    let Some(cluster) = PrivateCluster::start().await else {
        return;
    };
    let (stores, dir, plugins) = connect_with_shell(&cluster.url).await;
    let ran = dir.path().join("ran.log");
    // Leases long enough to outlast the restart, so nothing is rescued as "host lost".
    let timing = Timing {
        lease_ms: 15_000,
        heartbeat_ms: 500,
        poll_ms: 2_000,
    };
    // Every command appends to one log outside any workspace, which the confined executor
    // (the default) forbids: this test is about the queue, so its workers run unconfined.
    let unconfined = ["--unconfined"];
    let a_dir = dir.path().join("a");
    let mut a = spawn_worker_timed(&cluster.url, &a_dir, &plugins, "a", timing, &unconfined).await;
    let b_dir = dir.path().join("b");
    let mut b = spawn_worker_timed(&cluster.url, &b_dir, &plugins, "b", timing, &unconfined).await;
    let projects = 6;
    let prompt = |n: usize| format!("sleep 0.2; echo {n} >> {}", ran.display());
    let mut ids = Vec::new();
    for n in 0..60 {
        ids.push(submit_retrying(&stores, &format!("p{}", n % projects), &prompt(n)).await);
    }
    // Restart once some have finished, while others run and the rest wait.
    while std::fs::read_to_string(&ran)
        .unwrap_or_default()
        .lines()
        .count()
        < 6
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.restart().expect("pg_ctl restart");
    for n in 60..100 {
        ids.push(submit_retrying(&stores, &format!("p{}", n % projects), &prompt(n)).await);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    for id in &ids {
        loop {
            let status = status_of(&stores, id).await;
            if status.is_terminal() {
                let record = stores.queue.get(id).await.expect("record");
                assert_eq!(
                    status,
                    CommandStatus::Completed,
                    "{id}: {:?} {:?}",
                    record.error,
                    record.result
                );
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} still {status} long after the restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut runs: HashMap<usize, usize> = HashMap::new();
    for line in std::fs::read_to_string(&ran).expect("ran.log").lines() {
        *runs
            .entry(line.trim().parse().expect("a number"))
            .or_default() += 1;
    }
    for n in 0..100 {
        assert_eq!(
            runs.get(&n),
            Some(&1),
            "command {n} ran {:?} times",
            runs.get(&n)
        );
    }
    // Every process listens again: the test's store and both workers.
    let pool = sqlx::PgPool::connect(&cluster.url).await.expect("pool");
    let listeners: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %rdev_cancel%'",
    )
    .fetch_one(&pool)
    .await
    .expect("pg_stat_activity");
    assert!(
        listeners >= 3,
        "only {listeners} listeners after the restart"
    );
    pool.close().await;
    sigterm(&a);
    sigterm(&b);
    assert!(a.wait().await.unwrap().success());
    assert!(b.wait().await.unwrap().success());
}
