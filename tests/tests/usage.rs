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
async fn host(db: Db) -> Option<TestServer> {
    let adjust = move |config: &mut ServeConfig| {
        config.webhooks.allow_private = true;
        config.webhooks.poll_interval = Duration::from_millis(50);
    };
    TestServer::with_plugins(db, with_test_guest("hostile"), adjust).await
}

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or("<none>")
}

async fn usage_report(host: &TestServer, project: &str, query: &str) -> (StatusCode, Value) {
    let path = format!("/projects/{project}/usage{query}");
    host.admin_call(Method::GET, &path, None).await
}

async fn set_budget(host: &TestServer, project: &str, limit: Value) -> (StatusCode, Value) {
    let path = format!("/projects/{project}/budget");
    let body = json!({ "monthly_limit_usd": limit });
    host.admin_call(Method::PUT, &path, Some(body)).await
}

async fn audit_actions(host: &TestServer, project: &str) -> Vec<String> {
    let path = format!("/audit?project_id={project}&limit=1000");
    let entries = host.list(&path, "entries").await;
    entries
        .iter()
        .filter_map(|e| e["action"].as_str().map(str::to_owned))
        .collect()
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
        let (events, command) = host.run_within("acct", "hostile", prompt, WAIT).await;
        assert_eq!(command["status"], "completed", "{command}");
        let cost = command["result"]["cost_usd"].as_f64().expect("a cost");
        assert!(close(cost, streamed_cost(&events)), "{command}");
        reported += cost;
    }
    for script in ["echo one", "echo two"] {
        let (_, command) = host.run_within("acct", "shell", script, WAIT).await;
        assert_eq!(command["status"], "completed", "{command}");
    }
    let (status, usage) = usage_report(&host, "acct", "").await;
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
    let (status, empty) = usage_report(&host, "acct", "?from=2020-01-01&to=2020-01-31").await;
    assert_eq!(status, StatusCode::OK, "{empty}");
    assert_eq!(empty["days"], json!([]), "{empty}");
    assert_eq!(empty["total"]["commands"], 0, "{empty}");
    for query in [
        "?from=2026-13-01",
        "?to=yesterday",
        "?from=2026-02-01&to=2026-01-01",
        "?from=2020-01-01&to=2026-01-01",
    ] {
        let (status, body) = usage_report(&host, "acct", query).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(code(&body), "invalid_usage_range", "{body}");
    }
    let (status, body) = usage_report(&host, "nowhere", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // A member token sees its own project's usage only.
    let member = host.member_token(&["other"]).await;
    host.as_token(&member)
        .get("/projects/acct/usage", StatusCode::FORBIDDEN)
        .await;
    host.submit("other", "shell", "echo mine").await;
    host.as_token(&member)
        .get("/projects/other/usage", StatusCode::OK)
        .await;
    // The document lists the route.
    let (_, doc) = host.admin_call(Method::GET, "/openapi.json", None).await;
    assert!(doc["paths"]["/projects/{id}/usage"]["get"].is_object());
    assert!(doc["paths"]["/projects/{id}/budget"]["put"].is_object());
}

async fn a_project_over_its_budget_is_refused_and_nothing_is_queued(db: Db) {
    let Some(host) = host(db).await else { return };
    let (status, body) = set_budget(&host, "capped", json!(5)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    host.run_within("capped", "shell", "echo first", WAIT).await;
    for bad in [json!(-1), json!("ten"), json!(true)] {
        let (status, body) = set_budget(&host, "capped", bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(code(&body), "invalid_budget", "{body}");
    }
    let member = host.member_token(&["capped"]).await;
    host.as_token(&member)
        .put(
            "/projects/capped/budget",
            json!({"monthly_limit_usd": 100}),
            StatusCode::FORBIDDEN,
        )
        .await;
    let (status, budget) = set_budget(&host, "capped", json!(0)).await;
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
    let (status, budget) = set_budget(&host, "capped", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{budget}");
    assert_eq!(budget["monthly_limit_usd"], Value::Null, "{budget}");
    let (_, command) = host.run_within("capped", "shell", "echo again", WAIT).await;
    assert_eq!(command["status"], "completed", "{command}");
    let budget = host
        .as_token(&member)
        .get("/projects/capped/budget", StatusCode::OK)
        .await;
    assert_eq!(budget["exceeded"], false, "{budget}");
    let actions = audit_actions(&host, "capped").await;
    for action in ["project.budget_set", "project.budget_removed"] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
}

async fn a_running_command_crossing_the_budget_is_cancelled_and_announced_once(db: Db) {
    let Some(host) = host(db).await else { return };
    host.run_within("spender", "shell", "echo hello", WAIT)
        .await;
    let receiver = WebhookReceiver::start().expect("receiver");
    let (hook, _) = host
        .subscribe("spender", &receiver.url("/hook"), &["budget.exceeded"])
        .await;
    let (status, _) = set_budget(&host, "spender", json!(1.0)).await;
    assert_eq!(status, StatusCode::OK);
    // 0.4 every 100 ms for 20 s: the third report reaches the budget.
    let (events, command) = host
        .run_within("spender", "hostile", "spend 0.4 200 100", WAIT)
        .await;
    assert_eq!(command["status"], "cancelled", "{command}");
    let error = command["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("budget_exceeded"), "{command}");
    let streamed = streamed_cost(&events);
    assert!((1.0..4.0).contains(&streamed), "{streamed}");
    let (_, usage) = usage_report(&host, "spender", "").await;
    let spent = usage["total"]["cost_usd"].as_f64().expect("cost");
    assert!(close(spent, streamed), "{spent} vs {streamed}: {usage}");
    // Over budget now: refused, and the month's announcement is not repeated.
    host.as_admin()
        .post(
            "/projects/spender/shell",
            json!({"prompt": "echo no"}),
            StatusCode::PAYMENT_REQUIRED,
        )
        .await;
    let received = receiver.wait_for(1, WAIT).await;
    let event = received[0].json();
    assert_eq!(event["type"], "budget.exceeded", "{event}");
    assert_eq!(event["data"]["project_id"], "spender", "{event}");
    assert_eq!(event["data"]["monthly_limit_usd"].as_f64(), Some(1.0));
    assert_eq!(event["data"]["command_id"], command["id"], "{event}");
    let path = format!("/projects/spender/webhooks/{hook}/deliveries");
    let (_, deliveries) = host.admin_call(Method::GET, &path, None).await;
    let count = deliveries["deliveries"].as_array().map(Vec::len);
    assert_eq!(count, Some(1), "{deliveries}");
    let actions = audit_actions(&host, "spender").await;
    let exceeded = actions
        .iter()
        .filter(|a| *a == "project.budget_exceeded")
        .count();
    assert_eq!(exceeded, 1, "{actions:?}");
}
