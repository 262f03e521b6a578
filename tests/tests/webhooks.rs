//! Webhooks end to end: a real `rdev serve` (SQLite and PostgreSQL) with the real plugins
//! runs commands, and a receiver started here checks what arrives — the Standard Webhooks
//! signature verified independently of rdev's signer, retries after 5xx, `Retry-After`,
//! 410 disabling the endpoint, filters — plus the API's SSRF guard and token scoping.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use rdev::server::ServeConfig;
use rdev_tests::harness::server::TestServer;
use rdev_tests::harness::webhook_receiver::{Reply, WebhookReceiver, verify};

/// Generous: a command runs a real plugin and the machine may be loaded.
const WAIT: Duration = Duration::from_secs(60);

/// Loopback receivers allowed, fast retries, quick polling.
fn fast(config: &mut ServeConfig) {
    config.webhooks.allow_private = true;
    config.webhooks.poll_interval = Duration::from_millis(50);
    config.webhooks.retry.base = Duration::from_millis(50);
    config.webhooks.retry.max_delay = Duration::from_millis(200);
    config.webhooks.retry.max_attempts = 3;
    config.webhooks.timeout = Duration::from_secs(5);
}

use rdev_tests::harness::Database as Db;

async fn server(db: Db, adjust: fn(&mut ServeConfig)) -> Option<TestServer> {
    match db {
        Db::Sqlite => Some(TestServer::sqlite_with(adjust).await),
        Db::Postgres => TestServer::postgres_with(adjust).await,
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

/// Runs `script` through the shell provider and waits for its final status.
async fn run_shell(server: &TestServer, project: &str, script: &str) -> Value {
    let body = server.submit(project, "shell", script).await;
    let id = body["command_id"].as_str().expect("command id");
    server.finished_within(id, WAIT).await
}

async fn deliveries(server: &TestServer, project: &str, webhook: &str) -> Vec<Value> {
    let path = format!("/projects/{project}/webhooks/{webhook}/deliveries");
    server.list(&path, "deliveries").await
}

/// Waits until the webhook's newest delivery is no longer pending.
async fn settled(server: &TestServer, project: &str, webhook: &str) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let list = deliveries(server, project, webhook).await;
        if !list.is_empty() && list.iter().all(|d| d["status"] != "pending") {
            return list;
        }
        assert!(std::time::Instant::now() < deadline, "{list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

rdev_tests::on_both_databases!(
    a_finished_command_is_delivered_signed,
    failures_are_retried_honouring_retry_after_until_attempts_run_out,
    gone_disables_the_webhook,
    filters_choose_the_events,
    a_finished_command_wakes_the_dispatcher_long_before_its_poll,
    a_hanging_endpoint_does_not_hold_up_another_webhook,
    a_retry_is_sent_when_due_not_at_the_next_poll,
);

/// As [`fast`], but the dispatcher polls only every 30 s: anything sooner was a wake-up.
fn slow_poll(config: &mut ServeConfig) {
    fast(config);
    config.webhooks.poll_interval = Duration::from_secs(30);
}

/// As [`fast`], but an attempt may take 30 s, so a hanging endpoint stays hung.
fn patient(config: &mut ServeConfig) {
    fast(config);
    config.webhooks.timeout = Duration::from_secs(30);
}

async fn a_finished_command_wakes_the_dispatcher_long_before_its_poll(db: Db) {
    let Some(server) = server(db, slow_poll).await else {
        return;
    };
    let receiver = WebhookReceiver::start().expect("receiver");
    let (_, secret) = server.subscribe("wake", &receiver.url("/hook"), &[]).await;
    // The dispatcher's first (empty) poll ran at start-up; the next is 30 s away.
    let command = run_shell(&server, "wake", "echo woken").await;
    assert_eq!(command["status"], "completed", "{command}");
    let finished = std::time::Instant::now();
    let received = receiver.wait_for(1, Duration::from_secs(5)).await;
    let latency = finished.elapsed();
    assert_eq!(received[0].json()["type"], "command.completed");
    verify(&secret, &received[0]).expect("signed with the stored secret");
    eprintln!("{db:?}: delivered {latency:?} after the command finished (poll 30 s)");
}

async fn a_retry_is_sent_when_due_not_at_the_next_poll(db: Db) {
    let Some(server) = server(db, slow_poll).await else {
        return;
    };
    let receiver = WebhookReceiver::start().expect("receiver");
    receiver.script([Reply::status(500), Reply::status(204)]);
    server.subscribe("due", &receiver.url("/hook"), &[]).await;
    run_shell(&server, "due", "true").await;
    // The retry falls due 50-200 ms after the 500; the next poll is 30 s away.
    let received = receiver.wait_for(2, Duration::from_secs(10)).await;
    let waited = received[1].at - received[0].at;
    assert!(waited < Duration::from_secs(10), "retried after {waited:?}");
    eprintln!("{db:?}: retried {waited:?} after the 500 (poll 30 s)");
}

async fn a_hanging_endpoint_does_not_hold_up_another_webhook(db: Db) {
    let Some(server) = server(db, patient).await else {
        return;
    };
    let hanging = WebhookReceiver::start().expect("receiver");
    let hang = Duration::from_secs(25);
    hanging.always(Reply::after(hang, 204));
    let quick = WebhookReceiver::start().expect("receiver");
    server.subscribe("pair", &hanging.url("/slow"), &[]).await;
    server.subscribe("pair", &quick.url("/quick"), &[]).await;
    run_shell(&server, "pair", "echo one").await;
    quick.wait_for(1, WAIT).await;
    let hung_since = hanging.wait_for(1, WAIT).await[0].at;
    // The first delivery to the hanging endpoint is still in flight; a second event must
    // reach the quick one without waiting for it.
    run_shell(&server, "pair", "echo two").await;
    let finished = std::time::Instant::now();
    let received = quick.wait_for(2, Duration::from_secs(5)).await;
    assert!(
        received[1].at < hung_since + hang,
        "the quick endpoint waited for the hanging one"
    );
    eprintln!(
        "{db:?}: second delivery {:?} after the command finished, hanging endpoint still held",
        finished.elapsed()
    );
}

async fn a_finished_command_is_delivered_signed(db: Db) {
    let Some(server) = server(db, fast).await else {
        return;
    };
    let receiver = WebhookReceiver::start().expect("receiver");
    let (webhook, secret) = server
        .subscribe("signed", &receiver.url("/hook"), &[])
        .await;
    let command = run_shell(&server, "signed", "echo hello").await;
    assert_eq!(command["status"], "completed", "{command}");

    let received = receiver.wait_for(1, WAIT).await;
    let request = &received[0];
    verify(&secret, request).expect("a valid Standard Webhooks signature");
    assert!(verify("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", request).is_err());
    let now = chrono::Utc::now().timestamp();
    let timestamp: i64 = request
        .header("webhook-timestamp")
        .parse()
        .expect("seconds");
    assert!((now - timestamp).abs() < 120, "{timestamp} vs {now}");
    assert!(request.header("webhook-id").starts_with("msg_"));
    assert_eq!(request.header("content-type"), "application/json");
    let body = request.json();
    assert_eq!(body["type"], "command.completed");
    assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    let data = &body["data"];
    assert_eq!(data["command_id"], command["id"]);
    assert_eq!(data["project_id"], "signed");
    assert_eq!(data["provider"], "shell");
    assert_eq!(data["status"], "completed");
    assert_eq!(data["exit_code"], 0);
    assert!(data["duration_ms"].is_i64());
    assert!(data["started_at"].is_string() && data["finished_at"].is_string());

    let list = settled(&server, "signed", &webhook).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "delivered");
    assert_eq!(list[0]["event_id"], request.header("webhook-id"));
    assert_eq!(list[0]["attempts"][0]["status_code"], 204);
    assert!(list[0]["attempts"][0]["duration_ms"].is_u64());

    let metrics = server.metrics().await;
    assert!(
        metrics.contains("rdev_webhook_deliveries_total{outcome=\"delivered\"} 1"),
        "{metrics}"
    );
    // The secret is nowhere but in the create answer and the signature.
    let (_, audit) = server.admin_call(Method::GET, "/audit", None).await;
    assert!(audit.to_string().contains("webhook.created"), "{audit}");
    assert!(!audit.to_string().contains(&secret));
    let (_, listed) = server
        .admin_call(Method::GET, "/projects/signed/webhooks", None)
        .await;
    assert!(!listed.to_string().contains("whsec_"), "{listed}");
    server.stop().await;
}

async fn failures_are_retried_honouring_retry_after_until_attempts_run_out(db: Db) {
    let Some(server) = server(db, fast).await else {
        return;
    };
    let flaky = WebhookReceiver::start().expect("receiver");
    flaky.script([
        Reply::status(500),
        Reply::retry_after(503, "2"),
        Reply::status(200),
    ]);
    let broken = WebhookReceiver::start().expect("receiver");
    broken.always(Reply::status(500));
    let (flaky_id, secret) = server.subscribe("retry", &flaky.url("/flaky"), &[]).await;
    let (broken_id, _) = server.subscribe("retry", &broken.url("/broken"), &[]).await;
    run_shell(&server, "retry", "true").await;

    let received = flaky.wait_for(3, WAIT).await;
    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one id across retries: {ids:?}"
    );
    for request in &received {
        verify(&secret, request).expect("every attempt is signed");
    }
    let waited = received[2].at - received[1].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "Retry-After: 2 was not honoured (waited {waited:?})"
    );
    let list = settled(&server, "retry", &flaky_id).await;
    assert_eq!(list[0]["status"], "delivered");
    let codes: Vec<&Value> = list[0]["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(codes, [&json!(500), &json!(503), &json!(200)]);
    assert_eq!(list[0]["attempts"][0]["error"], "HTTP 500");

    // Always 500: three attempts (the configured maximum), then failed.
    let list = settled(&server, "retry", &broken_id).await;
    assert_eq!(list[0]["status"], "failed", "{list:?}");
    assert_eq!(list[0]["attempts"].as_array().map(Vec::len), Some(3));
    assert_eq!(broken.received().len(), 3);
    server.stop().await;
}

async fn gone_disables_the_webhook(db: Db) {
    let Some(server) = server(db, fast).await else {
        return;
    };
    let gone = WebhookReceiver::start().expect("receiver");
    gone.always(Reply::status(410));
    let witness = WebhookReceiver::start().expect("receiver");
    let (gone_id, _) = server.subscribe("gone", &gone.url("/gone"), &[]).await;
    server
        .subscribe("gone", &witness.url("/witness"), &[])
        .await;
    run_shell(&server, "gone", "true").await;
    gone.wait_for(1, WAIT).await;
    let deadline = std::time::Instant::now() + WAIT;
    let webhook = loop {
        let (status, webhook) = server
            .admin_call(
                Method::GET,
                &format!("/projects/gone/webhooks/{gone_id}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{webhook}");
        if webhook["enabled"] == false {
            break webhook;
        }
        assert!(std::time::Instant::now() < deadline, "{webhook}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        webhook["disabled_reason"]
            .as_str()
            .is_some_and(|r| r.contains("410")),
        "{webhook}"
    );
    // A second command: the witness hears of it, the disabled endpoint does not.
    run_shell(&server, "gone", "true").await;
    witness.wait_for(2, WAIT).await;
    assert_eq!(gone.received().len(), 1);
    let list = deliveries(&server, "gone", &gone_id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "failed");
    assert_eq!(list[0]["attempts"][0]["status_code"], 410);
    server.stop().await;
}

async fn filters_choose_the_events(db: Db) {
    let Some(server) = server(db, fast).await else {
        return;
    };
    let failed = WebhookReceiver::start().expect("receiver");
    let completed = WebhookReceiver::start().expect("receiver");
    let (failed_id, _) = server
        .subscribe("filters", &failed.url("/f"), &["command.failed"])
        .await;
    let (completed_id, _) = server
        .subscribe(
            "filters",
            &completed.url("/c"),
            &["command.completed", "project.created"],
        )
        .await;
    let bad = run_shell(&server, "filters", "exit 3").await;
    assert_eq!(bad["status"], "failed", "{bad}");
    let good = run_shell(&server, "filters", "true").await;
    assert_eq!(good["status"], "completed", "{good}");

    // The outbox rows are written with the status, so the listings are final already.
    let f = deliveries(&server, "filters", &failed_id).await;
    let c = deliveries(&server, "filters", &completed_id).await;
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(f[0]["event_type"], "command.failed");
    assert_eq!(f[0]["payload"]["data"]["command_id"], bad["id"]);
    assert_eq!(f[0]["payload"]["data"]["exit_code"], 3);
    assert_eq!(c[0]["event_type"], "command.completed");
    let f = failed.wait_for(1, WAIT).await;
    let c = completed.wait_for(1, WAIT).await;
    assert_eq!(f[0].json()["type"], "command.failed");
    assert_eq!(c[0].json()["type"], "command.completed");
    server.stop().await;
}

#[tokio::test]
async fn the_ssrf_guard_refuses_internal_targets_unless_allowed() {
    // Default configuration: private targets refused.
    let server = TestServer::sqlite().await;
    for url in [
        "http://10.0.0.1/hook",
        "http://127.0.0.1:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:10.1.1.1]/hook",
        "http://localhost/hook",
        "http://0.0.0.0/hook",
    ] {
        let (status, body) = server
            .admin_call(
                Method::POST,
                "/projects/guarded/webhooks",
                Some(json!({"url": url})),
            )
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, "webhook_target_forbidden"),
            "{url}: {body}"
        );
        assert_eq!(body["status"], 422);
        assert!(body["type"].is_string());
    }
    for (body, expected) in [
        (json!({"url": "ftp://example.com/"}), "invalid_webhook_url"),
        (json!({"url": "not a url"}), "invalid_webhook_url"),
        (
            json!({"url": "https://example.com/", "event_types": ["command.exploded"]}),
            "invalid_event_type",
        ),
    ] {
        let (status, answer) = server
            .admin_call(Method::POST, "/projects/guarded/webhooks", Some(body))
            .await;
        assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, expected));
    }
    let (_, listed) = server
        .admin_call(Method::GET, "/projects/guarded/webhooks", None)
        .await;
    assert_eq!(listed["webhooks"], json!([]));
    server.stop().await;

    // Allowed by the operator: a loopback receiver is accepted.
    let server = TestServer::sqlite_with(fast).await;
    let receiver = WebhookReceiver::start().expect("receiver");
    server.subscribe("guarded", &receiver.url("/ok"), &[]).await;
    server.stop().await;
}

