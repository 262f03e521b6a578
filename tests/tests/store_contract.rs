//! One contract for both storage adapters: every test here runs against SQLite and against a
//! fresh PostgreSQL database.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rdev::adapters::store::{StoreOptions, connect};
use rdev::domain::interaction::FollowUp;
use rdev::domain::{
    AgentEvent, BrokenLink, CommandCursor, CommandFilter, CommandId, CommandStatus, CredentialName,
    HOST_LOST, HostEvent, MasterKey, NewAuditEntry, NewCommand, NewProject, Outcome, ProjectId,
    QueueConfig, StreamEvent,
};
use rdev::domain::{
    ApprovalStatus, NewApproval, Policy, PolicyMode, PolicyRule, Resolution, RuleAction,
};
use rdev::domain::{CiRegistration, CiState, NewProjectSetup};
use rdev::domain::{CommandUsage, DayRange, Usage};
use rdev::domain::{
    DeliveryAttempt, DeliveryStatus, DueDelivery, NewWebhook, NextStep, SealError, WebhookEvent,
    WebhookSecret,
};
use rdev::ports::{Announcement, DeliveryPage, SecretValue, StoreError, Stores, UnknownProject};
use rdev_tests::harness::postgres::TestDatabase;
use rdev_tests::harness::queue;
use sqlx::AssertSqlSafe;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Sqlite,
    Postgres,
}

/// Keeps the database alive for the test's duration.
enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(#[allow(dead_code)] TestDatabase),
}

struct Backend {
    kind: Kind,
    url: String,
    key: MasterKey,
    stores: Stores,
    _guard: Guard,
}

fn key(byte: u8) -> MasterKey {
    MasterKey::from_bytes([byte; 32])
}

fn unknown_command() -> CommandId {
    CommandId::parse("cmd-0190b6e2000070008000000000000000").unwrap()
}

/// A fresh, empty database of `kind`: its URL and what keeps it alive.
async fn empty_database(kind: Kind) -> Option<(String, Guard)> {
    Some(match kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}/rdev.db", dir.path().display());
            (url, Guard::Sqlite(dir))
        }
        Kind::Postgres => {
            let db = TestDatabase::create().await?;
            (db.url.clone(), Guard::Postgres(db))
        }
    })
}

/// Runs `$body` with `$pool`, a pool of its own on the database at `$url` (created if
/// missing), and closes the pool; evaluates to `$body`'s value. A macro because the two
/// databases' pools are different types.
macro_rules! with_pool {
    ($kind:expr, $url:expr, |$pool:ident| $body:expr) => {
        match $kind {
            Kind::Sqlite => {
                let options = $url.parse::<sqlx::sqlite::SqliteConnectOptions>()?;
                let $pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true)).await?;
                let value = $body;
                $pool.close().await;
                value
            }
            Kind::Postgres => {
                let $pool = sqlx::PgPool::connect($url).await?;
                let value = $body;
                $pool.close().await;
                value
            }
        }
    };
}

impl Backend {
    async fn new(kind: Kind, queue: QueueConfig) -> Option<Self> {
        let (url, guard) = empty_database(kind).await?;
        let stores = connect(
            &url,
            StoreOptions {
                queue,
                master_key: key(1),
            },
        )
        .await
        .expect("connect");
        Some(Self {
            kind,
            url,
            key: key(1),
            stores,
            _guard: guard,
        })
    }

    /// A second set of stores on the same database, as another replica would open it. On
    /// Postgres, returns once its listener is up (the listener signals work on connect).
    /// A second replica on Postgres; on SQLite, which is embedded in one process, the same
    /// stores (a second store on the file would be a second process).
    async fn other_replica(&self, queue: QueueConfig) -> Stores {
        match self.kind {
            Kind::Sqlite => self.stores.clone(),
            Kind::Postgres => self.replica(queue, self.key.clone()).await,
        }
    }

    async fn replica(&self, queue: QueueConfig, master_key: MasterKey) -> Stores {
        let stores = connect(&self.url, StoreOptions { queue, master_key })
            .await
            .expect("connect replica");
        if matches!(self.kind, Kind::Postgres) {
            let mut work = stores.queue.work_signal();
            // A fresh replica's generation is 0 until its listener has connected; it may have
            // connected (and signalled) before this receiver existed.
            if *work.borrow_and_update() == 0 {
                tokio::time::timeout(Duration::from_secs(20), work.changed())
                    .await
                    .expect("listener connects")
                    .expect("signal open");
            }
        }
        stores
    }

    /// Runs raw SQL, bypassing the ports (to tamper with rows).
    async fn exec(&self, sql: &str) -> Result<u64, sqlx::Error> {
        let sql = AssertSqlSafe(sql.to_owned());
        with_pool!(self.kind, &self.url, |pool| sqlx::query(sql)
            .execute(&pool)
            .await
            .map(|done| done.rows_affected()))
    }

    /// Holds `command`'s row locked in a transaction of a connection of its own for `hold`,
    /// telling `locked` once it holds it (on SQLite: the database's one write lock).
    async fn hold_command_row(
        &self,
        command: &CommandId,
        hold: Duration,
        locked: tokio::sync::oneshot::Sender<()>,
    ) -> Result<(), sqlx::Error> {
        let update = AssertSqlSafe(format!(
            "UPDATE commands SET event_seq = event_seq WHERE id = '{command}'"
        ));
        with_pool!(self.kind, &self.url, |pool| {
            let mut conn = pool.acquire().await?;
            sqlx::query("BEGIN").execute(&mut *conn).await?;
            sqlx::query(update).execute(&mut *conn).await?;
            let _ = locked.send(());
            tokio::time::sleep(hold).await;
            sqlx::query("COMMIT").execute(&mut *conn).await?;
        });
        Ok(())
    }

    /// Counts the rows `sql` (a `SELECT count(*) …`) finds, bypassing the ports.
    async fn count(&self, sql: &str) -> i64 {
        let sql = AssertSqlSafe(sql.to_owned());
        let count = async {
            with_pool!(self.kind, &self.url, |pool| sqlx::query_scalar(sql)
                .fetch_one(&pool)
                .await)
        };
        count.await.expect("count")
    }

    /// Makes every audit append fail inside its transaction (after whatever the transaction
    /// wrote before it), until `allow_audit`.
    async fn fail_audit_appends(&self) {
        match self.kind {
            Kind::Sqlite => {
                self.exec(
                    "CREATE TRIGGER audit_log_fail BEFORE INSERT ON audit_log \
                     BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
                )
                .await
                .unwrap();
            }
            Kind::Postgres => {
                self.exec(
                    "CREATE FUNCTION audit_log_fail() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
                )
                .await
                .unwrap();
                self.exec(
                    "CREATE TRIGGER audit_log_fail BEFORE INSERT ON audit_log \
                     FOR EACH ROW EXECUTE FUNCTION audit_log_fail()",
                )
                .await
                .unwrap();
            }
        }
    }

    async fn allow_audit(&self) {
        let sql = match self.kind {
            Kind::Sqlite => "DROP TRIGGER audit_log_fail",
            Kind::Postgres => "DROP TRIGGER audit_log_fail ON audit_log",
        };
        self.exec(sql).await.unwrap();
    }

    async fn project(&self, id: &str) -> ProjectId {
        let id = ProjectId::parse(id).expect("project id");
        self.stores
            .projects
            .ensure(NewProject {
                id: id.clone(),
                display_name: None,
            })
            .await
            .expect("project");
        id
    }

    /// Project `p` with two commands queued, `first` then `second`: their ids.
    async fn two_queued(&self, first: &str, second: &str) -> (CommandId, CommandId) {
        let p = self.project("p").await;
        (
            self.enqueue(&p, first, None).await,
            self.enqueue(&p, second, None).await,
        )
    }

    /// Project `id`, created from the blank template with CI registration `ci`.
    async fn with_setup(&self, id: &str, ci: CiRegistration) -> ProjectId {
        let project = NewProject {
            id: ProjectId::parse(id).unwrap(),
            display_name: None,
        };
        let setup = NewProjectSetup {
            template: "blank".into(),
            vars: Default::default(),
            repo: None,
            ci_repo: Some(format!("team/{id}")),
            ci,
        };
        let created = self.stores.setups.create_with_setup(project, setup).await;
        let (created, _) = created.expect("project with its setup");
        created.id
    }

    /// Stores credential `name` with `value`.
    async fn put_credential(&self, name: &str, value: &str) {
        let name = CredentialName::parse(name).unwrap();
        let value = SecretValue::new(value);
        self.stores.credentials.put(&name, &value).await.unwrap();
    }

    /// Subscribes webhook `id` of `project` to `types` (every event when empty).
    async fn subscribe(&self, id: &str, project: &ProjectId, types: &[&str]) {
        let webhook = new_webhook(id, project, types);
        self.stores.webhooks.create_webhook(webhook).await.unwrap();
    }

    async fn enqueue(&self, project: &ProjectId, prompt: &str, key: Option<&str>) -> CommandId {
        self.stores
            .queue
            .enqueue(new_command(project, prompt, key))
            .await
            .expect("enqueue")
            .command
            .id
    }
}

fn new_command(project: &ProjectId, prompt: &str, key: Option<&str>) -> NewCommand {
    NewCommand {
        idempotency_key: key.map(str::to_owned),
        ..queue::new_command(project, prompt)
    }
}

fn quick_lease() -> QueueConfig {
    QueueConfig {
        lease: Duration::from_millis(300),
        ..QueueConfig::default()
    }
}

fn unlimited() -> QueueConfig {
    QueueConfig {
        max_running_per_project: None,
        ..QueueConfig::default()
    }
}

fn unlimited_quick_lease() -> QueueConfig {
    QueueConfig {
        max_running_per_project: None,
        ..quick_lease()
    }
}

fn two_per_project() -> QueueConfig {
    QueueConfig {
        max_running_per_project: Some(2),
        ..QueueConfig::default()
    }
}

/// No poll fallback: what a replica delivers comes from its own appends, sequence gaps and
/// the other replica's notices.
fn sleepy() -> QueueConfig {
    QueueConfig {
        poll_fallback: Duration::from_secs(3600),
        ..QueueConfig::default()
    }
}

/// Runs every contract test against SQLite and against a fresh PostgreSQL database:
/// `test` gets a `Backend` with the default queue configuration, `test(config)` one with
/// `config`; after the `;`, each test gets only the kind of database (it sets one up
/// itself). Without PostgreSQL (and without `CI=true`) its half says why and passes.
macro_rules! contract {
    ($($test:ident $(($config:expr))?),* ; $($raw:ident),* $(,)?) => {
        contract!(@on sqlite Sqlite; $($test $(($config))?),* ; $($raw),*);
        contract!(@on postgres Postgres; $($test $(($config))?),* ; $($raw),*);
    };
    (@on $module:ident $kind:ident; $($test:ident $(($config:expr))?),* ; $($raw:ident),*) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let config = contract!(@config $($config)?);
                    if let Some(backend) = Backend::new(Kind::$kind, config).await {
                        super::$test(backend).await;
                    }
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $raw() {
                    super::$raw(Kind::$kind).await;
                }
            )*
        }
    };
    (@config) => {
        QueueConfig::default()
    };
    (@config $config:expr) => {
        $config
    };
}

