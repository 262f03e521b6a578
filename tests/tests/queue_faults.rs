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
    MasterKey, NewCommand, NewProject, ProjectId, ProviderName, QueueConfig, StreamEvent,
};
use rdev::ports::Stores;
use rdev::worker::submit_command;
use rdev_tests::harness::bin::rdev as rdev_binary;
use rdev_tests::harness::plugins::plugins_dir;
use rdev_tests::harness::postgres::TestDatabase;
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
    let stores = connect(
        &db.url,
        StoreOptions {
            queue: QueueConfig::default(),
            master_key: master_key(),
        },
    )
    .await
    .expect("connect");
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    install(&plugins_dir(), "shell", &plugins, "shell", None);
    Some(Setup {
        db,
        stores,
        dir,
        plugins,
    })
}

/// Starts `rdev worker` with a 1 s lease and 200 ms heartbeat; returns once it is ready.
async fn spawn_worker(url: &str, data: &Path, plugins: &Path, id: &str) -> Child {
    let mut child = Command::new(rdev_binary())
        .args(["worker", "--database-url", url, "--worker-id", id])
        .arg("--data-dir")
        .arg(data)
        .arg("--plugins-dir")
        .arg(plugins)
        .args([
            "--lease-ms",
            "1000",
            "--heartbeat-ms",
            "200",
            "--poll-ms",
            "1000",
        ])
        .args(["--concurrency", "4"])
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
    stores
        .projects
        .ensure(NewProject {
            id: project.clone(),
            display_name: None,
        })
        .await
        .expect("project");
    submit_command(
        stores,
        NewCommand {
            project_id: project,
            provider: ProviderName::parse("shell").expect("name"),
            request: AgentRequest::new(prompt),
            idempotency_key: None,
            submitted_by: "tester".into(),
        },
    )
    .await
    .expect("submit")
    .command
    .id
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
        .map(|e| e.expect("event").event)
        .collect()
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
    let mut stream = s.stores.events.subscribe(&long, 0);
    loop {
        let event = stream.next().await.expect("open").expect("event").event;
        if matches!(&event, StreamEvent::Agent(AgentEvent::Output { text, .. }) if text.contains("started"))
        {
            break;
        }
    }
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
            assert_eq!(record.status, CommandStatus::Completed, "{id}");
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
