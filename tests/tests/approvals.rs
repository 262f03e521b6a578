//! Approvals and follow-up input end to end: a real `rdev serve` (SQLite and PostgreSQL)
//! runs the `interact` test guest (ABI 0.2.0, plugins/testing/interact), whose `run <cmd>`
//! prompt asks whether `Bash` may run `<cmd>` and whose `input` prompt takes follow-up
//! input. Everything a person does goes through the HTTP API; what the agent was told is
//! read back from the command's result and event stream.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use rdev::server::ServeConfig;
use rdev_tests::harness::bin::code_and_text;
use rdev_tests::harness::plugins::with_interact;
use rdev_tests::harness::server::{Running, TestServer, assert_nobody_asked};

/// Generous: a command runs a real plugin and the machine may be loaded.
const WAIT: Duration = Duration::from_secs(60);

use rdev_tests::harness::Database as Db;

/// A server whose plugins directory holds `interact` and the real `shell`.
async fn host(db: Db) -> Option<TestServer> {
    host_with(db, |_| {}).await
}

/// [`host`] with its configuration adjusted by `more`.
async fn host_with(db: Db, more: impl FnOnce(&mut ServeConfig)) -> Option<TestServer> {
    TestServer::with_plugins(db, with_interact(), more).await
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

/// Submits `body` to `interact` of `project` as the admin and follows its stream.
async fn start(host: &TestServer, project: &str, body: Value) -> Running {
    host.run(project, "interact", body).await
}

/// Creates `project` (as a first command would) and sets its policy.
async fn put_policy(host: &TestServer, project: &str, policy: Value) {
    host.create_project(project).await;
    host.put_policy(project, policy).await;
}

async fn decide(
    host: &TestServer,
    token: &str,
    approval: &str,
    body: Value,
) -> (StatusCode, Value) {
    host.call(
        Method::POST,
        &format!("/approvals/{approval}"),
        Some(token),
        Some(body),
    )
    .await
}

/// Waits until the command ends; its view.
async fn finished(host: &TestServer, id: &str) -> Value {
    host.finished_within(id, WAIT).await
}

async fn approvals(host: &TestServer, project: &str, query: &str) -> Vec<Value> {
    let path = format!("/projects/{project}/approvals{query}");
    host.list(&path, "approvals").await
}

fn final_text(command: &Value) -> &str {
    command["result"]["final_text"].as_str().unwrap_or("<none>")
}

fn printed(events: &[(String, Value)], text: &str) -> bool {
    events
        .iter()
        .any(|(kind, data)| kind == "output" && data.to_string().contains(text))
}

async fn an_allowed_call_runs_after_the_decision_and_the_audit_names_the_decider(db: Db) {
    let Some(host) = host(db).await else { return };
    let token = host.member_token(&["p"]).await;
    let mut run = start(&host, "p", json!({"prompt": "run echo ran-$((40+2))"})).await;
    let requested = run.next("approval_requested", WAIT).await;
    let approval = requested["approval"].clone();
    assert_eq!(approval["tool"], "Bash");
    assert_eq!(approval["input"], json!({"command": "echo ran-$((40+2))"}));
    assert_eq!(approval["status"], "pending");
    let id = approval["id"].as_str().expect("approval id").to_owned();

    let pending = approvals(&host, "p", "?status=pending").await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["id"], id.as_str());
    assert_eq!(pending[0]["command_id"], run.id.as_str());

    let (status, decided) = decide(&host, &token, &id, json!({"decision": "allow"})).await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    assert_eq!(decided["status"], "allowed");
    let resolved = run.next("approval_resolved", WAIT).await;
    assert_eq!(resolved["approval"]["status"], "allowed");
    let command_id = run.id.clone();
    let rest = run.rest(WAIT).await;
    assert!(printed(&rest, "ran-42"), "the tool ran: {rest:?}");
    let command = finished(&host, &command_id).await;
    assert_eq!(command["status"], "completed", "{command}");

    let (status, again) = decide(&host, &host.admin, &id, json!({"decision": "deny"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(code(&again), "approval_decided");
    assert!(approvals(&host, "p", "?status=pending").await.is_empty());

    let (_, audit) = host
        .admin_call(Method::GET, "/audit?action=approval.decided", None)
        .await;
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{audit}");
    let actor = entries[0]["actor"].as_str().expect("actor");
    assert!(actor.starts_with("member ("), "{actor}");
    assert_eq!(entries[0]["details"]["approval_id"], id.as_str());
}

async fn a_denial_with_a_message_reaches_the_agent_and_the_tool_does_not_run(db: Db) {
    let Some(host) = host(db).await else { return };
    let mut run = start(&host, "p", json!({"prompt": "run echo never-$((1+1))"})).await;
    let id = run.approval_id(WAIT).await;
    let (status, decided) = decide(
        &host,
        &host.admin,
        &id,
        json!({"decision": "deny", "message": "not on main"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    assert_eq!(decided["status"], "denied");
    assert_eq!(decided["message"], "not on main");
    let command_id = run.id.clone();
    let rest = run.rest(WAIT).await;
    assert!(!printed(&rest, "never-2"), "{rest:?}");
    let command = finished(&host, &command_id).await;
    assert_eq!(final_text(&command), "denied: not on main", "{command}");
}

async fn a_request_nobody_decides_expires_as_a_denial(db: Db) {
    let Some(host) = host(db).await else { return };
    put_policy(&host, "p", json!({"mode": "ask", "timeout_secs": 1})).await;
    let mut run = start(&host, "p", json!({"prompt": "run echo late"})).await;
    let id = run.approval_id(WAIT).await;
    let resolved = run.next("approval_resolved", WAIT).await;
    assert_eq!(resolved["approval"]["status"], "expired");
    assert_eq!(resolved["approval"]["decided_by"], "host");
    let command = finished(&host, &run.id).await;
    assert!(
        final_text(&command).starts_with("denied: expired"),
        "{command}"
    );
    let (status, late) = decide(&host, &host.admin, &id, json!({"decision": "allow"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{late}");
}

async fn cancel_while_waiting_cancels_command_and_approval(db: Db) {
    let Some(host) = host(db).await else { return };
    let mut run = start(&host, "p", json!({"prompt": "run echo wait"})).await;
    let id = run.approval_id(WAIT).await;
    let (status, body) = host
        .admin_call(Method::POST, &format!("/commands/{}/cancel", run.id), None)
        .await;
    assert!(status.is_success(), "{status} {body}");
    let command = finished(&host, &run.id).await;
    assert_eq!(command["status"], "cancelled", "{command}");
    let (_, approval) = host
        .admin_call(Method::GET, &format!("/approvals/{id}"), None)
        .await;
    assert_eq!(approval["status"], "cancelled", "{approval}");
    assert_eq!(approval["decided_by"], "host");
}

async fn follow_up_input_reaches_the_running_agent(db: Db) {
    let Some(host) = host(db).await else { return };
    let mut run = start(&host, "p", json!({"prompt": "input"})).await;
    run.running(WAIT).await;
    let path = format!("/commands/{}/input", run.id);
    for text in ["hello there", "done"] {
        let body = host
            .as_admin()
            .post(&path, json!({"text": text}), StatusCode::ACCEPTED)
            .await;
        assert!(body["id"].as_str().is_some_and(|id| id.starts_with("in-")));
    }
    let id = run.id.clone();
    let events = run.rest(WAIT).await;
    let delivered = events.iter().filter(|(kind, _)| kind == "input_delivered");
    assert_eq!(delivered.count(), 2, "{events:?}");
    assert!(
        !events.iter().any(|(kind, _)| kind == "warning"),
        "{events:?}"
    );
    let command = finished(&host, &id).await;
    assert_eq!(final_text(&command), "hello there,done", "{command}");
    let late = host
        .as_admin()
        .post(&path, json!({"text": "more"}), StatusCode::CONFLICT)
        .await;
    assert_eq!(code(&late), "command_not_running");
}

/// `run <cmd>` never takes input: what is sent meanwhile is accepted (the command runs) and
/// named in a warning before `done`; after the end, input is refused.
async fn input_the_agent_never_took_is_reported_before_done(db: Db) {
    let Some(host) = host(db).await else { return };
    let mut run = start(&host, "p", json!({"prompt": "run echo busy"})).await;
    let approval = run.approval_id(WAIT).await;
    let path = format!("/commands/{}/input", run.id);
    let body = host
        .as_admin()
        .post(
            &path,
            json!({"text": "are you still there?"}),
            StatusCode::ACCEPTED,
        )
        .await;
    let input = body["id"].as_str().expect("input id").to_owned();
    let (status, body) = decide(&host, &host.admin, &approval, json!({"decision": "allow"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = run.id.clone();
    let events = run.rest(WAIT).await;
    let warning = events
        .iter()
        .position(|(kind, data)| {
            kind == "warning" && data["message"].as_str().is_some_and(|m| m.contains(&input))
        })
        .unwrap_or_else(|| panic!("no warning names {input}: {events:?}"));
    assert!(
        events[warning].1["message"]
            .as_str()
            .is_some_and(|m| m.contains("are you still there?") && m.contains("not delivered")),
        "{events:?}"
    );
    let done = events.iter().position(|(kind, _)| kind == "done");
    assert!(done.is_some_and(|done| warning < done), "{events:?}");
    assert!(!events.iter().any(|(kind, _)| kind == "input_delivered"));
    assert_eq!(finished(&host, &id).await["status"], "completed");
    let late = host
        .as_admin()
        .post(&path, json!({"text": "too late"}), StatusCode::CONFLICT)
        .await;
    assert_eq!(code(&late), "command_not_running");
}

/// An agent that asks again and again while the lease heartbeat beats every few
/// milliseconds: each policy decision is a database write made from inside the execution,
/// each beat one made beside it. Neither may wait for the other: a beat that waited for a
/// write the (then unpolled) execution was making hung the command forever.
async fn heartbeats_never_wait_for_an_agent_busy_asking(db: Db) {
    let beat_often = |config: &mut ServeConfig| config.queue.heartbeat = Duration::from_millis(5);
    let Some(host) = host_with(db, beat_often).await else {
        return;
    };
    put_policy(&host, "busy", json!({"mode": "allow"})).await;
    let run = start(&host, "busy", json!({"prompt": "ask 200"})).await;
    let id = run.id.clone();
    run.rest(WAIT).await;
    let command = finished(&host, &id).await;
    assert_eq!(command["status"], "completed", "{command}");
    assert_eq!(final_text(&command), "allowed 200 of 200", "{command}");
}

rdev_tests::on_both_databases!(
    heartbeats_never_wait_for_an_agent_busy_asking,
    input_the_agent_never_took_is_reported_before_done,
    an_allowed_call_runs_after_the_decision_and_the_audit_names_the_decider,
    a_denial_with_a_message_reaches_the_agent_and_the_tool_does_not_run,
    a_request_nobody_decides_expires_as_a_denial,
    cancel_while_waiting_cancels_command_and_approval,
    follow_up_input_reaches_the_running_agent,
);

#[tokio::test]
async fn deny_mode_and_a_denying_command_never_ask() {
    let host = host(Db::Sqlite).await.expect("sqlite");
    put_policy(&host, "strict", json!({"mode": "deny"})).await;
    let run = start(&host, "strict", json!({"prompt": "run echo x"})).await;
    let id = run.id.clone();
    let rest = run.rest(WAIT).await;
    assert_nobody_asked(&rest);
    let command = finished(&host, &id).await;
    assert!(
        final_text(&command).starts_with("denied: denied: the policy"),
        "{command}"
    );
    let recorded = approvals(&host, "strict", "").await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["status"], "denied");
    assert_eq!(recorded[0]["decided_by"], "policy");

    // The project asks, but the command narrows itself to deny.
    let run = start(
        &host,
        "open",
        json!({"prompt": "run echo y", "permissions": "deny"}),
    )
    .await;
    let command = finished(&host, &run.id).await;
    assert!(final_text(&command).starts_with("denied:"), "{command}");
    assert!(approvals(&host, "open", "?status=pending").await.is_empty());
}

#[tokio::test]
async fn rules_decide_without_asking_and_remember_adds_one() {
    let host = host(Db::Sqlite).await.expect("sqlite");
    put_policy(
        &host,
        "p",
        json!({"rules": [{"tool": "Bash", "pattern": "echo ok*", "action": "allow"}]}),
    )
    .await;
    let run = start(&host, "p", json!({"prompt": "run echo ok-rule"})).await;
    let id = run.id.clone();
    let rest = run.rest(WAIT).await;
    assert!(printed(&rest, "ok-rule"), "{rest:?}");
    assert_nobody_asked(&rest);
    assert_eq!(finished(&host, &id).await["status"], "completed");

    // Asked once, allowed with remember: the next identical call is not asked.
    let mut run = start(&host, "p", json!({"prompt": "run echo again"})).await;
    let approval = run.approval_id(WAIT).await;
    let (status, body) = decide(
        &host,
        &host.admin,
        &approval,
        json!({"decision": "allow", "remember": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    finished(&host, &run.id).await;
    let (_, policy) = host
        .admin_call(Method::GET, "/projects/p/policy", None)
        .await;
    assert_eq!(policy["source"], "project");
    let rules = policy["policy"]["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 2, "{policy}");
    assert_eq!(
        rules[1],
        json!({"tool": "Bash", "pattern": "echo again", "action": "allow"})
    );
    let run = start(&host, "p", json!({"prompt": "run echo again"})).await;
    let id = run.id.clone();
    let rest = run.rest(WAIT).await;
    assert_nobody_asked(&rest);
    assert!(printed(&rest, "again"));
    assert_eq!(finished(&host, &id).await["status"], "completed");
}

#[tokio::test]
async fn another_projects_member_can_neither_list_nor_see_nor_decide() {
    let host = host(Db::Sqlite).await.expect("sqlite");
    let b = host.member_token(&["b"]).await;
    let mut run = start(&host, "a", json!({"prompt": "run echo secret"})).await;
    let id = run.approval_id(WAIT).await;
    host.as_token(&b)
        .get("/projects/a/approvals", StatusCode::FORBIDDEN)
        .await;
    host.as_token(&b)
        .get(&format!("/approvals/{id}"), StatusCode::NOT_FOUND)
        .await;
    let (status, body) = decide(&host, &b, &id, json!({"decision": "allow"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = host
        .call(
            Method::PUT,
            "/projects/b/policy",
            Some(&b),
            Some(json!({"mode": "allow"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (_, still) = host
        .admin_call(Method::GET, &format!("/approvals/{id}"), None)
        .await;
    assert_eq!(still["status"], "pending");

    let (status, body) = decide(&host, &host.admin, &id, json!({"decision": "maybe"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = decide(&host, &host.admin, "apr-nope", json!({"decision": "allow"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = host
        .admin_call(
            Method::PUT,
            "/projects/a/policy",
            Some(json!({"timeout_secs": 0})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_policy"),
        "{body}"
    );
    let (status, _) = decide(&host, &host.admin, &id, json!({"decision": "deny"})).await;
    assert_eq!(status, StatusCode::OK);
    finished(&host, &run.id).await;
}

#[tokio::test]
async fn input_is_refused_for_a_provider_that_takes_none() {
    let host = host(Db::Sqlite).await.expect("sqlite");
    let (status, body) = host
        .admin_call(
            Method::POST,
            "/projects/p/shell",
            Some(json!({"prompt": "sleep 30"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["command_id"].as_str().expect("id").to_owned();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, command) = host
            .admin_call(Method::GET, &format!("/commands/{id}"), None)
            .await;
        if command["status"] == "running" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{command}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = format!("/commands/{id}/input");
    let (status, body) = host
        .admin_call(Method::POST, &path, Some(json!({"text": "hi"})))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "input_not_accepted"),
        "{body}"
    );
    let (status, body) = host
        .admin_call(Method::POST, &path, Some(json!({"text": " "})))
        .await;
    assert!(status.is_client_error(), "{body}");
    host.admin_call(Method::POST, &format!("/commands/{id}/cancel"), None)
        .await;
    finished(&host, &id).await;
}

/// `rdev <args>` against the host with `RDEV_URL` and `RDEV_TOKEN` as users set them.
async fn rdev_cli(host: &TestServer, args: &[&str]) -> (Option<i32>, String, String) {
    let output = host.client(&host.admin).args(args).output().await;
    code_and_text(&output.expect("rdev runs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_approves_denies_and_sends_input() {
    let host = host(Db::Sqlite).await.expect("sqlite");
    let mut run = start(&host, "p", json!({"prompt": "run echo cli-$((2*3))"})).await;
    let id = run.approval_id(WAIT).await;
    let (code_, listed, err) = rdev_cli(&host, &["approvals", "--project", "p"]).await;
    assert_eq!(code_, Some(0), "{err}");
    let line = listed.lines().find(|l| l.starts_with(&id)).expect("listed");
    assert!(
        line.contains("pending") && line.contains("Bash") && line.contains("echo cli-"),
        "{line}"
    );
    let (code_, everywhere, err) = rdev_cli(&host, &["approvals"]).await;
    assert_eq!(code_, Some(0), "{err}");
    assert!(everywhere.contains(&id), "{everywhere}");

    let (code_, approved, err) = rdev_cli(&host, &["approve", &id]).await;
    assert_eq!(code_, Some(0), "{err}");
    assert!(approved.contains("allowed"), "{approved}");
    let command_id = run.id.clone();
    assert!(printed(&run.rest(WAIT).await, "cli-6"));
    assert_eq!(finished(&host, &command_id).await["status"], "completed");
    let (code_, _, err) = rdev_cli(&host, &["deny", &id, "--message", "late"]).await;
    assert_ne!(code_, Some(0));
    assert!(err.contains("approval_decided"), "{err}");

    let mut run = start(&host, "p", json!({"prompt": "input"})).await;
    run.running(WAIT).await;
    for text in ["from the terminal", "done"] {
        let (code_, out, err) = rdev_cli(&host, &["input", &run.id, text]).await;
        assert_eq!(code_, Some(0), "{err}");
        assert!(out.starts_with("in-"), "{out}");
    }
    let command = finished(&host, &run.id).await;
    assert_eq!(final_text(&command), "from the terminal,done", "{command}");
}
