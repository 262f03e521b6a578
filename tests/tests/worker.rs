//! The worker against real parts: the `shell` provider compiled to a component, the local
//! executor, and both storage adapters.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rdev::adapters::store::{StoreOptions, connect};
use rdev::domain::{
    AgentEvent, CommandId, CommandRecord, CommandStatus, CredentialName, HostEvent, MasterKey,
    ProjectId, ProviderName, QueueConfig, StreamEvent,
};
use rdev::ports::{SecretValue, StoredEvent, Stores, UnknownProject};
use rdev::registry::Registry;
use rdev::worker::{DrainReport, Worker, WorkerConfig};
use rdev_tests::harness::plugins::plugins_dir;
use rdev_tests::harness::postgres::TestDatabase;
use rdev_tests::harness::queue::new_command;
use rdev_tests::harness::runtime::{install, runtime};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use rdev_tests::harness::Database as Kind;

struct Host {
    stores: Stores,
    shutdown: CancellationToken,
    worker: Option<JoinHandle<DrainReport>>,
    _db: Option<TestDatabase>,
    _dir: tempfile::TempDir,
}

impl Host {
    async fn start(kind: Kind, drain_deadline: Duration) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (url, db) = match kind {
            Kind::Sqlite => (format!("sqlite://{}/rdev.db", dir.path().display()), None),
            Kind::Postgres => {
                let db = TestDatabase::create().await?;
                (db.url.clone(), Some(db))
            }
        };
        let queue = QueueConfig {
            heartbeat: Duration::from_millis(200),
            ..QueueConfig::default()
        };
        let stores = connect(
            &url,
            StoreOptions {
                queue,
                master_key: MasterKey::from_bytes([9; 32]),
            },
        )
        .await
        .expect("connect");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).expect("plugins dir");
        install(&plugins_dir(), "shell", &plugins, "shell", None);
        let registry = Registry::start(
            runtime(dir.path(), Duration::from_secs(2)),
            plugins,
            vec![ProviderName::parse("shell").expect("name")],
        )
        .await
        .expect("registry");
        let shutdown = CancellationToken::new();
        let mut config = WorkerConfig::new("test-worker");
        config.drain_deadline = drain_deadline;
        let worker = Worker::new(&stores, Arc::new(registry), config);
        let handle = tokio::spawn(worker.run(shutdown.clone()));
        Some(Self {
            stores,
            shutdown,
            worker: Some(handle),
            _db: db,
            _dir: dir,
        })
    }

    /// Submits `prompt` to `shell` in `project` with a 60 s timeout.
    async fn submit(&self, project: &str, prompt: &str) -> CommandId {
        self.submit_within(project, prompt, Duration::from_secs(60))
            .await
    }

    async fn submit_within(&self, project: &str, prompt: &str, timeout: Duration) -> CommandId {
        let project = ProjectId::parse(project).expect("project");
        let mut command = new_command(&project, prompt);
        command.request.timeout = timeout;
        let submitted = self.stores.queue.submit(command, UnknownProject::Register);
        submitted.await.expect("submit").command.id
    }

    /// Command `id` as the queue has it.
    async fn record(&self, id: &CommandId) -> CommandRecord {
        self.stores
            .queue
            .get(id)
            .await
            .expect("the command is stored")
    }

    /// Waits until command `id` has printed `text`: its process runs.
    async fn until_printed(&self, id: &CommandId, text: &str) {
        let mut stream = self.stores.events.subscribe(id, 0);
        loop {
            let event = stream.next().await.expect("stream open").expect("event");
            if let StreamEvent::Agent(AgentEvent::Output { text: out, .. }) = &event.event
                && out.contains(text)
            {
                return;
            }
        }
    }

    /// Every event of the stream, waiting for its end.
    async fn events(&self, id: &CommandId) -> Vec<StoredEvent> {
        let stream = self.stores.events.subscribe(id, 0);
        tokio::time::timeout(Duration::from_secs(120), stream.collect::<Vec<_>>())
            .await
            .expect("the command ends")
            .into_iter()
            .map(|e| StoredEvent::clone(&e.expect("event")))
            .collect()
    }

    async fn stop(&mut self) -> DrainReport {
        self.shutdown.cancel();
        self.worker
            .take()
            .expect("running")
            .await
            .expect("worker task")
    }
}