contract!(
    projects_are_created_once,
    enqueue_with_the_same_key_returns_the_same_command,
    command_pages_neither_skip_nor_repeat_across_equal_timestamps,
    enqueue_for_an_unknown_project_is_refused,
    a_submission_writes_its_command_first_event_and_audit_entry_together,
    a_failed_submission_leaves_nothing_behind,
    a_cancel_writes_its_event_and_audit_entry_with_the_status,
    a_pipeline_status_change_commits_with_its_announcement_or_not_at_all,
    unfinished_pipelines_are_those_in_no_finished_status,
    claims_follow_queue_order_and_serialize_each_project,
    without_a_project_limit_commands_run_side_by_side(unlimited()),
    illegal_transitions_are_refused,
    an_expired_lease_is_fenced_and_a_command_not_started_is_queued_again(quick_lease()),
    a_started_command_whose_host_was_lost_fails(quick_lease()),
    rescue_requeues_idempotent_work_and_honours_cancel(unlimited_quick_lease()),
    cancel_is_immediate_when_pending_and_a_flag_when_running,
    concurrent_claimers_never_share_a_command_and_keep_project_order,
    another_replica_is_woken_by_an_enqueue,
    a_cancel_is_announced_to_the_replica_running_the_command,
    a_batch_claim_keeps_each_project_in_order_and_under_its_limit(two_per_project()),
    events_are_numbered_per_stream_and_readable_from_any_point,
    a_subscriber_replays_then_follows_until_done,
    an_append_retried_with_its_key_is_stored_once,
    input_is_stored_only_while_its_command_runs,
    a_write_waits_for_a_lock_another_connection_holds,
    a_subscriber_on_another_replica_sees_new_events,
    a_slow_subscriber_neither_stalls_the_writer_nor_misses_events,
    subscribers_on_two_replicas_get_every_event_once_while_both_append(sleepy()),
    the_audit_chain_verifies_and_reports_the_first_tampered_entry,
    concurrent_audit_appends_keep_one_chain,
    an_audit_append_retried_with_its_key_is_chained_once,
    credentials_are_encrypted_listed_by_name_and_overwritten,
    key_rotation_reencrypts_every_value,
    the_redactor_removes_stored_values,
    webhooks_belong_to_one_project,
    terminal_statuses_queue_events_for_matching_webhooks(quick_lease()),
    a_project_event_is_audited_and_queued_together,
    deliveries_are_leased_fenced_and_keep_their_attempts,
    gone_disables_a_webhook_and_cancels_its_backlog,
    concurrent_dispatchers_never_share_a_delivery,
    webhook_secrets_are_sealed_bound_to_their_row_and_survive_rotation,
    outbox_writes_wake_the_dispatchers,
    an_approval_is_requested_and_decided_once_with_its_records,
    a_policy_decision_is_stored_already_decided,
    a_decision_is_announced_to_every_replica,
    policies_default_are_replaced_and_extended_once,
    approvals_of_a_lost_or_ended_command_expire(quick_lease()),
    usage_is_stored_with_the_finish_once_and_summed_per_day(unlimited()),
    a_budget_is_set_cleared_and_announced_once_a_month;
    plaintext_secrets_from_before_sealing_are_sealed_at_start_up,
);

async fn projects_are_created_once(b: Backend) {
    let new = NewProject {
        id: ProjectId::parse("alpha").unwrap(),
        display_name: Some("Alpha".into()),
    };
    let created = b.stores.projects.create(new.clone()).await.unwrap();
    assert_eq!(created.display_name.as_deref(), Some("Alpha"));
    assert!(matches!(
        b.stores.projects.create(new.clone()).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(b.stores.projects.ensure(new).await.unwrap(), created);
    assert_eq!(b.stores.projects.list().await.unwrap(), vec![created]);
    assert!(matches!(
        b.stores
            .projects
            .get(&ProjectId::parse("nope").unwrap())
            .await,
        Err(StoreError::NotFound {
            kind: "project",
            ..
        })
    ));
}

async fn enqueue_with_the_same_key_returns_the_same_command(b: Backend) {
    let p = b.project("p").await;
    let q = b.project("q").await;
    let queue = &b.stores.queue;
    let first = queue
        .enqueue(new_command(&p, "a", Some("k1")))
        .await
        .unwrap();
    let again = queue
        .enqueue(new_command(&p, "a", Some("k1")))
        .await
        .unwrap();
    assert!(first.created);
    assert!(!again.created);
    assert_eq!(again.command.id, first.command.id);
    let other_project = queue
        .enqueue(new_command(&q, "a", Some("k1")))
        .await
        .unwrap();
    assert!(other_project.created);
    assert_ne!(other_project.command.id, first.command.id);
    let unkeyed_1 = b.enqueue(&p, "a", None).await;
    let unkeyed_2 = b.enqueue(&p, "a", None).await;
    assert_ne!(unkeyed_1, unkeyed_2);
    let stored = queue.get(&first.command.id).await.unwrap();
    assert_eq!(stored.status, CommandStatus::Pending);
    assert_eq!(stored.request.prompt, "a");
    let listed = queue
        .list(&CommandFilter {
            project_id: Some(p),
            ..CommandFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 3);
}

async fn command_pages_neither_skip_nor_repeat_across_equal_timestamps(b: Backend) {
    let p = b.project("p").await;
    let other = b.project("other").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(b.enqueue(&p, &format!("c{i}"), None).await);
        b.enqueue(&other, "elsewhere", None).await;
    }
    ids.reverse();
    // Every command at the same instant: a page boundary falls between equal timestamps.
    let tied = b
        .exec("UPDATE commands SET created_at = (SELECT MIN(created_at) FROM commands)")
        .await
        .expect("tie the timestamps");
    assert_eq!(tied, 14);
    let queue = &b.stores.queue;
    for size in [1, 2, 3, 7] {
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let filter = CommandFilter {
                project_id: Some(p.clone()),
                limit: Some(size),
                before,
                ..CommandFilter::default()
            };
            let page = queue.list_page(&filter).await.expect("a page");
            assert!(page.len() <= size as usize);
            seen.extend(page.iter().map(|(command, _)| command.id.clone()));
            match page.last() {
                Some((_, cursor)) if page.len() == size as usize => before = Some(*cursor),
                _ => break,
            }
            assert!(seen.len() <= ids.len(), "pages of {size} repeat: {seen:?}");
        }
        assert_eq!(seen, ids, "pages of {size}: newest first, each once");
    }
    // The cursor combines with the status filter and another project's commands stay out.
    let (first, cursor) = queue
        .list_page(&CommandFilter {
            project_id: Some(p.clone()),
            status: Some(CommandStatus::Pending),
            limit: Some(1),
            ..CommandFilter::default()
        })
        .await
        .expect("first page")
        .remove(0);
    assert_eq!(first.id, ids[0]);
    let rest = queue
        .list(&CommandFilter {
            project_id: Some(p),
            status: Some(CommandStatus::Pending),
            before: Some(cursor),
            ..CommandFilter::default()
        })
        .await
        .expect("the rest");
    let rest: Vec<CommandId> = rest.into_iter().map(|c| c.id).collect();
    assert_eq!(rest, ids[1..]);

    // Without a project: every project's commands, newest first, also past a cursor and
    // with a status alone.
    let newest = queue
        .list_page(&CommandFilter {
            limit: Some(3),
            ..CommandFilter::default()
        })
        .await
        .expect("first page of all");
    assert_eq!(newest.len(), 3);
    let (_, cursor) = newest[2];
    let older = queue
        .list_page(&CommandFilter {
            status: Some(CommandStatus::Pending),
            before: Some(cursor),
            ..CommandFilter::default()
        })
        .await
        .expect("older ones of all");
    assert_eq!(older.len(), 11);
    let all: Vec<CommandCursor> = newest.iter().chain(&older).map(|(_, c)| *c).collect();
    assert!(all.windows(2).all(|w| w[0].seq() > w[1].seq()), "{all:?}");
    let none_running = queue
        .list(&CommandFilter {
            status: Some(CommandStatus::Running),
            ..CommandFilter::default()
        })
        .await
        .expect("by status alone");
    assert!(none_running.is_empty());
}

async fn enqueue_for_an_unknown_project_is_refused(b: Backend) {
    let ghost = ProjectId::parse("ghost").unwrap();
    assert!(matches!(
        b.stores.queue.enqueue(new_command(&ghost, "x", None)).await,
        Err(StoreError::NotFound {
            kind: "project",
            ..
        })
    ));
}

fn pending_event() -> StreamEvent {
    StreamEvent::Host(HostEvent::Status {
        status: CommandStatus::Pending,
    })
}

async fn a_submission_writes_its_command_first_event_and_audit_entry_together(b: Backend) {
    let q = &b.stores.queue;
    let p = ProjectId::parse("fresh").unwrap();
    let first = q
        .submit(new_command(&p, "a", Some("k1")), UnknownProject::Register)
        .await
        .unwrap();
    assert!(first.created);
    let id = first.command.id.clone();
    assert_eq!(b.stores.projects.get(&p).await.unwrap().id, p);
    assert_eq!(q.get(&id).await.unwrap().status, CommandStatus::Pending);
    let events = b.stores.events.read(&id, 0, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].seq, &events[0].event), (1, &pending_event()));
    // A subscriber replays it like any other event.
    let mut stream = b.stores.events.subscribe(&id, 0);
    let replayed = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("replayed")
        .expect("an event")
        .unwrap();
    assert_eq!(replayed.seq, 1);
    let audit = b.stores.audit.list(0, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "command.enqueued");
    assert_eq!(audit[0].actor, "tester");
    assert_eq!(audit[0].command_id.as_deref(), Some(id.as_str()));
    assert_eq!(audit[0].project_id.as_deref(), Some("fresh"));
    assert_eq!(audit[0].details["idempotency_key"], "k1");
    assert_eq!(
        audit[0].details["request_digest"],
        rdev::domain::request_digest(&first.command.request)
    );
    assert!(
        !audit[0].details.to_string().contains("\"a\""),
        "the prompt stays out of the audit trail"
    );

    // A replay of the idempotency key writes nothing.
    let again = q
        .submit(new_command(&p, "a", Some("k1")), UnknownProject::Register)
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.command.id, id);
    assert_eq!(b.stores.events.read(&id, 0, 10).await.unwrap().len(), 1);
    assert_eq!(b.stores.audit.list(0, 10).await.unwrap().len(), 1);
    assert_eq!(b.count("SELECT count(*) FROM commands").await, 1);

    // An existing project is kept as it is, and the chain goes on.
    let second = q
        .submit(new_command(&p, "b", None), UnknownProject::Refuse)
        .await
        .unwrap();
    assert!(second.created);
    let events = b
        .stores
        .events
        .read(&second.command.id, 0, 10)
        .await
        .unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1]);
    let report = b.stores.audit.verify().await.unwrap();
    assert_eq!((report.verified, report.first_broken), (2, None));
    // The worker's next event follows the pending one.
    let next = b.stores.events.append(&id, &message("x")).await.unwrap();
    assert_eq!(next.seq, 2);
}

