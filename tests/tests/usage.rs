//! #16 part 4: usage accounting and budgets through a real `rdev serve` (SQLite and
//! PostgreSQL) with the real `shell` provider and the `hostile` test guest's `spend` mode,
//! which reports a cost in usage events and in its result: the per-day totals equal what the
//! providers reported, a project over its budget is refused with 402 and nothing queued, a
//! running command that crosses it is cancelled with the reason, and `budget.exceeded` is
//! delivered once.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use rdev::server::ServeConfig;
use rdev_tests::harness::Database as Db;
use rdev_tests::harness::plugins::with_test_guest;
use rdev_tests::harness::server::{SseEvent, TestServer};
use rdev_tests::harness::webhook_receiver::WebhookReceiver;
use rdev_tests::on_both_databases;

/// Generous: a command runs a real plugin and the machine may be loaded.
const WAIT: Duration = Duration::from_secs(90);

/// A server with `hostile` and `shell`, loopback webhooks allowed.
struct Host {
    server: TestServer,
}

impl std::ops::Deref for Host {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.server
    }
}

async fn host(db: Db) -> Option<Host> {
    let adjust = move |config: &mut ServeConfig| {
        config.webhooks.allow_private = true;
        config.webhooks.poll_interval = Duration::from_millis(50);
    };
    let server = TestServer::with_plugins(db, with_test_guest("hostile"), adjust).await?;
    Some(Host { server })
}

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or("<none>")
}

impl Host {
    /// Submits and follows the command to its end, at most [`WAIT`].
    async fn run(&self, project: &str, provider: &str, prompt: &str) -> (Vec<SseEvent>, Value) {
        self.run_within(project, provider, prompt, WAIT).await
    }

    async fn usage(&self, project: &str, query: &str) -> (StatusCode, Value) {
        let path = format!("/projects/{project}/usage{query}");
        self.admin_call(Method::GET, &path, None).await
    }

    async fn set_budget(&self, project: &str, limit: Value) -> (StatusCode, Value) {
        let path = format!("/projects/{project}/budget");
        let body = json!({ "monthly_limit_usd": limit });
        self.admin_call(Method::PUT, &path, Some(body)).await
    }