fn output(events: &[StoredEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.event {
            StreamEvent::Agent(AgentEvent::Output { text, .. }) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn done(events: &[StoredEvent]) -> (CommandStatus, Option<String>) {
    match &events.last().expect("events").event {
        StreamEvent::Host(HostEvent::Done { status, error, .. }) => (*status, error.clone()),
        other => panic!("last event is not done: {other:?}"),
    }
}

rdev_tests::on_both_databases!(
    a_command_runs_streams_its_output_and_is_audited,
    a_failing_command_ends_failed,
    a_running_command_is_cancelled_within_a_heartbeat,
    commands_of_one_project_run_one_after_another,
    credential_values_are_redacted_from_output,
    shutdown_lets_running_commands_finish_then_cancels_the_rest,
);

async fn a_command_runs_streams_its_output_and_is_audited(kind: Kind) {
    let Some(mut host) = Host::start(kind, Duration::from_secs(30)).await else {
        return;
    };
    let id = host.submit("demo", "echo hello; echo oops >&2").await;
    let events = host.events(&id).await;
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    assert_eq!(
        events[0].event,
        StreamEvent::Host(HostEvent::Status {
            status: CommandStatus::Pending
        })
    );
    assert_eq!(
        events[1].event,
        StreamEvent::Host(HostEvent::Status {
            status: CommandStatus::Running
        })
    );
    assert!(output(&events).contains("hello"), "{events:?}");
    assert!(output(&events).contains("oops"), "{events:?}");
    assert_eq!(done(&events).0, CommandStatus::Completed);
    let record = host.record(&id).await;
    assert_eq!(record.status, CommandStatus::Completed);
    assert_eq!(record.result.as_ref().and_then(|r| r.exit_code), Some(0));
    assert!(record.finished_at.is_some());
    // The worker may audit the start before the submitter audits the enqueue.
    let mut actions: Vec<String> = host
        .stores
        .audit
        .list(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    actions.sort();
    assert_eq!(
        actions,
        ["command.enqueued", "command.finished", "command.started"]
    );
    let verified = host.stores.audit.verify().await.unwrap();
    assert_eq!((verified.verified, verified.first_broken), (3, None));
    host.stop().await;
}

async fn a_failing_command_ends_failed(kind: Kind) {
    let Some(mut host) = Host::start(kind, Duration::from_secs(30)).await else {
        return;
    };
    let id = host.submit("demo", "exit 3").await;
    let events = host.events(&id).await;
    assert_eq!(done(&events).0, CommandStatus::Failed);
    let record = host.record(&id).await;
    assert_eq!(record.status, CommandStatus::Failed);
    assert_eq!(record.result.as_ref().and_then(|r| r.exit_code), Some(3));
    host.stop().await;
}

async fn a_running_command_is_cancelled_within_a_heartbeat(kind: Kind) {
    let Some(mut host) = Host::start(kind, Duration::from_secs(30)).await else {
        return;
    };
    let id = host
        .submit_within("demo", "echo started; sleep 60", Duration::from_secs(120))
        .await;
    let stream = host.stores.events.subscribe(&id, 0);
    host.until_printed(&id, "started").await;
    let flagged = host.stores.queue.cancel(&id, "tester").await.unwrap();
    assert_eq!(flagged.status, CommandStatus::Running);
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(60), stream.collect::<Vec<_>>())
        .await
        .expect("cancel is seen");
    let rest: Vec<StoredEvent> = rest
        .into_iter()
        .map(|e| StoredEvent::clone(&e.unwrap()))
        .collect();
    assert_eq!(done(&rest).0, CommandStatus::Cancelled);
    assert_eq!(host.record(&id).await.status, CommandStatus::Cancelled);
    host.stop().await;
}

async fn commands_of_one_project_run_one_after_another(kind: Kind) {
    let Some(mut host) = Host::start(kind, Duration::from_secs(30)).await else {
        return;
    };
    let first = host.submit("demo", "sleep 0.5; echo first").await;
    let second = host.submit("demo", "echo second").await;
    host.events(&second).await;
    let a = host.record(&first).await;
    let b = host.record(&second).await;
    assert_eq!(a.status, CommandStatus::Completed);
    assert_eq!(b.status, CommandStatus::Completed);
    assert!(
        b.started_at.unwrap() >= a.finished_at.unwrap(),
        "the follow-up started before the first finished"
    );
    host.stop().await;
}

async fn credential_values_are_redacted_from_output(kind: Kind) {
    let Some(mut host) = Host::start(kind, Duration::from_secs(30)).await else {
        return;
    };
    host.stores
        .credentials
        .put(
            &CredentialName::parse("DEPLOY_TOKEN").unwrap(),
            &SecretValue::new("tok-7f3a9c2e"),
        )
        .await
        .unwrap();
    let id = host.submit("demo", "echo token=tok-7f3a9c2e").await;
    let events = host.events(&id).await;
    let text = output(&events);
    assert!(text.contains("token=[redacted]"), "{text}");
    let stored = host.stores.events.read(&id, 0, 1000).await.unwrap();
    assert!(!format!("{stored:?}").contains("tok-7f3a9c2e"));
    host.stop().await;
}

async fn shutdown_lets_running_commands_finish_then_cancels_the_rest(kind: Kind) {
    let Some(mut host) = Host::start(kind, Duration::from_secs(60)).await else {
        return;
    };
    let short = host.submit("one", "echo go; sleep 1; echo finished").await;
    host.until_printed(&short, "go").await;
    let report = host.stop().await;
    assert_eq!(
        report,
        DrainReport {
            finished: 1,
            cancelled: 0
        }
    );
    assert_eq!(host.record(&short).await.status, CommandStatus::Completed);
    let after = host.submit("two", "echo late").await;
    assert_eq!(
        host.record(&after).await.status,
        CommandStatus::Pending,
        "a drained worker claims nothing"
    );

    let Some(mut host) = Host::start(kind, Duration::from_millis(300)).await else {
        return;
    };
    let long = host
        .submit_within("one", "echo go; sleep 60", Duration::from_secs(120))
        .await;
    host.until_printed(&long, "go").await;
    let report = host.stop().await;
    assert_eq!(
        report,
        DrainReport {
            finished: 0,
            cancelled: 1
        }
    );
    let record = host.record(&long).await;
    assert_eq!(record.status, CommandStatus::Failed);
    assert!(
        record.error.unwrap_or_default().contains("shut down"),
        "reason names the shutdown"
    );
}