async fn a_failed_submission_leaves_nothing_behind(b: Backend) {
    let q = &b.stores.queue;
    let ghost = ProjectId::parse("ghost").unwrap();
    assert!(matches!(
        q.submit(new_command(&ghost, "x", None), UnknownProject::Refuse)
            .await,
        Err(StoreError::NotFound {
            kind: "project",
            ..
        })
    ));
    let nothing = |table: &str| format!("SELECT count(*) FROM {table}");
    for table in ["projects", "commands", "events", "audit_log"] {
        assert_eq!(b.count(&nothing(table)).await, 0, "{table} after a refusal");
    }

    // The audit append is the transaction's last write: when it fails, the project, the
    // command and its event written before it are rolled back with it.
    b.fail_audit_appends().await;
    let doomed = ProjectId::parse("doomed").unwrap();
    let failed = q
        .submit(
            new_command(&doomed, "x", Some("k")),
            UnknownProject::Register,
        )
        .await;
    assert!(
        matches!(failed, Err(StoreError::Backend { .. })),
        "{failed:?}"
    );
    for table in ["projects", "commands", "events", "audit_log"] {
        assert_eq!(b.count(&nothing(table)).await, 0, "{table} after a failure");
    }
    assert!(q.claim("w").await.unwrap().is_none());

    // The same submission goes through once the failure is gone: the key was not taken.
    b.allow_audit().await;
    let queued = q
        .submit(
            new_command(&doomed, "x", Some("k")),
            UnknownProject::Register,
        )
        .await
        .unwrap();
    assert!(queued.created);
    assert_eq!(b.count(&nothing("events")).await, 1);
    let report = b.stores.audit.verify().await.unwrap();
    assert_eq!((report.verified, report.first_broken), (1, None));
}

/// A CI registration whose pipeline 3 (of repository 7) was last seen in `status`.
fn pipeline(status: Option<&str>) -> CiRegistration {
    CiRegistration {
        state: CiState::Registered,
        repo_id: Some(7),
        pipeline: Some(3),
        pipeline_status: status.map(str::to_owned),
        error: None,
    }
}

async fn unfinished_pipelines_are_those_in_no_finished_status(b: Backend) {
    let unseen = b.with_setup("unseen", pipeline(None)).await;
    let running = b.with_setup("running", pipeline(Some("running"))).await;
    b.with_setup("passed", pipeline(Some("success"))).await;
    b.with_setup("broken", pipeline(Some("failure"))).await;
    b.with_setup("unregistered", CiRegistration::pending())
        .await;
    let watching = b
        .stores
        .setups
        .ci_unfinished(&["success", "failure"])
        .await
        .unwrap();
    let ids: HashSet<ProjectId> = watching.into_iter().map(|s| s.project_id).collect();
    assert_eq!(ids, HashSet::from([unseen, running]));
    let none_finished = b.stores.setups.ci_unfinished(&[]).await.unwrap();
    assert_eq!(none_finished.len(), 4, "every registered pipeline");
}

async fn a_pipeline_status_change_commits_with_its_announcement_or_not_at_all(b: Backend) {
    let p = b.with_setup("ci-project", pipeline(Some("running"))).await;
    b.subscribe("wh-ci", &p, &["ci.pipeline.finished"]).await;
    let announcement = || {
        let audit = NewAuditEntry {
            actor: "poller".into(),
            action: "ci.pipeline.finished".into(),
            project_id: Some(p.to_string()),
            command_id: None,
            details: serde_json::json!({"pipeline": 3, "status": "success"}),
        };
        Announcement {
            event: rdev::services::webhooks::project_event(&p, &audit),
            audit,
        }
    };
    let status = |b: &Backend| {
        let setups = b.stores.setups.clone();
        let p = p.clone();
        async move { setups.get_setup(&p).await.unwrap().ci.pipeline_status }
    };
    let setups = &b.stores.setups;

    // The audit insert fails: the status stays as it was, nothing is queued, and the change
    // is still there to be recorded by the next observer.
    b.fail_audit_appends().await;
    let failed = setups
        .record_pipeline_status(&p, 3, Some("running"), "success", Some(announcement()))
        .await;
    assert!(
        matches!(failed, Err(StoreError::Backend { .. })),
        "{failed:?}"
    );
    assert_eq!(status(&b).await.as_deref(), Some("running"));
    assert_eq!(b.count("SELECT count(*) FROM webhook_deliveries").await, 0);
    b.allow_audit().await;

    // The winner records the change, its audit entry and its delivery together; a second
    // observer of the same change writes nothing.
    for expected in [true, false] {
        let changed = setups
            .record_pipeline_status(&p, 3, Some("running"), "success", Some(announcement()))
            .await
            .unwrap();
        assert_eq!(changed, expected);
    }
    assert_eq!(status(&b).await.as_deref(), Some("success"));
    assert_eq!(
        b.count("SELECT count(*) FROM audit_log WHERE action = 'ci.pipeline.finished'")
            .await,
        1
    );
    assert_eq!(b.count("SELECT count(*) FROM webhook_deliveries").await, 1);
    let report = b.stores.audit.verify().await.unwrap();
    assert_eq!(report.first_broken, None);
}

async fn a_cancel_writes_its_event_and_audit_entry_with_the_status(b: Backend) {
    let q = &b.stores.queue;
    let p = ProjectId::parse("p").unwrap();
    let submit = |prompt: &'static str| {
        let command = new_command(&p, prompt, None);
        async move {
            q.submit(command, UnknownProject::Register)
                .await
                .unwrap()
                .command
                .id
        }
    };
    let running = submit("a").await;
    let pending = submit("b").await;
    let claim = q.claim("w").await.unwrap().unwrap();
    assert_eq!(claim.command.id, running);

    // A failure inside the cancel's transaction leaves the command as it was.
    b.fail_audit_appends().await;
    assert!(matches!(
        q.cancel(&pending, "canceller").await,
        Err(StoreError::Backend { .. })
    ));
    let unchanged = q.get(&pending).await.unwrap();
    assert_eq!(unchanged.status, CommandStatus::Pending);
    assert!(!unchanged.cancel_requested);
    assert_eq!(
        b.stores.events.read(&pending, 0, 10).await.unwrap().len(),
        1
    );
    b.allow_audit().await;

    let gone = q.cancel(&pending, "canceller").await.unwrap();
    assert_eq!(gone.status, CommandStatus::Cancelled);
    let events = b.stores.events.read(&pending, 0, 10).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert!(events[1].event.is_terminal());
    // A running command gets the flag and the audit entry; its worker writes `done`.
    let flagged = q.cancel(&running, "canceller").await.unwrap();
    assert!(flagged.cancel_requested);
    assert_eq!(
        b.stores.events.read(&running, 0, 10).await.unwrap().len(),
        1
    );
    let audit = b.stores.audit.list(0, 10).await.unwrap();
    let actions: Vec<_> = audit
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.actor.as_str(),
                e.details["status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("command.enqueued", "tester", serde_json::Value::Null),
            ("command.enqueued", "tester", serde_json::Value::Null),
            ("command.cancel_requested", "canceller", "cancelled".into()),
            ("command.cancel_requested", "canceller", "running".into()),
        ]
    );
    assert_eq!(b.stores.audit.verify().await.unwrap().first_broken, None);
}

async fn claims_follow_queue_order_and_serialize_each_project(b: Backend) {
    let (p1, p2) = (b.project("p1").await, b.project("p2").await);
    let a = b.enqueue(&p1, "a", None).await;
    let bb = b.enqueue(&p1, "b", None).await;
    let c = b.enqueue(&p2, "c", None).await;
    let q = &b.stores.queue;
    let first = q.claim("w1").await.unwrap().expect("a is runnable");
    assert_eq!(first.command.id, a);
    assert_eq!(first.command.status, CommandStatus::Running);
    assert_eq!(first.command.attempts, 1);
    assert!(first.command.started_at.is_some());
    let second = q.claim("w1").await.unwrap().expect("c is runnable");
    assert_eq!(second.command.id, c, "b waits behind a");
    assert!(q.claim("w1").await.unwrap().is_none());
    q.finish(&first.lease, queue::completed()).await.unwrap();
    let third = q.claim("w2").await.unwrap().expect("b is runnable now");
    assert_eq!(third.command.id, bb);
    assert_eq!(third.lease.owner, "w2");
}

async fn without_a_project_limit_commands_run_side_by_side(b: Backend) {
    let (a, c) = b.two_queued("a", "c").await;
    let q = &b.stores.queue;
    assert_eq!(q.claim("w").await.unwrap().unwrap().command.id, a);
    assert_eq!(q.claim("w").await.unwrap().unwrap().command.id, c);
}

async fn illegal_transitions_are_refused(b: Backend) {
    let p = b.project("p").await;
    let id = b.enqueue(&p, "a", None).await;
    let q = &b.stores.queue;
    let claim = q.claim("w").await.unwrap().unwrap();
    let back_to_pending = Outcome {
        status: CommandStatus::Pending,
        result: None,
        error: None,
        usage: Default::default(),
    };
    assert!(matches!(
        q.finish(&claim.lease, back_to_pending).await,
        Err(StoreError::IllegalTransition(_))
    ));
    let done = q.finish(&claim.lease, queue::completed()).await.unwrap();
    assert_eq!(done.status, CommandStatus::Completed);
    assert!(done.finished_at.is_some());
    assert!(matches!(
        q.finish(&claim.lease, queue::completed()).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        q.cancel(&id, "tester").await,
        Err(StoreError::IllegalTransition(_))
    ));
    assert_eq!(q.get(&id).await.unwrap().status, CommandStatus::Completed);
}

async fn an_expired_lease_is_fenced_and_a_command_not_started_is_queued_again(b: Backend) {
    let p = b.project("p").await;
    let id = b.enqueue(&p, "a", None).await;
    let q = &b.stores.queue;
    let old = q.claim("w1").await.unwrap().unwrap();
    q.heartbeat(&old.lease).await.expect("lease still held");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rescued = q.rescue_expired().await.unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].command_id, id);
    assert_eq!(rescued[0].status, CommandStatus::Pending);
    let new = q.claim("w2").await.unwrap().expect("queued again");
    assert_eq!(new.command.id, id);
    assert_eq!(new.command.attempts, 2);
    assert!(new.lease.token > old.lease.token);
    for lost in [
        q.finish(&old.lease, queue::completed()).await.err(),
        q.heartbeat(&old.lease).await.err(),
        q.mark_started(&old.lease, false, &queue::provenance())
            .await
            .err(),
    ] {
        assert!(
            matches!(lost, Some(StoreError::LeaseLost { .. })),
            "{lost:?}"
        );
    }
    q.finish(&new.lease, queue::completed())
        .await
        .expect("new owner writes");
    assert!(q.rescue_expired().await.unwrap().is_empty());
}

async fn a_started_command_whose_host_was_lost_fails(b: Backend) {
    let (id, next) = b.two_queued("a", "b").await;
    let q = &b.stores.queue;
    let claim = q.claim("w1").await.unwrap().unwrap();
    assert_eq!(claim.command.provenance, None, "nothing ran yet");
    q.mark_started(&claim.lease, false, &queue::provenance())
        .await
        .unwrap();
    assert_eq!(
        q.get(&id).await.unwrap().provenance,
        Some(queue::provenance())
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rescued = q.rescue_expired().await.unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].status, CommandStatus::Failed);
    assert_eq!(rescued[0].reason, HOST_LOST);
    let failed = q.get(&id).await.unwrap();
    assert_eq!(failed.status, CommandStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some(HOST_LOST));
    assert_eq!(q.claim("w2").await.unwrap().unwrap().command.id, next);
}

async fn rescue_requeues_idempotent_work_and_honours_cancel(b: Backend) {
    let (idem, cancelled) = b.two_queued("idempotent", "to cancel").await;
    let q = &b.stores.queue;
    let first = q.claim("w").await.unwrap().unwrap();
    q.mark_started(&first.lease, true, &queue::provenance())
        .await
        .unwrap();
    let second = q.claim("w").await.unwrap().unwrap();
    q.mark_started(&second.lease, false, &queue::provenance())
        .await
        .unwrap();
    q.cancel(&cancelled, "tester").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rescued: HashMap<CommandId, CommandStatus> = q
        .rescue_expired()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.command_id, r.status))
        .collect();
    assert_eq!(rescued.get(&idem), Some(&CommandStatus::Pending));
    assert_eq!(rescued.get(&cancelled), Some(&CommandStatus::Cancelled));
}