#[tokio::test]
async fn project_tokens_see_only_their_projects_webhooks() {
    let server = TestServer::sqlite_with(fast).await;
    let receiver = WebhookReceiver::start().expect("receiver");
    let (theirs, _) = server.subscribe("theirs", &receiver.url("/t"), &[]).await;
    let member = server.member_token(&["mine"]).await;

    let created = server
        .as_token(&member)
        .post(
            "/projects/mine/webhooks",
            json!({"url": receiver.url("/m"), "event_types": ["*"], "description": "mine"}),
            StatusCode::CREATED,
        )
        .await;
    let mine = created["id"].as_str().expect("id").to_owned();
    let listed = server
        .as_token(&member)
        .get("/projects/mine/webhooks", StatusCode::OK)
        .await;
    assert_eq!(listed["webhooks"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["webhooks"][0]["description"], "mine");
    assert!(listed["webhooks"][0].get("secret").is_none());

    for (method, path) in [
        (Method::GET, "/projects/theirs/webhooks".to_owned()),
        (Method::POST, "/projects/theirs/webhooks".to_owned()),
        (Method::GET, format!("/projects/theirs/webhooks/{theirs}")),
        (
            Method::DELETE,
            format!("/projects/theirs/webhooks/{theirs}"),
        ),
        (
            Method::GET,
            format!("/projects/theirs/webhooks/{theirs}/deliveries"),
        ),
    ] {
        let (status, body) = server
            .call(
                method.clone(),
                &path,
                Some(&member),
                Some(json!({"url": receiver.url("/x")})),
            )
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{method} {path}"
        );
    }
    // Another project's webhook through one's own project is simply not there.
    for path in [
        format!("/projects/mine/webhooks/{theirs}"),
        format!("/projects/mine/webhooks/{theirs}/deliveries"),
    ] {
        let (status, body) = server.call(Method::GET, &path, Some(&member), None).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "webhook_not_found"),
            "{path}"
        );
    }
    server
        .as_token(&member)
        .delete(
            &format!("/projects/mine/webhooks/{mine}"),
            StatusCode::NO_CONTENT,
        )
        .await;
    let (status, body) = server
        .call(
            Method::GET,
            &format!("/projects/mine/webhooks/{mine}"),
            Some(&member),
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "webhook_not_found")
    );
    let (_, audit) = server.admin_call(Method::GET, "/audit", None).await;
    assert!(audit.to_string().contains("webhook.deleted"), "{audit}");
    server.stop().await;
}

#[tokio::test]
async fn project_created_is_delivered_when_a_template_creates_the_project() {
    let server = TestServer::sqlite_with(fast).await;
    let receiver = WebhookReceiver::start().expect("receiver");
    // Subscribed before the project exists.
    let (_, secret) = server
        .subscribe("from-template", &receiver.url("/p"), &["project.created"])
        .await;
    server
        .as_admin()
        .post(
            "/projects",
            json!({"id": "from-template", "template": "blank"}),
            StatusCode::CREATED,
        )
        .await;
    let received = receiver.wait_for(1, WAIT).await;
    verify(&secret, &received[0]).expect("signed");
    let event = received[0].json();
    assert_eq!(event["type"], "project.created");
    assert_eq!(event["data"]["project_id"], "from-template");
    assert_eq!(event["data"]["template"], "blank");
    server.stop().await;
}