    /// A member token for `projects`.
    async fn member(&self, projects: &[&str]) -> String {
        let body = json!({"name": "member", "role": "member", "projects": projects});
        let (status, body) = self.admin_call(Method::POST, "/tokens", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().expect("token").to_owned()
    }

    async fn audit_actions(&self, project: &str) -> Vec<String> {
        let path = format!("/audit?project_id={project}&limit=1000");
        let (status, body) = self.admin_call(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let entries = body["entries"].as_array().cloned().unwrap_or_default();
        entries
            .iter()
            .filter_map(|e| e["action"].as_str().map(str::to_owned))
            .collect()
    }
}

/// The cost the `usage` events of a command's stream reported, added up.
fn streamed_cost(events: &[SseEvent]) -> f64 {
    events
        .iter()
        .filter(|e| e.event.as_deref() == Some("usage"))
        .filter_map(|e| e.json()["cost_usd"].as_f64())
        .sum()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

on_both_databases!(
    usage_sums_equal_the_costs_the_providers_reported,
    a_project_over_its_budget_is_refused_and_nothing_is_queued,
    a_running_command_crossing_the_budget_is_cancelled_and_announced_once,
);

async fn usage_sums_equal_the_costs_the_providers_reported(db: Db) {
    let Some(host) = host(db).await else { return };
    let mut reported = 0.0;
    for prompt in ["spend 0.25 2 0", "spend 0.125 1 0"] {
        let (events, command) = host.run("acct", "hostile", prompt).await;
        assert_eq!(command["status"], "completed", "{command}");
        let cost = command["result"]["cost_usd"].as_f64().expect("a cost");
        assert!(close(cost, streamed_cost(&events)), "{command}");
        reported += cost;
    }
    for script in ["echo one", "echo two"] {
        let (_, command) = host.run("acct", "shell", script).await;
        assert_eq!(command["status"], "completed", "{command}");
    }
    let (status, usage) = host.usage("acct", "").await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    let days = usage["days"].as_array().expect("days");
    let by = |provider: &str| {
        days.iter()
            .find(|d| d["provider"] == provider)
            .cloned()
            .unwrap_or_else(|| panic!("no {provider} in {usage}"))
    };
    let hostile = by("hostile");
    assert_eq!(hostile["commands"], 2, "{usage}");
    assert_eq!(hostile["input_tokens"], 300, "{usage}");
    assert_eq!(hostile["output_tokens"], 30, "{usage}");
    assert!(
        close(hostile["cost_usd"].as_f64().unwrap(), reported),
        "{usage}"
    );
    let shell = by("shell");
    assert_eq!(shell["commands"], 2, "{usage}");
    assert_eq!(shell["cost_usd"].as_f64(), Some(0.0), "{usage}");
    assert_eq!(usage["total"]["commands"], 4, "{usage}");
    assert!(
        close(usage["total"]["cost_usd"].as_f64().unwrap(), 0.625),
        "{usage}"
    );
    assert_eq!(
        usage["from"],
        usage["to"].as_str().unwrap()[..8].to_owned() + "01"
    );
    // A range before any command: nothing.
    let (status, empty) = host.usage("acct", "?from=2020-01-01&to=2020-01-31").await;
    assert_eq!(status, StatusCode::OK, "{empty}");
    assert_eq!(empty["days"], json!([]), "{empty}");
    assert_eq!(empty["total"]["commands"], 0, "{empty}");
    for query in [
        "?from=2026-13-01",
        "?to=yesterday",
        "?from=2026-02-01&to=2026-01-01",
        "?from=2020-01-01&to=2026-01-01",
    ] {
        let (status, body) = host.usage("acct", query).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(code(&body), "invalid_usage_range", "{body}");
    }
    let (status, body) = host.usage("nowhere", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // A member token sees its own project's usage only.
    let member = host.member(&["other"]).await;
    let (status, body) = host
        .call(Method::GET, "/projects/acct/usage", Some(&member), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    host.submit("other", "shell", "echo mine").await;
    let (status, body) = host
        .call(Method::GET, "/projects/other/usage", Some(&member), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The document lists the route.
    let (_, doc) = host.admin_call(Method::GET, "/openapi.json", None).await;
    assert!(doc["paths"]["/projects/{id}/usage"]["get"].is_object());
    assert!(doc["paths"]["/projects/{id}/budget"]["put"].is_object());
}

async fn a_project_over_its_budget_is_refused_and_nothing_is_queued(db: Db) {
    let Some(host) = host(db).await else { return };
    let (status, body) = host.set_budget("capped", json!(5)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    host.run("capped", "shell", "echo first").await;
    for bad in [json!(-1), json!("ten"), json!(true)] {
        let (status, body) = host.set_budget("capped", bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(code(&body), "invalid_budget", "{body}");
    }
    let member = host.member(&["capped"]).await;
    let (status, body) = host
        .call(
            Method::PUT,
            "/projects/capped/budget",
            Some(&member),
            Some(json!({"monthly_limit_usd": 100})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, budget) = host.set_budget("capped", json!(0)).await;
    assert_eq!(status, StatusCode::OK, "{budget}");
    assert_eq!(budget["monthly_limit_usd"].as_f64(), Some(0.0), "{budget}");
    assert_eq!(budget["exceeded"], true, "{budget}");
    let response = host
        .request(Method::POST, "/projects/capped/shell", Some(&member))
        .json(&json!({"prompt": "echo refused"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem");
    assert_eq!(code(&body), "budget_exceeded", "{body}");
    let (_, list) = host
        .admin_call(Method::GET, "/projects/capped/commands", None)
        .await;
    assert_eq!(list["commands"].as_array().map(Vec::len), Some(1), "{list}");
    // Removing the budget lets commands in again.
    let (status, budget) = host.set_budget("capped", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{budget}");
    assert_eq!(budget["monthly_limit_usd"], Value::Null, "{budget}");
    let (_, command) = host.run("capped", "shell", "echo again").await;
    assert_eq!(command["status"], "completed", "{command}");
    let (status, budget) = host
        .call(Method::GET, "/projects/capped/budget", Some(&member), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{budget}");
    assert_eq!(budget["exceeded"], false, "{budget}");
    let actions = host.audit_actions("capped").await;
    for action in ["project.budget_set", "project.budget_removed"] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
}

async fn a_running_command_crossing_the_budget_is_cancelled_and_announced_once(db: Db) {
    let Some(host) = host(db).await else { return };
    host.run("spender", "shell", "echo hello").await;
    let receiver = WebhookReceiver::start().expect("receiver");
    let (status, hook) = host
        .admin_call(
            Method::POST,
            "/projects/spender/webhooks",
            Some(json!({"url": receiver.url("/hook"), "event_types": ["budget.exceeded"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let (status, _) = host.set_budget("spender", json!(1.0)).await;
    assert_eq!(status, StatusCode::OK);
    // 0.4 every 100 ms for 20 s: the third report reaches the budget.
    let (events, command) = host.run("spender", "hostile", "spend 0.4 200 100").await;
    assert_eq!(command["status"], "cancelled", "{command}");
    let error = command["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("budget_exceeded"), "{command}");
    let streamed = streamed_cost(&events);
    assert!((1.0..4.0).contains(&streamed), "{streamed}");
    let (_, usage) = host.usage("spender", "").await;
    let spent = usage["total"]["cost_usd"].as_f64().expect("cost");
    assert!(close(spent, streamed), "{spent} vs {streamed}: {usage}");
    // Over budget now: refused, and the month's announcement is not repeated.
    let (status, body) = host
        .admin_call(
            Method::POST,
            "/projects/spender/shell",
            Some(json!({"prompt": "echo no"})),
        )
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    let received = receiver.wait_for(1, WAIT).await;
    let event = received[0].json();
    assert_eq!(event["type"], "budget.exceeded", "{event}");
    assert_eq!(event["data"]["project_id"], "spender", "{event}");
    assert_eq!(event["data"]["monthly_limit_usd"].as_f64(), Some(1.0));
    assert_eq!(event["data"]["command_id"], command["id"], "{event}");
    let path = format!(
        "/projects/spender/webhooks/{}/deliveries",
        hook["id"].as_str().unwrap()
    );
    let (_, deliveries) = host.admin_call(Method::GET, &path, None).await;
    let count = deliveries["deliveries"].as_array().map(Vec::len);
    assert_eq!(count, Some(1), "{deliveries}");
    let actions = host.audit_actions("spender").await;
    let exceeded = actions
        .iter()
        .filter(|a| *a == "project.budget_exceeded")
        .count();
    assert_eq!(exceeded, 1, "{actions:?}");
}