async fn cancel_is_immediate_when_pending_and_a_flag_when_running(b: Backend) {
    let (running, pending) = b.two_queued("a", "b").await;
    let q = &b.stores.queue;
    let claim = q.claim("w").await.unwrap().unwrap();
    assert!(!q.heartbeat(&claim.lease).await.unwrap().cancel_requested);
    let flagged = q.cancel(&running, "tester").await.unwrap();
    assert_eq!(flagged.status, CommandStatus::Running);
    assert!(flagged.cancel_requested);
    assert!(q.heartbeat(&claim.lease).await.unwrap().cancel_requested);
    let gone = q.cancel(&pending, "tester").await.unwrap();
    assert_eq!(gone.status, CommandStatus::Cancelled);
    let ended = q
        .finish(
            &claim.lease,
            Outcome {
                status: CommandStatus::Cancelled,
                result: None,
                error: Some("cancelled".into()),
                usage: Default::default(),
            },
        )
        .await
        .unwrap();
    assert_eq!(ended.status, CommandStatus::Cancelled);
    assert!(
        q.claim("w").await.unwrap().is_none(),
        "the cancelled one never runs"
    );
    assert!(matches!(
        q.cancel(&unknown_command(), "tester").await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn concurrent_claimers_never_share_a_command_and_keep_project_order(b: Backend) {
    let projects = 8;
    let per_project = 15;
    let mut order: HashMap<ProjectId, Vec<CommandId>> = HashMap::new();
    for n in 0..projects {
        b.project(&format!("p{n}")).await;
    }
    for i in 0..per_project {
        for n in 0..projects {
            let p = ProjectId::parse(format!("p{n}")).unwrap();
            let id = b.enqueue(&p, &format!("{i}"), None).await;
            order.entry(p).or_default().push(id);
        }
    }
    let total = projects * per_project;
    let replica = b.replica(QueueConfig::default(), b.key.clone()).await;
    let running: Arc<Mutex<HashSet<ProjectId>>> = Arc::default();
    let claimed: Arc<Mutex<Vec<(ProjectId, CommandId)>>> = Arc::default();
    let mut tasks = Vec::new();
    for worker in 0..6 {
        let queue = [&b.stores, &replica][worker % 2].queue.clone();
        let running = running.clone();
        let claimed = claimed.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("w{worker}");
            let mut idle = 0;
            while claimed.lock().unwrap().len() < total && idle < 500 {
                let Some(claim) = queue.claim(&owner).await.unwrap() else {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                idle = 0;
                let project = claim.command.project_id.clone();
                assert!(
                    running.lock().unwrap().insert(project.clone()),
                    "two commands of {project} ran at once"
                );
                claimed
                    .lock()
                    .unwrap()
                    .push((project.clone(), claim.command.id.clone()));
                running.lock().unwrap().remove(&project);
                queue
                    .finish(&claim.lease, queue::completed())
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let claimed = claimed.lock().unwrap().clone();
    assert_eq!(claimed.len(), total);
    let unique: HashSet<&CommandId> = claimed.iter().map(|(_, id)| id).collect();
    assert_eq!(unique.len(), total, "a command was claimed twice");
    let mut seen: HashMap<ProjectId, Vec<CommandId>> = HashMap::new();
    for (p, id) in claimed {
        seen.entry(p).or_default().push(id);
    }
    assert_eq!(seen, order, "per-project order");
}

async fn another_replica_is_woken_by_an_enqueue(b: Backend) {
    let p = b.project("p").await;
    let replica = b.other_replica(sleepy()).await;
    let mut work = replica.queue.work_signal();
    work.borrow_and_update();
    b.enqueue(&p, "a", None).await;
    tokio::time::timeout(Duration::from_secs(20), work.changed())
        .await
        .expect("woken by the enqueue")
        .unwrap();
    assert!(replica.queue.claim("w").await.unwrap().is_some());
}

async fn a_cancel_is_announced_to_the_replica_running_the_command(b: Backend) {
    let (running, pending) = b.two_queued("a", "b").await;
    let replica = b.other_replica(QueueConfig::default()).await;
    let mut cancels = replica.queue.cancel_signal();
    let claim = replica.queue.claim("w").await.unwrap().unwrap();
    assert_eq!(claim.command.id, running);
    b.stores.queue.cancel(&pending, "tester").await.unwrap();
    b.stores.queue.cancel(&running, "tester").await.unwrap();
    let announced = tokio::time::timeout(Duration::from_secs(20), cancels.recv())
        .await
        .expect("announced before any heartbeat")
        .expect("signal open");
    assert_eq!(
        announced, running,
        "only the running command is announced; the pending one simply ended"
    );
}

async fn a_batch_claim_keeps_each_project_in_order_and_under_its_limit(b: Backend) {
    let (p, r) = (b.project("p").await, b.project("r").await);
    let p1 = b.enqueue(&p, "p1", None).await;
    let r1 = b.enqueue(&r, "r1", None).await;
    let p2 = b.enqueue(&p, "p2", None).await;
    let p3 = b.enqueue(&p, "p3", None).await;
    let r2 = b.enqueue(&r, "r2", None).await;
    let q = &b.stores.queue;
    let first = q.claim_batch("w", 3).await.unwrap();
    let ids: Vec<_> = first.iter().map(|c| c.command.id.clone()).collect();
    assert_eq!(ids.len(), 3);
    for id in [&p1, &r1, &p2] {
        assert!(ids.contains(id), "the three oldest runnable: {ids:?}");
    }
    let second = q.claim_batch("w", 10).await.unwrap();
    let ids: Vec<_> = second.iter().map(|c| c.command.id.clone()).collect();
    assert_eq!(ids, vec![r2.clone()], "p3 waits: two of p are running");
    assert!(q.claim_batch("w", 10).await.unwrap().is_empty());
    let p1_claim = first.iter().find(|c| c.command.id == p1).unwrap();
    q.finish(&p1_claim.lease, queue::completed()).await.unwrap();
    let third = q.claim_batch("w", 10).await.unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].command.id, p3);
    assert_eq!(third[0].lease.owner, "w");
    // Finishes written together are still fenced one by one.
    let (stale, fresh) = tokio::join!(
        q.finish(&p1_claim.lease, queue::completed()),
        q.finish(&third[0].lease, queue::completed())
    );
    assert!(
        matches!(stale, Err(StoreError::LeaseLost { .. })),
        "{stale:?}"
    );
    assert_eq!(fresh.unwrap().status, CommandStatus::Completed);
}

fn message(text: &str) -> StreamEvent {
    StreamEvent::Agent(AgentEvent::Message {
        text: text.into(),
        partial: false,
    })
}

fn done_event() -> StreamEvent {
    StreamEvent::Host(HostEvent::Done {
        status: CommandStatus::Completed,
        result: None,
        error: None,
    })
}

async fn events_are_numbered_per_stream_and_readable_from_any_point(b: Backend) {
    let (one, two) = b.two_queued("a", "b").await;
    let log = &b.stores.events;
    for text in ["x", "y", "z"] {
        log.append(&one, &message(text)).await.unwrap();
    }
    let first_of_two = log.append(&two, &message("other")).await.unwrap();
    assert_eq!(first_of_two.seq, 1);
    let tail = log.read(&one, 1, 100).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(tail[0].event, message("y"));
    assert_eq!(log.read(&one, 0, 2).await.unwrap().len(), 2);
    assert!(matches!(
        log.append(&unknown_command(), &message("x")).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn an_append_retried_with_its_key_is_stored_once(b: Backend) {
    let p = b.project("p").await;
    let id = b.enqueue(&p, "a", None).await;
    let log = b.stores.events.clone();
    let first = log.append_once(&id, &message("once"), "k-1").await.unwrap();
    let again = log.append_once(&id, &message("once"), "k-1").await.unwrap();
    assert_eq!((again.seq, &again.event), (first.seq, &first.event));
    let other = log.append_once(&id, &message("next"), "k-2").await.unwrap();
    let plain = log.append(&id, &message("unkeyed")).await.unwrap();
    assert_eq!((other.seq, plain.seq), (first.seq + 1, first.seq + 2));
    let stored: Vec<_> = log.read(&id, 0, 100).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=plain.seq).collect::<Vec<_>>(),
        "no second copy and no gap"
    );
    // Keys are per stream: another command may use the same one.
    let other_id = b.enqueue(&p, "b", None).await;
    let elsewhere = log
        .append_once(&other_id, &message("once"), "k-1")
        .await
        .unwrap();
    assert_eq!(elsewhere.stream, other_id);
    assert!(matches!(
        log.append_once(
            &CommandId::from_uuid(uuid::Uuid::now_v7()),
            &message("x"),
            "k-3"
        )
        .await,
        Err(StoreError::NotFound {
            kind: "command",
            ..
        })
    ));
}

fn input(id: &str) -> StreamEvent {
    StreamEvent::Host(HostEvent::Input {
        input: FollowUp {
            id: id.into(),
            text: "more".into(),
        },
    })
}

/// A write waits for a lock another connection holds instead of failing. On SQLite a keyed
/// append reads before it writes, and a deferred transaction that has read gets `database is
/// locked` at once instead of waiting (seen as a flaky input test while a dropped
/// transaction's rollback still held the lock).
async fn a_write_waits_for_a_lock_another_connection_holds(b: Backend) {
    let (running, _) = b.two_queued("a", "b").await;
    let claim = b.stores.queue.claim("w").await.unwrap().unwrap();
    assert_eq!(claim.command.id, running);
    let (locked, is_locked) = tokio::sync::oneshot::channel();
    let holder = b.hold_command_row(&running, Duration::from_millis(300), locked);
    let append = async {
        is_locked.await.expect("the lock is taken");
        b.stores
            .events
            .append_while_running(&running, &input("in-1"), "input:in-1")
            .await
    };
    let (held, stored) = tokio::join!(holder, append);
    held.expect("the other connection held and released the lock");
    let stored = stored.expect("the append waited for the lock");
    let keyed = b
        .stores
        .events
        .read_keyed(&running, "input:")
        .await
        .unwrap();
    assert_eq!(
        keyed.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![stored.seq]
    );
}

/// `append_while_running` refuses a command that is not running, and racing a finish, every
/// input it accepted is stored before the final status: what is stored once the finish
/// returned never grows (the worker's report of undelivered input relies on it).
async fn input_is_stored_only_while_its_command_runs(b: Backend) {
    let (running, pending) = b.two_queued("a", "b").await;
    let log = b.stores.events.clone();
    let refused = log
        .append_while_running(&pending, &input("in-0"), "input:in-0")
        .await;
    assert!(matches!(refused, Err(StoreError::Conflict(_))));
    let claim = b.stores.queue.claim("w").await.unwrap().unwrap();
    assert_eq!(claim.command.id, running);
    let first = log
        .append_while_running(&running, &input("in-1"), "input:in-1")
        .await
        .unwrap();
    let again = log
        .append_while_running(&running, &input("in-1"), "input:in-1")
        .await
        .unwrap();
    assert_eq!(first.seq, again.seq, "a retried input is stored once");
    log.append(&running, &message("not keyed")).await.unwrap();
    let keyed = log.read_keyed(&running, "input:").await.unwrap();
    assert_eq!(
        keyed.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![first.seq]
    );
    assert!(log.read_keyed(&running, "deli").await.unwrap().is_empty());
    assert!(matches!(
        log.read_keyed(&running, "in_").await,
        Err(StoreError::Invalid(_))
    ));

    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (log, id) = (log.clone(), running.clone());
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                for n in 0.. {
                    let key = format!("input:w{w}-{n}");
                    match log.append_while_running(&id, &input(&key), &key).await {
                        Ok(stored) => accepted.push(stored.seq),
                        Err(StoreError::Conflict(_)) => return accepted,
                        Err(other) => panic!("{other:?}"),
                    }
                }
                accepted
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let outcome = Outcome {
        status: CommandStatus::Completed,
        result: None,
        error: None,
        usage: Default::default(),
    };
    b.stores.queue.finish(&claim.lease, outcome).await.unwrap();
    let at_finish = log.read_keyed(&running, "input:").await.unwrap();
    let mut accepted = vec![first.seq];
    for writer in writers {
        accepted.extend(writer.await.unwrap());
    }
    accepted.sort_unstable();
    let stored: Vec<i64> = log
        .read_keyed(&running, "input:")
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert!(accepted.len() > 1, "the writers raced the finish");
    assert_eq!(stored, accepted, "every accepted input is stored");
    assert_eq!(
        at_finish.iter().map(|e| e.seq).collect::<Vec<_>>(),
        stored,
        "nothing was stored after the finish"
    );
}

async fn a_subscriber_replays_then_follows_until_done(b: Backend) {
    let p = b.project("p").await;
    let id = b.enqueue(&p, "a", None).await;
    let log = b.stores.events.clone();
    log.append(&id, &message("before")).await.unwrap();
    let mut sub = log.subscribe(&id, 0);
    let first = sub.next().await.unwrap().unwrap();
    assert_eq!((first.seq, first.event.clone()), (1, message("before")));
    let writer = {
        let log = log.clone();
        let id = id.clone();
        tokio::spawn(async move {
            log.append(&id, &message("after")).await.unwrap();
            log.append(&id, &done_event()).await.unwrap();
        })
    };
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(30), sub.collect::<Vec<_>>())
        .await
        .expect("stream ends after done");
    writer.await.unwrap();
    let rest: Vec<_> = rest.into_iter().map(|e| e.unwrap()).collect();
    assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert!(rest[1].event.is_terminal());
    let resumed: Vec<_> = log.subscribe(&id, 2).collect().await;
    assert_eq!(
        resumed.len(),
        1,
        "resuming after 2 replays only the done event"
    );
}

async fn a_subscriber_on_another_replica_sees_new_events(b: Backend) {
    let p = b.project("p").await;
    let id = b.enqueue(&p, "a", None).await;
    let replica = b.other_replica(sleepy()).await;
    let mut sub = replica.events.subscribe(&id, 0);
    let reader = tokio::spawn(async move { sub.next().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.stores
        .events
        .append(&id, &message("hello"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("notified across replicas")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.event, message("hello"));
}

async fn a_slow_subscriber_neither_stalls_the_writer_nor_misses_events(b: Backend) {
    let p = b.project("p").await;
    let id = b.enqueue(&p, "a", None).await;
    let log = b.stores.events.clone();
    let sub = log.subscribe(&id, 0);
    let count = rdev::adapters::store::EVENT_FANOUT_CAPACITY + 300;
    for i in 0..count {
        log.append(&id, &message(&i.to_string())).await.unwrap();
    }
    log.append(&id, &done_event()).await.unwrap();
    let all: Vec<_> = sub.collect().await;
    assert_eq!(all.len(), count + 1);
    for (i, event) in all.iter().enumerate() {
        let event = event.as_ref().unwrap();
        assert_eq!(event.seq, i as i64 + 1);
    }
}

async fn subscribers_on_two_replicas_get_every_event_once_while_both_append(b: Backend) {
    let p = b.project("p").await;
    let id = b.enqueue(&p, "a", None).await;
    let replica = b.other_replica(sleepy()).await;
    let logs = [b.stores.events.clone(), replica.events.clone()];
    for n in 0..5 {
        logs[0]
            .append(&id, &message(&format!("early {n}")))
            .await
            .unwrap();
    }
    let per_writer = 100;
    let mut readers = Vec::new();
    for r in 0..40 {
        // Half replay from the start, half resume after the early events.
        let after = if r % 2 == 0 { 0 } else { 5 };
        let sub = logs[r % 2].subscribe(&id, after);
        readers.push((after, tokio::spawn(sub.collect::<Vec<_>>())));
    }
    let writers: Vec<_> = logs
        .iter()
        .enumerate()
        .map(|(w, log)| {
            let (log, id) = (log.clone(), id.clone());
            tokio::spawn(async move {
                for n in 0..per_writer {
                    log.append(&id, &message(&format!("{w}:{n}")))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    // Once the subscribers have drained the appends, the replica's learn of this last
    // event only through its notice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    logs[0].append(&id, &done_event()).await.unwrap();
    let total = 5 + 2 * per_writer as i64 + 1;
    for (after, reader) in readers {
        let events = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .expect("every subscriber reaches the done event")
            .unwrap();
        let seqs: Vec<i64> = events.into_iter().map(|e| e.unwrap().seq).collect();
        assert_eq!(seqs, (after + 1..=total).collect::<Vec<_>>());
    }
}

fn audit(action: &str, n: usize) -> NewAuditEntry {
    NewAuditEntry {
        actor: "admin".into(),
        action: action.into(),
        project_id: Some("p".into()),
        command_id: None,
        details: serde_json::json!({"n": n, "z": [1.5, "x"], "a": {"nested": true}}),
    }
}

async fn the_audit_chain_verifies_and_reports_the_first_tampered_entry(b: Backend) {
    let log = &b.stores.audit;
    for n in 0..5 {
        log.append(audit("credential.put", n)).await.unwrap();
    }
    let report = log.verify().await.unwrap();
    assert_eq!((report.verified, report.first_broken), (5, None));
    let entries = log.list(0, 10).await.unwrap();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[1].prev_hash, entries[0].hash);

    let tamper = "UPDATE audit_log SET details = '{\"n\":99}' WHERE seq = 3";
    assert!(b.exec(tamper).await.is_err(), "updates are rejected");
    assert!(b.exec("DELETE FROM audit_log WHERE seq = 3").await.is_err());
    let disable = match b.kind {
        Kind::Sqlite => "DROP TRIGGER audit_log_no_update",
        Kind::Postgres => "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update",
    };
    b.exec(disable).await.unwrap();
    assert_eq!(b.exec(tamper).await.unwrap(), 1);
    let report = log.verify().await.unwrap();
    assert_eq!(report.verified, 2);
    assert_eq!(report.first_broken, Some(BrokenLink::Altered { seq: 3 }));
}

async fn concurrent_audit_appends_keep_one_chain(b: Backend) {
    let replica = b.other_replica(QueueConfig::default()).await;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let log = [&b.stores, &replica][t % 2].audit.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..10 {
                log.append(audit("command.finished", n)).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let report = b.stores.audit.verify().await.unwrap();
    assert_eq!((report.verified, report.first_broken), (40, None));
}

async fn an_audit_append_retried_with_its_key_is_chained_once(b: Backend) {
    let log = b.stores.audit.clone();
    let first = log
        .append_once(audit("command.finished", 1), "k-1")
        .await
        .unwrap();
    let again = log
        .append_once(audit("command.finished", 1), "k-1")
        .await
        .unwrap();
    assert_eq!((again.seq, &again.hash), (first.seq, &first.hash));
    let other = log
        .append_once(audit("command.finished", 2), "k-2")
        .await
        .unwrap();
    let plain = log.append(audit("command.finished", 3)).await.unwrap();
    assert_eq!((other.seq, plain.seq), (first.seq + 1, first.seq + 2));

    // Attempts racing with one key, from both replicas on Postgres, chain one entry.
    let replica = b.other_replica(QueueConfig::default()).await;
    let racers: Vec<_> = (0..6)
        .map(|t| {
            let log = if t % 2 == 0 {
                b.stores.audit.clone()
            } else {
                replica.audit.clone()
            };
            tokio::spawn(async move {
                log.append_once(audit("command.started", 4), "race")
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for racer in racers {
        seqs.push(racer.await.unwrap().seq);
    }
    assert!(seqs.iter().all(|s| *s == plain.seq + 1), "{seqs:?}");
    let report = log.verify().await.unwrap();
    assert_eq!((report.verified, report.first_broken), (4, None));
}

async fn credentials_are_encrypted_listed_by_name_and_overwritten(b: Backend) {
    let creds = &b.stores.credentials;
    let name = CredentialName::parse("ANTHROPIC_API_KEY").unwrap();
    let info = creds
        .put(&name, &SecretValue::new("sk-first-value"))
        .await
        .unwrap();
    assert_eq!(info.name, name);
    assert_eq!(
        creds.resolve("ANTHROPIC_API_KEY").await.unwrap(),
        Some(SecretValue::new("sk-first-value"))
    );
    let rotated = creds
        .put(&name, &SecretValue::new("sk-second-value"))
        .await
        .unwrap();
    assert_eq!(rotated.created_at, info.created_at);
    assert!(rotated.updated_at >= info.updated_at);
    assert_eq!(
        creds.resolve("ANTHROPIC_API_KEY").await.unwrap(),
        Some(SecretValue::new("sk-second-value"))
    );
    let listed = creds.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!format!("{listed:?}").contains("sk-second"));
    let in_plain_text = match b.kind {
        Kind::Sqlite => "UPDATE credentials SET name = name WHERE instr(sealed, 'sk-second') > 0",
        Kind::Postgres => {
            "UPDATE credentials SET name = name WHERE position('sk-second'::bytea in sealed) > 0"
        }
    };
    assert_eq!(
        b.exec(in_plain_text).await.unwrap(),
        0,
        "value stored in plain text"
    );
    assert_eq!(creds.resolve("MISSING").await.unwrap(), None);
    creds.delete(&name).await.unwrap();
    assert_eq!(creds.resolve("ANTHROPIC_API_KEY").await.unwrap(), None);
    assert!(matches!(
        creds.delete(&name).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn key_rotation_reencrypts_every_value(b: Backend) {
    let creds = &b.stores.credentials;
    for (name, value) in [("ONE", "value-one"), ("TWO", "value-two")] {
        b.put_credential(name, value).await;
    }
    assert_eq!(creds.rotate_key(key(2)).await.unwrap(), 2);
    assert_eq!(
        creds.resolve("TWO").await.unwrap(),
        Some(SecretValue::new("value-two"))
    );
    let with_new_key = b.replica(QueueConfig::default(), key(2)).await;
    assert_eq!(
        with_new_key.credentials.resolve("ONE").await.unwrap(),
        Some(SecretValue::new("value-one"))
    );
    let with_old_key = b.replica(QueueConfig::default(), key(1)).await;
    let refused = with_old_key.credentials.resolve("ONE").await;
    assert!(refused.is_err(), "old key still opens a rotated value");
    assert!(!format!("{refused:?}").contains("value-one"));
}

async fn the_redactor_removes_stored_values(b: Backend) {
    let creds = &b.stores.credentials;
    b.put_credential("TOKEN", "ghp_abcdef123").await;
    let redactor = creds.redactor().await.unwrap();
    let mut event = AgentEvent::Output {
        stream: rdev::domain::OutputStream::Stdout,
        text: "token is ghp_abcdef123.".into(),
    };
    redactor.redact(&mut event);
    let text = serde_json::to_string(&event).unwrap();
    assert!(!text.contains("ghp_abcdef123"), "{text}");
    assert!(text.contains("[redacted]"));
}

fn new_webhook(id: &str, project: &ProjectId, types: &[&str]) -> NewWebhook {
    NewWebhook {
        id: id.to_owned(),
        project_id: project.clone(),
        url: format!("https://hooks.example.com/{id}"),
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
        description: None,
        secret: WebhookSecret::from_random(&[9; 32]),
    }
}

const LONG_LEASE: Duration = Duration::from_secs(60);

/// Every due delivery, claimed by `owner`.
async fn claim_all(stores: &Stores, owner: &str) -> Vec<DueDelivery> {
    stores
        .webhooks
        .claim_deliveries(owner, 100, LONG_LEASE)
        .await
        .expect("claim")
}

fn attempt(n: u32, status: Option<u16>) -> DeliveryAttempt {
    DeliveryAttempt {
        attempt: n,
        started_at: chrono::Utc::now(),
        duration_ms: 3,
        status_code: status,
        error: status.filter(|s| *s >= 300).map(|s| format!("HTTP {s}")),
    }
}

fn event(project: &ProjectId, event_type: &str) -> WebhookEvent {
    WebhookEvent::new(
        uuid::Uuid::now_v7(),
        event_type,
        project.clone(),
        chrono::Utc::now(),
        serde_json::json!({"n": 1}),
    )
}

async fn webhooks_belong_to_one_project(b: Backend) {
    let w = &b.stores.webhooks;
    // The project need not exist yet: project.created can be subscribed to in advance.
    let p = ProjectId::parse("future").unwrap();
    let other = ProjectId::parse("other").unwrap();
    let created = w
        .create_webhook(new_webhook("wh-1", &p, &["command.failed"]))
        .await
        .expect("created");
    assert_eq!(created.event_types, vec!["command.failed"]);
    assert!(created.enabled);
    assert!(matches!(
        w.create_webhook(new_webhook("wh-1", &p, &[])).await,
        Err(StoreError::Conflict(_))
    ));
    b.subscribe("wh-2", &other, &[]).await;
    let listed = w.list_webhooks(&p).await.unwrap();
    assert_eq!(
        listed.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["wh-1"]
    );
    assert_eq!(w.get_webhook(&p, "wh-1").await.unwrap(), created);
    for missing in [
        w.get_webhook(&other, "wh-1").await.err(),
        w.delete_webhook(&other, "wh-1").await.err(),
        w.list_deliveries(
            &other,
            "wh-1",
            DeliveryPage {
                before: None,
                limit: 10,
            },
        )
        .await
        .err(),
    ] {
        assert!(
            matches!(
                missing,
                Some(StoreError::NotFound {
                    kind: "webhook",
                    ..
                })
            ),
            "{missing:?}"
        );
    }
    w.delete_webhook(&p, "wh-1").await.unwrap();
    assert!(w.list_webhooks(&p).await.unwrap().is_empty());
    // Removing a project removes its webhooks.
    b.project("other").await;
    b.stores.projects.delete(&other).await.unwrap();
    assert!(w.list_webhooks(&other).await.unwrap().is_empty());
}

async fn terminal_statuses_queue_events_for_matching_webhooks(b: Backend) {
    let p = b.project("p").await;
    let other = b.project("other").await;
    b.subscribe("wh-all", &p, &[]).await;
    b.subscribe("wh-star", &p, &["*"]).await;
    b.subscribe("wh-failed", &p, &["command.failed"]).await;
    b.subscribe("wh-created", &p, &["project.created"]).await;
    b.subscribe("wh-other", &other, &[]).await;
    let q = &b.stores.queue;

    let completed = b.enqueue(&p, "ok", None).await;
    let claim = q.claim("w").await.unwrap().unwrap();
    q.mark_started(&claim.lease, false, &queue::provenance())
        .await
        .unwrap();
    let finished = q.finish(&claim.lease, queue::completed()).await.unwrap();
    let cancelled = b.enqueue(&p, "never", None).await;
    q.cancel(&cancelled, "tester").await.unwrap();
    let lost = b.enqueue(&p, "lost", None).await;
    let claim = q.claim("w").await.unwrap().unwrap();
    q.mark_started(&claim.lease, false, &queue::provenance())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(q.rescue_expired().await.unwrap().len(), 1);

    let due = claim_all(&b.stores, "d").await;
    let mut seen: Vec<(String, String, String)> = due
        .iter()
        .map(|d| {
            let body: serde_json::Value = serde_json::from_str(&d.payload).expect("JSON body");
            assert_eq!(body["type"], d.event_type.as_str());
            assert!(body["timestamp"].is_string());
            (
                d.webhook_id.clone(),
                d.event_type.clone(),
                body["data"]["command_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut expected = vec![
        (
            "wh-all".into(),
            "command.completed".into(),
            completed.to_string(),
        ),
        (
            "wh-all".into(),
            "command.cancelled".into(),
            cancelled.to_string(),
        ),
        ("wh-all".into(), "command.failed".into(), lost.to_string()),
        (
            "wh-star".into(),
            "command.completed".into(),
            completed.to_string(),
        ),
        (
            "wh-star".into(),
            "command.cancelled".into(),
            cancelled.to_string(),
        ),
        ("wh-star".into(), "command.failed".into(), lost.to_string()),
        (
            "wh-failed".into(),
            "command.failed".into(),
            lost.to_string(),
        ),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    let done = due
        .iter()
        .find(|d| d.event_type == "command.completed")
        .expect("completed event");
    let body: serde_json::Value = serde_json::from_str(&done.payload).unwrap();
    assert_eq!(body["data"]["project_id"], "p");
    assert_eq!(body["data"]["provider"], "shell");
    assert_eq!(body["data"]["status"], "completed");
    assert_eq!(
        body["data"]["finished_at"],
        serde_json::json!(finished.finished_at)
    );
    assert!(body["data"]["duration_ms"].is_i64());
    // One event id per event: every subscriber sees the same webhook-id.
    let ids: HashSet<_> = due
        .iter()
        .filter(|d| d.event_type == "command.failed")
        .map(|d| d.event_id.clone())
        .collect();
    assert_eq!(ids.len(), 1);
}

async fn a_project_event_is_audited_and_queued_together(b: Backend) {
    let w = &b.stores.webhooks;
    let p = ProjectId::parse("new").unwrap();
    b.subscribe("wh-1", &p, &["project.created"]).await;
    b.subscribe("wh-2", &p, &["ci.pipeline.started"]).await;
    let entry = NewAuditEntry {
        actor: "tester".into(),
        action: "project.created".into(),
        project_id: Some("new".into()),
        command_id: None,
        details: serde_json::json!({"template": "rust"}),
    };
    let queued = rdev::services::webhooks::record_project_event(w.as_ref(), &p, entry)
        .await
        .unwrap();
    assert_eq!(queued, 1);
    let audit = b.stores.audit.list(0, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "project.created");
    assert_eq!(b.stores.audit.verify().await.unwrap().first_broken, None);
    let due = claim_all(&b.stores, "d").await;
    assert_eq!(due.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&due[0].payload).unwrap();
    assert_eq!(body["type"], "project.created");
    assert_eq!(body["data"]["template"], "rust");
    assert_eq!(body["data"]["project_id"], "new");
    // Disabled (or absent) subscriptions get nothing, and the audit entry is still written.
    assert_eq!(
        w.emit(
            &event(&ProjectId::parse("nobody").unwrap(), "project.created"),
            None
        )
        .await
        .unwrap(),
        0
    );
}

async fn deliveries_are_leased_fenced_and_keep_their_attempts(b: Backend) {
    let w = &b.stores.webhooks;
    let p = ProjectId::parse("p").unwrap();
    b.subscribe("wh-1", &p, &[]).await;
    for _ in 0..3 {
        w.emit(&event(&p, "ci.pipeline.finished"), None)
            .await
            .unwrap();
    }
    let first = claim_all(&b.stores, "d1").await;
    assert_eq!(first.len(), 3);
    assert!(
        first
            .iter()
            .all(|d| d.attempt == 1 && d.url.ends_with("/wh-1"))
    );
    // Leased: nobody else gets them.
    assert!(claim_all(&b.stores, "d2").await.is_empty());
    let d = &first[0];
    w.record_attempt(
        d,
        &attempt(1, Some(500)),
        NextStep::RetryAt(chrono::Utc::now()),
    )
    .await
    .unwrap();
    // The same claim cannot record twice.
    assert!(matches!(
        w.record_attempt(d, &attempt(1, Some(500)), NextStep::Delivered)
            .await,
        Err(StoreError::Conflict(_))
    ));
    let again = claim_all(&b.stores, "d2").await;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempt), (d.id, 2));
    w.record_attempt(&again[0], &attempt(2, Some(204)), NextStep::Delivered)
        .await
        .unwrap();
    w.record_attempt(&first[1], &attempt(1, None), NextStep::GiveUp)
        .await
        .unwrap();
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    w.record_attempt(&first[2], &attempt(1, Some(503)), NextStep::RetryAt(future))
        .await
        .unwrap();
    assert!(claim_all(&b.stores, "d3").await.is_empty(), "not due yet");

    let page = w
        .list_deliveries(
            &p,
            "wh-1",
            DeliveryPage {
                before: None,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    assert!(page[0].id > page[1].id, "newest first");
    let rest = w
        .list_deliveries(
            &p,
            "wh-1",
            DeliveryPage {
                before: Some(page[1].id),
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    let all: HashMap<i64, _> = page.into_iter().chain(rest).map(|d| (d.id, d)).collect();
    let delivered = &all[&d.id];
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    assert_eq!(
        delivered
            .attempts
            .iter()
            .map(|a| (a.attempt, a.status_code))
            .collect::<Vec<_>>(),
        [(1, Some(500)), (2, Some(204))]
    );
    assert_eq!(delivered.attempts[0].error.as_deref(), Some("HTTP 500"));
    assert!(delivered.finished_at.is_some());
    assert_eq!(all[&first[1].id].status, DeliveryStatus::Failed);
    let waiting = &all[&first[2].id];
    assert_eq!(waiting.status, DeliveryStatus::Pending);
    let next = waiting.next_attempt_at.expect("scheduled");
    assert!(
        (next - future).num_seconds().abs() <= 1,
        "{next} vs {future}"
    );
    assert_eq!(waiting.payload["type"], "ci.pipeline.finished");
}

async fn gone_disables_a_webhook_and_cancels_its_backlog(b: Backend) {
    let w = &b.stores.webhooks;
    let p = ProjectId::parse("p").unwrap();
    b.subscribe("wh-gone", &p, &[]).await;
    b.subscribe("wh-ok", &p, &[]).await;
    w.emit(&event(&p, "project.created"), None).await.unwrap();
    let due = claim_all(&b.stores, "d").await;
    assert_eq!(due.len(), 2);
    w.emit(&event(&p, "ci.pipeline.started"), None)
        .await
        .unwrap();
    let gone = due.iter().find(|d| d.webhook_id == "wh-gone").unwrap();
    w.record_attempt(gone, &attempt(1, Some(410)), NextStep::Disable)
        .await
        .unwrap();
    let hook = w.get_webhook(&p, "wh-gone").await.unwrap();
    assert!(!hook.enabled);
    assert!(
        hook.disabled_reason
            .as_deref()
            .unwrap_or("")
            .contains("410")
    );
    assert!(w.get_webhook(&p, "wh-ok").await.unwrap().enabled);
    let statuses: Vec<DeliveryStatus> = w
        .list_deliveries(
            &p,
            "wh-gone",
            DeliveryPage {
                before: None,
                limit: 10,
            },
        )
        .await
        .unwrap()
        .iter()
        .map(|d| d.status)
        .collect();
    assert_eq!(
        statuses,
        [DeliveryStatus::Cancelled, DeliveryStatus::Failed]
    );
    // Nothing more for the disabled endpoint, new events included.
    w.emit(&event(&p, "ci.pipeline.finished"), None)
        .await
        .unwrap();
    let next = claim_all(&b.stores, "d2").await;
    assert_eq!(next.len(), 2);
    assert!(next.iter().all(|d| d.webhook_id == "wh-ok"));
}

async fn concurrent_dispatchers_never_share_a_delivery(b: Backend) {
    let replica = b.replica(QueueConfig::default(), key(1)).await;
    let p = ProjectId::parse("p").unwrap();
    b.subscribe("wh-1", &p, &[]).await;
    for _ in 0..60 {
        b.stores
            .webhooks
            .emit(&event(&p, "ci.pipeline.finished"), None)
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for (i, stores) in [b.stores.clone(), replica.clone(), b.stores.clone(), replica]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = stores
                    .webhooks
                    .claim_deliveries(&format!("d{i}"), 4, LONG_LEASE)
                    .await
                    .expect("claim");
                if got.is_empty() {
                    break mine;
                }
                mine.extend(got.into_iter().map(|d| d.id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a delivery was claimed twice");
    assert_eq!(unique.len(), 60);
}

fn webhook_with_secret(id: &str, project: &ProjectId, byte: u8) -> (NewWebhook, WebhookSecret) {
    let secret = WebhookSecret::from_random(&[byte; 32]);
    let webhook = NewWebhook {
        secret: secret.clone(),
        ..new_webhook(id, project, &[])
    };
    (webhook, secret)
}

/// The SQL that counts webhook rows holding `text` anywhere in plain text.
fn rows_holding(kind: Kind, text: &str) -> String {
    match kind {
        Kind::Sqlite => format!(
            "SELECT count(*) FROM webhooks WHERE legacy_secret IS NOT NULL \
             OR instr(sealed_secret, CAST('{text}' AS BLOB)) > 0 \
             OR instr(url || event_types || coalesce(description, ''), '{text}') > 0"
        ),
        Kind::Postgres => format!(
            "SELECT count(*) FROM webhooks WHERE legacy_secret IS NOT NULL \
             OR position('{text}'::bytea in sealed_secret) > 0 \
             OR position('{text}' in url || event_types::text || coalesce(description, '')) > 0"
        ),
    }
}

/// Claims the one due delivery of `webhook`, after `event` was emitted for its project.
async fn claim_one_of(stores: &Stores, project: &ProjectId, webhook: &str) -> DueDelivery {
    stores
        .webhooks
        .emit(&event(project, "ci.pipeline.finished"), None)
        .await
        .unwrap();
    let due = claim_all(stores, "d").await;
    due.into_iter()
        .find(|d| d.webhook_id == webhook)
        .expect("a delivery for the webhook")
}

async fn webhook_secrets_are_sealed_bound_to_their_row_and_survive_rotation(b: Backend) {
    let w = &b.stores.webhooks;
    let p = ProjectId::parse("p").unwrap();
    let (one, secret_one) = webhook_with_secret("wh-1", &p, 11);
    let (two, secret_two) = webhook_with_secret("wh-2", &p, 12);
    w.create_webhook(one).await.unwrap();
    w.create_webhook(two).await.unwrap();
    for secret in [&secret_one, &secret_two] {
        assert_eq!(
            b.count(&rows_holding(b.kind, secret.expose())).await,
            0,
            "secret stored in plain text"
        );
    }
    assert_eq!(
        b.count("SELECT count(*) FROM webhooks WHERE sealed_secret IS NOT NULL")
            .await,
        2
    );
    // Round trip, and the claimed delivery carries it sealed only.
    let due = claim_one_of(&b.stores, &p, "wh-1").await;
    assert!(!format!("{due:?}").contains(secret_one.expose()));
    assert_eq!(w.open_secret(&due).unwrap(), secret_one);
    w.record_attempt(&due, &attempt(1, Some(204)), NextStep::Delivered)
        .await
        .unwrap();

    // Rotation re-seals the webhook secrets with the credentials, in one transaction.
    b.put_credential("ONE", "value-one").await;
    assert_eq!(b.stores.credentials.rotate_key(key(2)).await.unwrap(), 3);
    assert_eq!(
        b.count(&rows_holding(b.kind, secret_two.expose())).await,
        0,
        "plain text after rotation"
    );
    let due = claim_one_of(&b.stores, &p, "wh-2").await;
    assert_eq!(w.open_secret(&due).unwrap(), secret_two);
    let with_new_key = b.replica(QueueConfig::default(), key(2)).await;
    assert_eq!(with_new_key.webhooks.open_secret(&due).unwrap(), secret_two);
    let with_old_key = b.replica(QueueConfig::default(), key(1)).await;
    let refused = with_old_key.webhooks.open_secret(&due);
    assert_eq!(
        refused,
        Err(StoreError::Seal(SealError::UndecryptableWebhookSecret(
            "wh-2".into()
        )))
    );

    // wh-1's sealed secret copied into wh-2's row does not open there.
    b.exec(
        "UPDATE webhooks SET sealed_secret = \
         (SELECT sealed_secret FROM webhooks WHERE id = 'wh-1') WHERE id = 'wh-2'",
    )
    .await
    .unwrap();
    let due = claim_all(&b.stores, "d2").await;
    let moved = due.iter().find(|d| d.webhook_id == "wh-2");
    // The earlier claim of wh-2's delivery is still leased; take a fresh one.
    let moved = match moved {
        Some(d) => d.clone(),
        None => claim_one_of(&b.stores, &p, "wh-2").await,
    };
    let error = w
        .open_secret(&moved)
        .expect_err("a moved secret must not open");
    assert_eq!(
        error,
        StoreError::Seal(SealError::UndecryptableWebhookSecret("wh-2".into()))
    );
    let text = error.to_string();
    assert!(text.contains("wh-2"), "{text}");
    for secret in [&secret_one, &secret_two] {
        assert!(!text.contains(secret.expose()), "{text}");
    }
    // Listings never carry a secret.
    let listed = format!("{:?}", w.list_webhooks(&p).await.unwrap());
    assert!(!listed.contains("whsec_"), "{listed}");
}

async fn plaintext_secrets_from_before_sealing_are_sealed_at_start_up(kind: Kind) {
    let Some((url, guard)) = empty_database(kind).await else {
        return;
    };
    // The schema as it was before webhook secrets were sealed, with a plaintext row.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(match kind {
        Kind::Sqlite => "../migrations/sqlite",
        Kind::Postgres => "../migrations/postgres",
    });
    let mut old = sqlx::migrate::Migrator::new(dir.as_path())
        .await
        .expect("migrations");
    old.migrations = old
        .migrations
        .iter()
        .filter(|m| m.version <= 30)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let secret = WebhookSecret::from_random(&[21; 32]);
    let insert = format!(
        "INSERT INTO webhooks (id, project_id, url, event_types, description, secret, enabled, \
         created_at, updated_at) VALUES ('wh-old', 'p', 'https://hooks.example.com/old', '[]', \
         NULL, '{}', {}, {}, {})",
        secret.expose(),
        match kind {
            Kind::Sqlite => "1",
            Kind::Postgres => "true",
        },
        match kind {
            Kind::Sqlite => "0",
            Kind::Postgres => "now()",
        },
        match kind {
            Kind::Sqlite => "0",
            Kind::Postgres => "now()",
        },
    );
    let before_sealing = async {
        with_pool!(kind, &url, |pool| {
            old.run(&pool).await.expect("old migrations");
            sqlx::query(AssertSqlSafe(insert))
                .execute(&pool)
                .await
                .map(drop)
        })
    };
    before_sealing.await.expect("a plaintext secret");
    // Upgrading migrates and seals; opening again finds nothing left to seal.
    let options = || StoreOptions {
        queue: QueueConfig::default(),
        master_key: key(1),
    };
    let stores = connect(&url, options()).await.expect("upgrade");
    let again = connect(&url, options()).await.expect("second start");
    let b = Backend {
        kind,
        url,
        key: key(1),
        stores,
        _guard: guard,
    };
    assert_eq!(b.count(&rows_holding(b.kind, secret.expose())).await, 0);
    assert_eq!(
        b.count("SELECT count(*) FROM webhooks WHERE sealed_secret IS NOT NULL")
            .await,
        1
    );
    let p = ProjectId::parse("p").unwrap();
    let due = claim_one_of(&b.stores, &p, "wh-old").await;
    assert_eq!(b.stores.webhooks.open_secret(&due).unwrap(), secret);
    assert_eq!(again.webhooks.open_secret(&due).unwrap(), secret);
}

async fn outbox_writes_wake_the_dispatchers(b: Backend) {
    let replica = b.replica(QueueConfig::default(), key(1)).await;
    let p = b.project("p").await;
    b.subscribe("wh-1", &p, &["command.completed"]).await;
    let mut here = b.stores.webhooks.delivery_signal();
    let mut there = replica.webhooks.delivery_signal();
    here.borrow_and_update();
    there.borrow_and_update();
    // An event nobody subscribed to writes no rows and wakes nobody.
    assert_eq!(
        b.stores
            .webhooks
            .emit(&event(&p, "project.created"), None)
            .await
            .unwrap(),
        0
    );
    // A command's terminal status writes its outbox row and wakes the dispatchers (on
    // PostgreSQL every replica's).
    let id = b.enqueue(&p, "hi", None).await;
    let claim = b.stores.queue.claim("w").await.unwrap().expect("claimed");
    assert_eq!(claim.command.id, id);
    b.stores
        .queue
        .finish(&claim.lease, queue::completed())
        .await
        .unwrap();
    // SQLite serves one process: another store on the file is not woken.
    let mut woken = vec![&mut here];
    if matches!(b.kind, Kind::Postgres) {
        woken.push(&mut there);
    }
    for signal in woken {
        tokio::time::timeout(Duration::from_secs(10), signal.changed())
            .await
            .expect("woken within 10 s")
            .expect("signal open");
    }
    assert_eq!(claim_all(&b.stores, "d").await.len(), 1);
}

fn permission(command: &str) -> rdev::domain::interaction::PermissionRequest {
    rdev::domain::interaction::PermissionRequest {
        tool_call_id: Some("toolu_1".into()),
        tool: "Bash".into(),
        input: serde_json::json!({ "command": command }),
        summary: format!("run {command}"),
        options: Vec::new(),
    }
}

fn new_approval(project: &ProjectId, command: &CommandId, what: &str) -> NewApproval {
    NewApproval {
        id: NewApproval::new_id(),
        command_id: command.clone(),
        project_id: project.clone(),
        request: permission(what),
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(5),
    }
}

fn resolution(status: ApprovalStatus, by: &str) -> Resolution {
    Resolution {
        status,
        decided_by: by.into(),
        actor: format!("alice ({by})"),
        message: Some("looks fine".into()),
        remember: false,
    }
}

/// Project `p` with one running command: its id.
async fn running_command(b: &Backend) -> (ProjectId, CommandId) {
    let (p, claim) = claimed_command(b).await;
    (p, claim.command.id)
}

/// Project `p` with one command claimed by `w`.
async fn claimed_command(b: &Backend) -> (ProjectId, rdev::domain::Claim) {
    let p = b.project("p").await;
    let id = b.enqueue(&p, "work", None).await;
    let claim = b.stores.queue.claim("w").await.unwrap().expect("claimed");
    assert_eq!(claim.command.id, id);
    (p, claim)
}

async fn an_approval_is_requested_and_decided_once_with_its_records(b: Backend) {
    let (p, id) = running_command(&b).await;
    b.subscribe("wh-1", &p, &["approval.requested"]).await;
    let a = &b.stores.approvals;
    let requested = a.request(new_approval(&p, &id, "ls")).await.unwrap();
    assert_eq!(requested.status, ApprovalStatus::Pending);
    assert_eq!(requested.input["command"], "ls");
    assert_eq!(a.get(&requested.id).await.unwrap(), requested);
    let pending = a.list(&p, Some(ApprovalStatus::Pending), 10).await.unwrap();
    assert_eq!(pending, vec![requested.clone()]);
    let other = ProjectId::parse("other").unwrap();
    assert!(a.list(&other, None, 10).await.unwrap().is_empty());

    let decided = a
        .resolve(&requested.id, resolution(ApprovalStatus::Allowed, "tok-1"))
        .await
        .unwrap();
    assert_eq!(decided.status, ApprovalStatus::Allowed);
    assert_eq!(decided.decided_by.as_deref(), Some("tok-1"));
    assert!(decided.decided_at.is_some());
    let again = a
        .resolve(&requested.id, resolution(ApprovalStatus::Denied, "tok-2"))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(a.get(&requested.id).await.unwrap(), decided);
    let unknown = a
        .resolve("apr-nope", resolution(ApprovalStatus::Denied, "t"))
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound { .. })),
        "{unknown:?}"
    );
    assert!(
        a.list(&p, Some(ApprovalStatus::Pending), 10)
            .await
            .unwrap()
            .is_empty()
    );

    let events = b.stores.events.read(&id, 0, 100).await.unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.event.kind())
        .filter(|k| k.starts_with("approval"))
        .collect();
    assert_eq!(kinds, ["approval_requested", "approval_resolved"]);
    let audit = b.stores.audit.list(0, 100).await.unwrap();
    let decided_entry = audit
        .iter()
        .find(|e| e.action == "approval.decided")
        .unwrap();
    assert_eq!(decided_entry.actor, "alice (tok-1)");
    assert_eq!(decided_entry.details["status"], "allowed");
    assert!(audit.iter().any(|e| e.action == "approval.requested"));
    assert_eq!(b.stores.audit.verify().await.unwrap().first_broken, None);
    let due = claim_all(&b.stores, "d").await;
    assert_eq!(due.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&due[0].payload).unwrap();
    assert_eq!(body["type"], "approval.requested");
    assert_eq!(body["data"]["approval_id"], requested.id.as_str());

    let missing = a.request(new_approval(&p, &unknown_command(), "ls")).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
}

async fn a_policy_decision_is_stored_already_decided(b: Backend) {
    let (p, id) = running_command(&b).await;
    let a = &b.stores.approvals;
    let by_policy = Resolution {
        status: ApprovalStatus::Denied,
        decided_by: "policy".into(),
        actor: "policy".into(),
        message: Some("denied by rule 1".into()),
        remember: false,
    };
    let stored = a
        .record_decided(new_approval(&p, &id, "rm -rf /"), by_policy)
        .await
        .unwrap();
    assert_eq!(stored.status, ApprovalStatus::Denied);
    assert_eq!(stored.decided_by.as_deref(), Some("policy"));
    assert_eq!(stored.message.as_deref(), Some("denied by rule 1"));
    let again = a
        .resolve(&stored.id, resolution(ApprovalStatus::Allowed, "tok-1"))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))));
    let kinds: Vec<&'static str> = b
        .stores
        .events
        .read(&id, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.kind())
        .collect();
    assert!(kinds.contains(&"approval_resolved") && !kinds.contains(&"approval_requested"));
}

async fn a_decision_is_announced_to_every_replica(b: Backend) {
    let (p, id) = running_command(&b).await;
    let replica = b.other_replica(QueueConfig::default()).await;
    let mut decisions = replica.approvals.decision_signal();
    let requested = b
        .stores
        .approvals
        .request(new_approval(&p, &id, "ls"))
        .await
        .unwrap();
    b.stores
        .approvals
        .resolve(&requested.id, resolution(ApprovalStatus::Denied, "tok-1"))
        .await
        .unwrap();
    let announced = tokio::time::timeout(Duration::from_secs(20), decisions.recv())
        .await
        .expect("announced")
        .expect("signal open");
    assert_eq!(announced, requested.id);
    let seen = replica.approvals.get(&announced).await.unwrap();
    assert_eq!(seen.status, ApprovalStatus::Denied);
}

async fn policies_default_are_replaced_and_extended_once(b: Backend) {
    let p = b.project("p").await;
    let a = &b.stores.approvals;
    assert_eq!(a.policy(&p).await.unwrap(), None);
    let rule = PolicyRule {
        tool: "Bash".into(),
        pattern: "git status*".into(),
        action: RuleAction::Allow,
    };
    let extended = a.add_rule(&p, rule.clone()).await.unwrap();
    assert_eq!(extended.mode, PolicyMode::Ask);
    assert_eq!(extended.rules, vec![rule.clone()]);
    assert_eq!(a.add_rule(&p, rule.clone()).await.unwrap().rules.len(), 1);
    let policy = Policy {
        mode: PolicyMode::Deny,
        rules: Vec::new(),
        timeout_secs: 7,
    };
    a.put_policy(&p, &policy).await.unwrap();
    assert_eq!(a.policy(&p).await.unwrap(), Some(policy));
    let both = futures::future::join_all((0..4).map(|n| {
        a.add_rule(
            &p,
            PolicyRule {
                pattern: format!("cmd {n}"),
                ..rule.clone()
            },
        )
    }))
    .await;
    assert!(both.iter().all(Result::is_ok));
    let stored = a.policy(&p).await.unwrap().unwrap();
    assert_eq!((stored.mode, stored.rules.len()), (PolicyMode::Deny, 4));
}

async fn approvals_of_a_lost_or_ended_command_expire(b: Backend) {
    let (p, claim) = claimed_command(&b).await;
    let id = claim.command.id.clone();
    let a = &b.stores.approvals;
    let q = &b.stores.queue;
    q.mark_started(&claim.lease, false, &queue::provenance())
        .await
        .unwrap();
    let lost = a.request(new_approval(&p, &id, "ls")).await.unwrap();
    assert_eq!(
        a.expire_orphans().await.unwrap(),
        0,
        "its command still runs"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rescued = q.rescue_expired().await.unwrap();
    assert_eq!(rescued.len(), 1);
    let expired = a.get(&lost.id).await.unwrap();
    assert_eq!(expired.status, ApprovalStatus::Expired);
    assert_eq!(expired.decided_by.as_deref(), Some("host"));

    let next = b.enqueue(&p, "more", None).await;
    q.claim("w2").await.unwrap().expect("claimed");
    let orphan = a.request(new_approval(&p, &next, "pwd")).await.unwrap();
    b.exec(&format!(
        "UPDATE commands SET status = 'failed' WHERE id = '{next}'"
    ))
    .await
    .unwrap();
    assert_eq!(a.expire_orphans().await.unwrap(), 1);
    assert_eq!(
        a.get(&orphan.id).await.unwrap().status,
        ApprovalStatus::Expired
    );
}

/// An outcome that consumed `cost` dollars and `input` input tokens.
fn spent(cost: f64, input: u64) -> Outcome {
    Outcome {
        usage: CommandUsage {
            tokens: Usage {
                input_tokens: input,
                output_tokens: 1,
                ..Usage::default()
            },
            cost_usd: cost,
        },
        ..queue::completed()
    }
}

async fn usage_is_stored_with_the_finish_once_and_summed_per_day(b: Backend) {
    let p = b.project("p").await;
    let other = b.project("other").await;
    let q = &b.stores.queue;
    for (project, cost) in [(&p, 0.5), (&p, 0.25), (&other, 4.0)] {
        b.enqueue(project, "spend", None).await;
        let claim = q.claim("w").await.unwrap().unwrap();
        q.mark_started(&claim.lease, false, &queue::provenance())
            .await
            .unwrap();
        q.finish(&claim.lease, spent(cost, 100)).await.unwrap();
        // A finish retried after it committed writes nothing more.
        let again = q.finish(&claim.lease, spent(cost, 100)).await;
        assert!(
            matches!(again, Err(StoreError::LeaseLost { .. })),
            "{again:?}"
        );
    }
    let today = chrono::Utc::now().date_naive();
    let range = DayRange::parse(None, None, today).unwrap();
    let usage = b.stores.usage.usage(&p, range).await.unwrap();
    assert_eq!(usage.len(), 1, "{usage:?}");
    let day = &usage[0];
    assert_eq!((day.day, day.provider.as_str()), (today, "shell"));
    assert_eq!(
        (day.commands, day.input_tokens, day.output_tokens),
        (2, 200, 2)
    );
    assert!((day.cost_usd - 0.75).abs() < 1e-9, "{day:?}");
    let cost = b.stores.usage.cost(&p, range).await.unwrap();
    assert!((cost - 0.75).abs() < 1e-9, "{cost}");
    let earlier = DayRange::parse(Some("2020-01-01"), Some("2020-01-31"), today).unwrap();
    assert!(b.stores.usage.usage(&p, earlier).await.unwrap().is_empty());
    assert_eq!(b.stores.usage.cost(&p, earlier).await.unwrap(), 0.0);
    assert_eq!(b.count("SELECT count(*) FROM command_usage").await, 3);
}

async fn a_budget_is_set_cleared_and_announced_once_a_month(b: Backend) {
    let usage = &b.stores.usage;
    let missing = ProjectId::parse("missing").unwrap();
    let refused = usage.set_budget(&missing, 1.0).await;
    assert!(
        matches!(refused, Err(StoreError::NotFound { .. })),
        "{refused:?}"
    );
    let p = b.project("p").await;
    b.subscribe("wh-budget", &p, &["budget.exceeded"]).await;
    assert_eq!(usage.budget(&p).await.unwrap(), None);
    let set = usage.set_budget(&p, 2.5).await.unwrap();
    assert_eq!(usage.budget(&p).await.unwrap(), Some(set.clone()));
    assert_eq!(set.monthly_limit_usd, 2.5);
    // Each announcement is a fresh event, as `services::budgets::announce` makes it.
    let note = async |month: &str| {
        let exceeded = event(&p, "budget.exceeded");
        let entry = audit("project.budget_exceeded", 0);
        usage.note_exceeded(&p, month, &exceeded, entry).await
    };
    assert!(note("2026-01").await.unwrap());
    assert!(!note("2026-01").await.unwrap(), "announced once a month");
    assert!(note("2026-02").await.unwrap());
    let outbox = "SELECT count(*) FROM webhook_deliveries WHERE event_type = 'budget.exceeded'";
    assert_eq!(b.count(outbox).await, 2);
    let trail = "SELECT count(*) FROM audit_log WHERE action = 'project.budget_exceeded'";
    assert_eq!(b.count(trail).await, 2);
    // A new limit may be exceeded again in the same month.
    usage.set_budget(&p, 5.0).await.unwrap();
    assert!(note("2026-02").await.unwrap());
    assert!(usage.clear_budget(&p).await.unwrap());
    assert!(!usage.clear_budget(&p).await.unwrap());
    assert_eq!(usage.budget(&p).await.unwrap(), None);
    // Without a budget there is nothing to exceed.
    assert!(!note("2026-03").await.unwrap());
}
