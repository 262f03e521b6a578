//! The HTTP API end to end: a real `rdev serve` on an ephemeral loopback port with the real
//! plugins and a real database (SQLite, and PostgreSQL for the command flow), driven by an
//! HTTP client.

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use rdev::domain::{AgentEvent, CommandId, OutputStream, StreamEvent};
use rdev_tests::harness::server::{SseReader, TestServer, field_strings, json_of};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

async fn submit(server: &TestServer, project: &str, provider: &str, prompt: &str) -> Value {
    server
        .as_admin()
        .post(
            &format!("/projects/{project}/{provider}"),
            json!({"prompt": prompt}),
            StatusCode::ACCEPTED,
        )
        .await
}

fn output(text: &str) -> StreamEvent {
    StreamEvent::Agent(AgentEvent::Output {
        stream: OutputStream::Stdout,
        text: text.into(),
    })
}

#[tokio::test]
async fn probes_and_metrics_need_no_token() {
    let server = TestServer::sqlite().await;
    let (status, body) = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let body = server.anonymous().get("/readyz", StatusCode::OK).await;
    assert_eq!(body["database"], "ok");
    assert!(body["providers_serving"].as_u64().unwrap_or(0) >= 1);
    submit(&server, "metrics", "shell", "echo hi").await;
    let text = server.metrics().await;
    assert!(text.contains("rdev_commands_enqueued_total 1"), "{text}");
    assert!(text.contains("rdev_sse_subscribers"), "{text}");
    let (status, body) = server.call(Method::GET, "/nope", None, None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "route_not_found")
    );
    server.stop().await;
}

#[tokio::test]
async fn the_seed_request_returns_a_command_and_a_stream_url() {
    let server = TestServer::sqlite().await;
    let response = server
        .request(
            Method::POST,
            "/projects/my-project/claude",
            Some(&server.admin),
        )
        .json(&json!({"prompt": "write a hello world"}))
        .send()
        .await
        .expect("sent");
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["command_id"].as_str().expect("command_id");
    assert!(id.starts_with("cmd-"));
    assert_eq!(
        body["stream_url"],
        format!("/projects/my-project/events/{id}")
    );
    assert!(body["status"].is_string());

    let command = server.command(id).await;
    assert_eq!(command["provider"], "claude");
    assert_eq!(command["project_id"], "my-project");
    assert_eq!(command["prompt"], "write a hello world");
    // The project was registered by the submission.
    let (status, project) = server
        .admin_call(Method::GET, "/projects/my-project", None)
        .await;
    assert_eq!(
        (status, &project["id"]),
        (StatusCode::OK, &json!("my-project"))
    );
    server.stop().await;
}

#[tokio::test]
async fn rejected_submissions_write_nothing() {
    let server = TestServer::sqlite().await;
    let admin = Some(server.admin.as_str());
    let cases = [
        (
            json!({"prompt": ""}),
            "/projects/p1/shell",
            StatusCode::BAD_REQUEST,
            "prompt_required",
        ),
        (
            json!({}),
            "/projects/p1/shell",
            StatusCode::BAD_REQUEST,
            "prompt_required",
        ),
        (
            json!({"prompt": "x", "timeout_secs": 0}),
            "/projects/p1/shell",
            StatusCode::BAD_REQUEST,
            "invalid_timeout",
        ),
        (
            json!({"prompt": "x", "timeout_secs": 999_999}),
            "/projects/p1/shell",
            StatusCode::BAD_REQUEST,
            "invalid_timeout",
        ),
        (
            json!({"prompt": "x", "session_id": "--flag"}),
            "/projects/p1/shell",
            StatusCode::BAD_REQUEST,
            "invalid_session_id",
        ),
        (
            json!({"prompt": "x", "model": "--model"}),
            "/projects/p1/shell",
            StatusCode::BAD_REQUEST,
            "invalid_model",
        ),
        (
            json!({"prompt": "x"}),
            "/projects/p1/no-such-provider",
            StatusCode::NOT_FOUND,
            "unknown_provider",
        ),
        (
            json!({"prompt": "x"}),
            "/projects/p1/Bad_Name",
            StatusCode::NOT_FOUND,
            "unknown_provider",
        ),
        (
            json!({"prompt": "x", "provider": "ghost"}),
            "/projects/p1/commands",
            StatusCode::NOT_FOUND,
            "unknown_provider",
        ),
        (
            json!({"prompt": 5}),
            "/projects/p1/shell",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"prompt": "x"}),
            "/projects/Not_Valid/shell",
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
    ];
    for (body, path, want_status, want_code) in cases {
        let (status, answer) = server
            .call(Method::POST, path, admin, Some(body.clone()))
            .await;
        assert_eq!(
            (status, code(&answer)),
            (want_status, want_code),
            "{path} {body}: {answer}"
        );
    }
    let (status, answer) = json_of(
        server
            .request(Method::POST, "/projects/p1/shell", admin)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    let huge = "x".repeat(3 * 1024 * 1024);
    let response = server
        .request(Method::POST, "/projects/p1/shell", admin)
        .json(&json!({"prompt": huge}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let response = server
        .request(Method::POST, "/projects/p1/shell", admin)
        .header("idempotency-key", "")
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Nothing was written: the project was never registered, nothing was queued.
    let (status, answer) = server.call(Method::GET, "/projects/p1", admin, None).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::NOT_FOUND, "project_not_found")
    );
    let (_, projects) = server.call(Method::GET, "/projects", admin, None).await;
    assert_eq!(projects["projects"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn projects_can_be_created_listed_read_and_deleted() {
    let server = TestServer::sqlite().await;
    let admin = Some(server.admin.as_str());
    let (status, body) = server
        .call(
            Method::POST,
            "/projects",
            admin,
            Some(json!({"id": "alpha", "display_name": "Alpha"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["display_name"], "Alpha");
    let (status, body) = server
        .call(
            Method::POST,
            "/projects",
            admin,
            Some(json!({"id": "alpha"})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "project_exists")
    );
    let (status, body) = server
        .call(
            Method::POST,
            "/projects",
            admin,
            Some(json!({"id": "../etc"})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_id")
    );
    server
        .call(
            Method::POST,
            "/projects",
            admin,
            Some(json!({"id": "beta"})),
        )
        .await;
    let (_, body) = server.call(Method::GET, "/projects", admin, None).await;
    let ids = field_strings(&body["projects"], "id");
    assert_eq!(ids, ["alpha", "beta"]);
    let (status, body) = server
        .call(Method::GET, "/projects/gamma", admin, None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "project_not_found")
    );

    // A project with queued work cannot be deleted; once it is finished it can.
    let queued = submit(&server, "beta", "shell", "sleep 30").await;
    let (status, body) = server
        .call(Method::DELETE, "/projects/beta", admin, None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "project_busy")
    );
    let id = queued["command_id"].as_str().expect("id");
    let (status, _) = server.cancel(id).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_terminal(&server, id).await;
    let (status, _) = server
        .call(Method::DELETE, "/projects/beta", admin, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server
        .call(Method::GET, "/projects/beta", admin, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .call(Method::DELETE, "/projects/beta", admin, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

/// Follows the command's stream to its end and returns the final status from the API.
async fn wait_terminal(server: &TestServer, id: &str) -> Value {
    let (_, command) = server
        .admin_call(Method::GET, &format!("/commands/{id}"), None)
        .await;
    let stream_url = command["stream_url"]
        .as_str()
        .expect("stream_url")
        .to_owned();
    let events = server.open_stream(&stream_url).await.collect().await;
    let last = events.last().expect("a terminal event");
    assert_eq!(last.event.as_deref(), Some("done"), "{events:?}");
    let (_, command) = server
        .admin_call(Method::GET, &format!("/commands/{id}"), None)
        .await;
    command
}

#[tokio::test]
async fn commands_are_listed_filtered_paged_and_cancelled() {
    let server = TestServer::sqlite().await;
    let admin = Some(server.admin.as_str());
    // The first command holds the project's single running slot (or the queue head), so
    // the others stay pending whether or not a worker runs.
    let blocker = submit(&server, "work", "shell", "sleep 30").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, body) = server
            .call(
                Method::POST,
                "/projects/work/commands",
                admin,
                Some(json!({"prompt": format!("echo {n}"), "provider": "shell"})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push(body["command_id"].as_str().expect("id").to_owned());
    }
    // Without "provider" the default provider is used.
    let (status, body) = server
        .call(
            Method::POST,
            "/projects/work/commands",
            admin,
            Some(json!({"prompt": "hi"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let default_id = body["command_id"].as_str().expect("id").to_owned();
    let (_, command) = server
        .call(Method::GET, &format!("/commands/{default_id}"), admin, None)
        .await;
    let (_, providers) = server.call(Method::GET, "/providers", admin, None).await;
    let default = providers["providers"]
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["default"] == true)
        .expect("a default");
    assert_eq!(command["provider"], default["name"]);

    // The same Idempotency-Key returns the same command.
    let mut first = None;
    for _ in 0..2 {
        let (status, body) = json_of(
            server
                .request(Method::POST, "/projects/work/shell", admin)
                .header("idempotency-key", "retry-1")
                .json(&json!({"prompt": "echo once"}))
                .send()
                .await
                .expect("sent"),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let id = body["command_id"].as_str().expect("id").to_owned();
        assert_eq!(*first.get_or_insert_with(|| id.clone()), id);
    }
    let total = 6;

    let (status, page) = server
        .call(Method::GET, "/projects/work/commands?limit=4", admin, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["commands"].as_array().expect("page").len(), 4);
    assert_eq!(page["next_offset"], 4);
    let (_, rest) = server
        .call(
            Method::GET,
            "/projects/work/commands?limit=4&offset=4",
            admin,
            None,
        )
        .await;
    assert_eq!(rest["commands"].as_array().expect("page").len(), total - 4);
    assert_eq!(rest["next_offset"], Value::Null);
    assert_eq!(rest["next"], Value::Null);
    // The keyset cursor reaches the same commands as the offset, and refuses what it did
    // not hand out (problem+json, nothing listed).
    let next = page["next"].as_str().expect("a cursor");
    let (_, after) = server
        .call(
            Method::GET,
            &format!("/projects/work/commands?limit=4&before={next}"),
            admin,
            None,
        )
        .await;
    assert_eq!(after["commands"], rest["commands"], "{after}");
    assert_eq!(after["next"], Value::Null);
    for bad in [
        "before=42".to_owned(),
        "before=c1.%21".to_owned(),
        format!("before={next}&offset=4"),
    ] {
        let response = server
            .request(
                Method::GET,
                &format!("/projects/work/commands?{bad}"),
                admin,
            )
            .send()
            .await
            .expect("sent");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{bad}"
        );
        let (status, body) = json_of(response).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_cursor"),
            "{bad}: {body}"
        );
    }
    let (status, body) = server
        .call(
            Method::GET,
            "/projects/work/commands?status=done",
            admin,
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_status")
    );
    let (status, body) = server
        .call(Method::GET, "/projects/nowhere/commands", admin, None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "project_not_found")
    );

    // Cancelling a pending command ends it at once, and its stream ends with `done`.
    let (status, body) = server.cancel(&ids[2]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "cancelled");
    let finished = wait_terminal(&server, &ids[2]).await;
    assert_eq!(finished["status"], "cancelled");
    let (status, body) = server.cancel(&ids[2]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "command_not_cancellable")
    );
    let (_, cancelled) = server
        .call(
            Method::GET,
            "/projects/work/commands?status=cancelled",
            admin,
            None,
        )
        .await;
    let listed = field_strings(&cancelled["commands"], "id");
    assert_eq!(listed, [ids[2].as_str()]);

    let missing = CommandId::from_uuid(uuid_like());
    let (status, body) = server
        .call(Method::GET, &format!("/commands/{missing}"), admin, None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "command_not_found")
    );
    let (status, body) = server
        .call(Method::POST, "/commands/cmd-nope/cancel", admin, None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "command_not_found")
    );

    for id in ids
        .iter()
        .chain([&default_id, first.as_ref().expect("id")])
        .chain([&blocker["command_id"].as_str().expect("id").to_owned()])
    {
        server.cancel(id).await;
    }
    server.stop().await;
}

fn uuid_like() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

/// Events of a stream appended straight to the event log, as the worker appends them, so
/// the test controls exactly when each one exists.
async fn append(server: &TestServer, id: &str, event: StreamEvent) -> i64 {
    let id = CommandId::parse(id).expect("command id");
    server
        .server()
        .state()
        .stores
        .events
        .append(&id, &event)
        .await
        .expect("append")
        .seq
}

#[tokio::test]
async fn sse_resumes_without_gap_or_duplicate_and_replays_to_late_subscribers() {
    let server = TestServer::sqlite().await;
    let admin = Some(server.admin.as_str());
    let blocker = submit(&server, "live", "shell", "sleep 30").await;
    let command = submit(&server, "live", "shell", "echo streamed").await;
    let id = command["command_id"].as_str().expect("id").to_owned();
    let stream_url = command["stream_url"].as_str().expect("url").to_owned();
    for n in 0..3 {
        append(&server, &id, output(&format!("before {n}"))).await;
    }

    let response = server
        .request(Method::GET, &stream_url, admin)
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream")
    );
    let mut reader = SseReader::new(response);
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(reader.next().await.expect("an event"));
    }
    drop(reader); // the connection drops mid-stream
    let last_id = seen.last().expect("seen").id.clone().expect("id");
    for n in 0..3 {
        append(&server, &id, output(&format!("after {n}"))).await;
    }
    let resumed = server
        .request(Method::GET, &stream_url, admin)
        .header("last-event-id", &last_id)
        .send()
        .await
        .expect("resume");
    assert_eq!(resumed.status(), StatusCode::OK);
    let mut reader = SseReader::new(resumed);
    let first_after = reader.next().await.expect("an event after resuming");
    seen.push(first_after);
    // Cancelling the (still pending) command writes its terminal event.
    let (status, _) = server.cancel(&id).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    seen.extend(reader.collect().await);

    let stored = server
        .server()
        .state()
        .stores
        .events
        .read(&CommandId::parse(&id).expect("id"), 0, 1000)
        .await
        .expect("read");
    let seqs: Vec<i64> = seen.iter().map(|e| e.seq()).collect();
    let want: Vec<i64> = stored.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, want, "every event exactly once, in order");
    let final_seq = *want.last().expect("events");
    for (received, stored) in seen.iter().zip(&stored) {
        assert_eq!(received.event.as_deref(), Some(stored.event.kind()));
        assert_eq!(
            received.json(),
            serde_json::to_value(&stored.event).expect("json")
        );
    }
    let terminal = seen.last().expect("events");
    assert_eq!(terminal.event.as_deref(), Some("done"));
    assert_eq!(terminal.json()["status"], "cancelled");

    // A late subscriber gets the full replay; the query parameter resumes too.
    let late = SseReader::new(
        server
            .request(Method::GET, &stream_url, admin)
            .send()
            .await
            .expect("late"),
    )
    .collect()
    .await;
    assert_eq!(late.iter().map(|e| e.seq()).collect::<Vec<_>>(), want);
    let from_query = SseReader::new(
        server
            .request(
                Method::GET,
                &format!("{stream_url}?last_event_id={}", want[want.len() - 2]),
                admin,
            )
            .send()
            .await
            .expect("query resume"),
    )
    .collect()
    .await;
    assert_eq!(
        from_query.iter().map(|e| e.seq()).collect::<Vec<_>>(),
        [final_seq]
    );

    let (status, body) = json_of(
        server
            .request(Method::GET, &stream_url, admin)
            .header("last-event-id", "abc")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_last_event_id")
    );
    let (status, body) = server
        .call(Method::GET, "/projects/live/events/cmd-nope", admin, None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "stream_not_found")
    );
    let (status, body) = server
        .call(
            Method::GET,
            &format!("/projects/other/events/{id}"),
            admin,
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "project_not_found")
    );
    let blocker = blocker["command_id"].as_str().expect("id");
    server.cancel(blocker).await;
    server.stop().await;
}

#[tokio::test]
async fn tokens_separate_unauthenticated_wrong_other_project_and_admin() {
    let server = TestServer::sqlite().await;
    let admin = server.admin.clone();
    let a = server.member_token(&["proj-a"]).await;
    let b_cmd = submit(&server, "proj-b", "shell", "echo b").await;
    let b_id = b_cmd["command_id"].as_str().expect("id").to_owned();
    let b_stream = b_cmd["stream_url"].as_str().expect("url").to_owned();

    // No token and a wrong token: 401 everywhere, with a Bearer challenge.
    for token in [None, Some("rdev_wrong")] {
        for (method, path) in [
            (Method::GET, "/projects".to_owned()),
            (Method::POST, "/projects/proj-a/shell".to_owned()),
            (Method::GET, format!("/commands/{b_id}")),
            (Method::GET, b_stream.clone()),
            (Method::GET, "/providers".to_owned()),
        ] {
            let mut request = server.request(method.clone(), &path, token);
            if method == Method::POST {
                request = request.json(&json!({"prompt": "x"}));
            }
            let response = request.send().await.expect("sent");
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {token:?}"
            );
            assert!(response.headers().contains_key("www-authenticate"));
        }
    }

    // Project A's token: its own project works…
    let body = server
        .as_token(&a)
        .post(
            "/projects/proj-a/shell",
            json!({"prompt": "echo a"}),
            StatusCode::ACCEPTED,
        )
        .await;
    let a_id = body["command_id"].as_str().expect("id").to_owned();
    server
        .as_token(&a)
        .get(&format!("/commands/{a_id}"), StatusCode::OK)
        .await;
    let (_, listed) = server.call(Method::GET, "/projects", Some(&a), None).await;
    let ids = field_strings(&listed["projects"], "id");
    assert_eq!(ids, ["proj-a"]);

    // …project B, its commands and its streams are forbidden; admin routes too.
    for (method, path, body) in [
        (
            Method::POST,
            "/projects/proj-b/shell".to_owned(),
            Some(json!({"prompt": "x"})),
        ),
        (
            Method::POST,
            "/projects/proj-b/commands".to_owned(),
            Some(json!({"prompt": "x"})),
        ),
        (Method::GET, "/projects/proj-b".to_owned(), None),
        (Method::GET, "/projects/proj-b/commands".to_owned(), None),
        (Method::GET, format!("/commands/{b_id}"), None),
        (Method::POST, format!("/commands/{b_id}/cancel"), None),
        (Method::GET, b_stream.clone(), None),
        (
            Method::POST,
            "/projects".to_owned(),
            Some(json!({"id": "mine"})),
        ),
        (Method::DELETE, "/projects/proj-a".to_owned(), None),
        (Method::POST, "/providers/reload".to_owned(), None),
        (Method::GET, "/credentials".to_owned(), None),
        (
            Method::PUT,
            "/credentials/API_KEY".to_owned(),
            Some(json!({"value": "x"})),
        ),
        (Method::GET, "/audit".to_owned(), None),
        (Method::GET, "/audit/verify".to_owned(), None),
        (Method::GET, "/tokens".to_owned(), None),
        (
            Method::POST,
            "/tokens".to_owned(),
            Some(json!({"name": "x", "role": "admin"})),
        ),
    ] {
        let (status, answer) = server.call(method.clone(), &path, Some(&a), body).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{method} {path}: {answer}"
        );
    }
    // Nothing was queued for project B by the refused requests.
    let (_, b_list) = server
        .call(Method::GET, "/projects/proj-b/commands", Some(&admin), None)
        .await;
    assert_eq!(b_list["commands"].as_array().expect("list").len(), 1);

    // Admin reaches everything; a revoked token stops working at once.
    server
        .as_token(&admin)
        .get(&format!("/commands/{a_id}"), StatusCode::OK)
        .await;
    let (_, tokens) = server
        .call(Method::GET, "/tokens", Some(&admin), None)
        .await;
    let listed = tokens["tokens"].as_array().expect("tokens");
    assert!(
        listed
            .iter()
            .all(|t| t.get("token").is_none() && t.get("digest").is_none())
    );
    let member_id = listed
        .iter()
        .find(|t| t["role"] == "member")
        .expect("member")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let revoked = server
        .as_token(&admin)
        .delete(&format!("/tokens/{member_id}"), StatusCode::OK)
        .await;
    assert!(revoked["revoked_at"].is_string());
    server
        .as_token(&a)
        .get("/projects", StatusCode::UNAUTHORIZED)
        .await;
    let (status, body) = server
        .call(Method::DELETE, "/tokens/tok-nope", Some(&admin), None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "token_not_found")
    );
    let (status, body) = server
        .call(
            Method::POST,
            "/tokens",
            Some(&admin),
            Some(json!({"name": "m", "role": "member"})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "projects_required")
    );
    for id in [a_id, b_id] {
        server
            .call(
                Method::POST,
                &format!("/commands/{id}/cancel"),
                Some(&admin),
                None,
            )
            .await;
    }
    server.stop().await;
}

#[tokio::test]
async fn credentials_are_write_only_and_audited() {
    let server = TestServer::sqlite().await;
    let admin = Some(server.admin.as_str());
    let body = server.put_credential("API_KEY", "sk-very-secret").await;
    assert_eq!(body["name"], "API_KEY");
    let (status, body) = server
        .call(
            Method::PUT,
            "/credentials/bad-name",
            admin,
            Some(json!({"value": "x"})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_credential_name")
    );
    let (status, body) = server
        .call(
            Method::PUT,
            "/credentials/EMPTY",
            admin,
            Some(json!({"value": ""})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "value_required")
    );
    let (status, list) = server.call(Method::GET, "/credentials", admin, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = list.to_string();
    assert!(
        text.contains("API_KEY") && text.contains("updated_at"),
        "{text}"
    );
    assert!(!text.contains("sk-very-secret"), "{text}");
    let (status, _) = server
        .call(Method::DELETE, "/credentials/API_KEY", admin, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = server
        .call(Method::DELETE, "/credentials/API_KEY", admin, None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "credential_not_found")
    );

    let (status, audit) = server
        .call(Method::GET, "/audit?action=credential.put", admin, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1);
    assert!(!audit.to_string().contains("sk-very-secret"));
    let (_, all) = server
        .call(Method::GET, "/audit?limit=1", admin, None)
        .await;
    assert_eq!(all["entries"].as_array().expect("entries").len(), 1);
    let next = all["next_after"].as_i64().expect("more pages");
    let (_, rest) = server
        .call(Method::GET, &format!("/audit?after={next}"), admin, None)
        .await;
    assert!(
        rest["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "credential.deleted")
    );
    let (status, body) = server
        .call(Method::GET, "/audit?limit=0", admin, None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_limit")
    );
    let (status, verify) = server.call(Method::GET, "/audit/verify", admin, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verify["intact"], true);
    assert!(verify["verified"].as_u64().unwrap_or(0) >= 2);
    server.stop().await;
}

#[tokio::test]
async fn providers_are_listed_and_reloaded_by_admins() {
    let server = TestServer::sqlite().await;
    let admin = Some(server.admin.as_str());
    let (status, body) = server.call(Method::GET, "/providers", admin, None).await;
    assert_eq!(status, StatusCode::OK);
    let names = field_strings(&body["providers"], "name");
    assert!(names.contains(&"shell"), "{names:?}");
    let shell = body["providers"]
        .as_array()
        .and_then(|list| list.iter().find(|p| p["name"] == "shell"))
        .expect("shell listed");
    assert_eq!(
        shell["grants"],
        json!({"exec": ["sh"], "project_http_ports": [], "credentials": [],
               "mcp_servers": false, "service": null}),
        "the manifest's grants: {shell}"
    );
    let (status, report) = server
        .call(Method::POST, "/providers/reload", admin, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert!(
        report["unchanged"]
            .as_array()
            .expect("unchanged")
            .iter()
            .any(|n| n == "shell")
    );
    let metrics = server.metrics().await;
    assert!(metrics.contains("rdev_plugin_reloads_total 1"), "{metrics}");
    server.stop().await;
}

/// Submits `prompt` to the shell provider and follows the stream to its end.
async fn run_shell(
    server: &TestServer,
    project: &str,
    prompt: &str,
) -> (Value, Vec<rdev_tests::harness::server::SseEvent>) {
    let submitted = submit(server, project, "shell", prompt).await;
    let stream_url = submitted["stream_url"].as_str().expect("stream_url");
    let events = server.open_stream(stream_url).await.collect().await;
    (submitted, events)
}

async fn seed_flow(server: &TestServer) {
    let (submitted, events) = run_shell(server, "my-project", "echo hello").await;
    let last = events.last().expect("events");
    assert_eq!(last.event.as_deref(), Some("done"), "{events:?}");
    assert_eq!(last.json()["status"], "completed", "{events:?}");
    let printed: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("output"))
        .map(|e| e.json()["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(printed.trim(), "hello", "{events:?}");
    let seqs: Vec<i64> = events.iter().map(|e| e.seq()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let id = submitted["command_id"].as_str().expect("id");
    let command = server.command(id).await;
    assert_eq!(command["status"], "completed", "{command}");
    assert_eq!(command["exit_code"], 0, "{command}");
    assert!(
        command["finished_at"].is_string() && command["duration_ms"].is_i64(),
        "{command}"
    );
}

#[tokio::test]
async fn the_seed_flow_runs_to_its_terminal_event_on_sqlite() {
    let server = TestServer::sqlite().await;
    seed_flow(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn the_seed_flow_runs_to_its_terminal_event_on_postgres() {
    let Some(server) = TestServer::postgres().await else {
        return;
    };
    seed_flow(&server).await;
    // Cancelling a running command stops it; its stream ends with `cancelled`.
    let running = submit(&server, "my-project", "shell", "echo started; sleep 30").await;
    let id = running["command_id"].as_str().expect("id");
    let stream_url = running["stream_url"].as_str().expect("url");
    let mut reader = SseReader::new(
        server
            .request(Method::GET, stream_url, Some(&server.admin))
            .send()
            .await
            .expect("stream"),
    );
    let mut events = Vec::new();
    while let Some(event) = reader.next().await {
        let started = event.event.as_deref() == Some("output");
        events.push(event);
        if started {
            break;
        }
    }
    let (status, body) = server.cancel(id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    events.extend(reader.collect().await);
    let last = events.last().expect("events");
    assert_eq!(last.event.as_deref(), Some("done"));
    assert_eq!(last.json()["status"], "cancelled", "{events:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_live_stream_resumed_mid_run_delivers_every_event_once() {
    let server = TestServer::sqlite().await;
    let admin = Some(server.admin.as_str());
    let submitted = submit(
        &server,
        "resume",
        "shell",
        "for i in 1 2 3 4 5 6 7 8; do echo line$i; sleep 0.1; done",
    )
    .await;
    let stream_url = submitted["stream_url"].as_str().expect("url");
    let mut reader = SseReader::new(
        server
            .request(Method::GET, stream_url, admin)
            .send()
            .await
            .expect("stream"),
    );
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(reader.next().await.expect("an event"));
    }
    drop(reader);
    let last = seen.last().expect("seen").id.clone().expect("id");
    let resumed = server
        .request(Method::GET, stream_url, admin)
        .header("last-event-id", last)
        .send()
        .await
        .expect("resume");
    seen.extend(SseReader::new(resumed).collect().await);
    let seqs: Vec<i64> = seen.iter().map(|e| e.seq()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    let lines: Vec<String> = seen
        .iter()
        .filter(|e| e.event.as_deref() == Some("output"))
        .map(|e| e.json()["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        lines.concat().split_whitespace().collect::<Vec<_>>(),
        (1..=8).map(|i| format!("line{i}")).collect::<Vec<_>>()
    );
    assert_eq!(seen.last().expect("events").json()["status"], "completed");
    server.stop().await;
}

#[tokio::test]
async fn five_hundred_subscribers_of_one_stream_all_receive_every_event() {
    let server = TestServer::sqlite().await;
    let admin = server.admin.clone();
    let blocker = submit(&server, "fan", "shell", "sleep 30").await;
    let submitted = submit(
        &server,
        "fan",
        "shell",
        "for i in 1 2 3 4 5; do echo n$i; done",
    )
    .await;
    let stream_url = submitted["stream_url"].as_str().expect("url").to_owned();
    let mut readers = Vec::new();
    for _ in 0..500 {
        let request = server.request(Method::GET, &stream_url, Some(&admin));
        readers.push(tokio::spawn(async move {
            let response = request.send().await.expect("stream");
            assert_eq!(response.status(), StatusCode::OK);
            SseReader::new(response).collect().await
        }));
    }
    // Release the project's slot: the command runs while all 500 are subscribed.
    let blocker = blocker["command_id"].as_str().expect("id");
    server
        .call(
            Method::POST,
            &format!("/commands/{blocker}/cancel"),
            Some(&admin),
            None,
        )
        .await;
    let mut first: Option<Vec<(i64, String)>> = None;
    for reader in readers {
        let events = reader.await.expect("reader task");
        let summary: Vec<(i64, String)> =
            events.iter().map(|e| (e.seq(), e.data.clone())).collect();
        assert_eq!(
            events.last().and_then(|e| e.event.clone()).as_deref(),
            Some("done")
        );
        match &first {
            None => first = Some(summary),
            Some(expected) => assert_eq!(&summary, expected),
        }
    }
    let expected = first.expect("500 readers");
    assert_eq!(
        expected.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=expected.len() as i64).collect::<Vec<_>>()
    );
    server.stop().await;
}

/// Open SSE connections as the server counts them.
fn sse_subscribers(server: &TestServer) -> i64 {
    server.server().state().metrics.sse_subscribers.get()
}

#[tokio::test]
async fn a_slow_sse_subscriber_is_dropped_without_stalling_anyone_and_resumes_exactly_once() {
    let server = TestServer::sqlite_with(|config| {
        config.sse.write_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let admin = Some(server.admin.as_str());
    let blocker = submit(&server, "slow", "shell", "sleep 30").await;
    let command = submit(&server, "slow", "shell", "true").await;
    let id = command["command_id"].as_str().expect("id").to_owned();
    let stream_url = command["stream_url"].as_str().expect("url").to_owned();

    // The slow client gets its response and then never reads the body.
    let slow = server
        .request(Method::GET, &stream_url, admin)
        .send()
        .await
        .expect("slow stream");
    assert_eq!(slow.status(), StatusCode::OK);
    let fast = server
        .request(Method::GET, &stream_url, admin)
        .send()
        .await
        .expect("fast stream");
    let fast = tokio::spawn(SseReader::new(fast).collect());
    assert_eq!(sse_subscribers(&server), 2);

    // Large events fill the slow client's socket and its server-side buffer (loopback
    // holds a few MiB); the writer is never held up by it.
    let payload = "x".repeat(64 * 1024);
    let mut appended = 0;
    while appended < 400 && sse_subscribers(&server) > 1 {
        for _ in 0..16 {
            append(&server, &id, output(&format!("{appended} {payload}"))).await;
            appended += 1;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A write to the slow client's full socket gives up after `write_timeout`;
    // the fast client is still subscribed.
    let waiting = std::time::Instant::now();
    while sse_subscribers(&server) > 1 {
        assert!(
            waiting.elapsed() < std::time::Duration::from_secs(30),
            "the slow subscriber was never dropped ({appended} events appended)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        append(&server, &id, output(&format!("{appended} after the drop"))).await;
        appended += 1;
    }
    let (status, _) = server.cancel(&id).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let stored: Vec<i64> = server
        .server()
        .state()
        .stores
        .events
        .read(&CommandId::parse(&id).expect("id"), 0, 100_000)
        .await
        .expect("read")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert!(
        stored.len() > appended,
        "every append, then the cancel's events"
    );

    // The fast client was not held back: it got everything, in order, then `done`.
    let fast = fast.await.expect("fast reader");
    assert_eq!(fast.iter().map(|e| e.seq()).collect::<Vec<_>>(), stored);
    assert_eq!(fast.last().and_then(|e| e.event.as_deref()), Some("done"));

    // The slow client now reads what reached it before the cut: a prefix, without `done`
    // (the connection was closed mid-write, so the last frame may be partial and is dropped).
    let before_drop = SseReader::new(slow).collect_until_cut().await;
    let last_id = before_drop.last().expect("some events reached it").seq();
    assert_ne!(
        before_drop.last().and_then(|e| e.event.as_deref()),
        Some("done")
    );
    assert!(last_id < *stored.last().expect("stored"));
    let resumed = SseReader::new(
        server
            .request(Method::GET, &stream_url, admin)
            .header("last-event-id", last_id.to_string())
            .send()
            .await
            .expect("resume"),
    )
    .collect()
    .await;
    let seen: Vec<i64> = before_drop
        .iter()
        .chain(&resumed)
        .map(|e| e.seq())
        .collect();
    assert_eq!(seen, stored, "every event exactly once across the drop");
    assert_eq!(
        resumed.last().and_then(|e| e.event.as_deref()),
        Some("done")
    );

    let blocker = blocker["command_id"].as_str().expect("id");
    server.cancel(blocker).await;
    server.stop().await;
}

fn connection(server: &TestServer, token: &str) -> rdev::cli::client::Connection {
    rdev::cli::client::Connection {
        server: Some(server.base.clone()),
        token: Some(token.to_owned()),
        client_config: None,
    }
}

#[tokio::test]
async fn client_commands_run_follow_cancel_and_manage_tokens() {
    use rdev::cli::client::{self, CancelArgs, LogsArgs, RunArgs, TokensAction, TokensArgs};
    use rdev::cli::output::PromptArgs;
    let server = TestServer::sqlite().await;
    let run = |prompt: &str| RunArgs {
        connection: connection(&server, &server.admin),
        project: "cli".into(),
        provider: Some("shell".into()),
        timeout: Some(60),
        asked: PromptArgs::default(),
        prompt: prompt.into(),
    };
    assert_eq!(client::run(run("echo from-cli")).await.expect("run"), 0);
    assert_eq!(client::run(run("exit 3")).await.expect("run"), 3);

    let (_, listed) = server
        .admin_call(Method::GET, "/projects/cli/commands", None)
        .await;
    let newest = listed["commands"][0]["id"].as_str().expect("id").to_owned();
    let logs = LogsArgs {
        connection: connection(&server, &server.admin),
        command_id: newest.clone(),
        follow: false,
    };
    assert_eq!(
        client::logs(logs).await.expect("logs"),
        3,
        "the failed command's own exit code"
    );
    let cancel = CancelArgs {
        connection: connection(&server, &server.admin),
        command_id: newest,
    };
    let refused = client::cancel(cancel)
        .await
        .expect_err("a finished command");
    assert!(
        refused.to_string().contains("command_not_cancellable"),
        "{refused}"
    );

    let create = TokensArgs {
        connection: connection(&server, &server.admin),
        action: TokensAction::Create {
            name: "from-cli".into(),
            role: "member".into(),
            projects: vec!["cli".into()],
        },
    };
    assert_eq!(client::tokens(create).await.expect("create"), 0);
    let (_, tokens) = server.admin_call(Method::GET, "/tokens", None).await;
    let created = tokens["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["name"] == "from-cli")
        .expect("created")
        .clone();
    assert_eq!(created["projects"], json!(["cli"]));
    let revoke = TokensArgs {
        connection: connection(&server, &server.admin),
        action: TokensAction::Revoke {
            id: created["id"].as_str().expect("id").into(),
        },
    };
    assert_eq!(client::tokens(revoke).await.expect("revoke"), 0);
    let wrong = TokensArgs {
        connection: connection(&server, "rdev_wrong"),
        action: TokensAction::List,
    };
    assert!(
        client::tokens(wrong)
            .await
            .expect_err("401")
            .to_string()
            .contains("401")
    );
    server.stop().await;
}

#[tokio::test]
async fn projects_are_created_from_templates_and_report_their_ci() {
    let server = TestServer::sqlite().await;
    let admin = Some(server.admin.as_str());

    let (status, body) = server.call(Method::GET, "/templates", admin, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names = field_strings(&body["templates"], "name");
    for builtin in ["blank", "node", "python", "rust"] {
        assert!(names.contains(&builtin), "{names:?}");
    }

    let (status, body) = server
        .call(
            Method::POST,
            "/projects",
            admin,
            Some(json!({"id": "demo", "template": "nonexistent"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = server
        .call(
            Method::POST,
            "/projects",
            admin,
            Some(json!({"id": "demo", "vars": {"title": "x"}})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "template_required")
    );
    let (status, _) = server
        .call(Method::GET, "/projects/demo", admin, None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "refused creations leave nothing"
    );

    let (status, body) = server
        .call(
            Method::POST,
            "/projects",
            admin,
            Some(json!({"id": "demo", "template": "blank", "vars": {"title": "Demo Title"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["project"]["id"], "demo", "{body}");
    assert!(body["commit"].is_string(), "a first commit: {body}");

    // The rendered workspace is the one commands of the project run in.
    let (_, events) = run_shell(
        &server,
        "demo",
        "cat README.md && git log --oneline | wc -l",
    )
    .await;
    let printed: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("output"))
        .map(|e| e.json()["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(printed.contains("Demo Title"), "{printed}");
    assert_eq!(printed.trim().lines().last(), Some("1"), "{printed}");

    let (status, body) = server
        .call(Method::GET, "/projects/demo/ci", admin, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["registration"]["state"].is_string(), "{body}");
    let (status, body) = server
        .call(Method::POST, "/projects/demo/ci", admin, None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "ci_not_configured")
    );

    let other = server.member_token(&["elsewhere"]).await;
    let other = server.as_token(&other);
    other.get("/projects/demo/ci", StatusCode::FORBIDDEN).await;
    let create = json!({"id": "mine", "template": "blank"});
    other.post("/projects", create, StatusCode::FORBIDDEN).await;
    server.stop().await;
}

/// A `tracing` writer whose output the test reads back.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_event_stream_alone_takes_the_token_as_a_query_parameter_and_never_logs_it() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // nextest runs each test in its own process; under `cargo test` another test of this
    // file may have installed nothing, as none does.
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let server = TestServer::sqlite().await;
    let submitted = submit(&server, "query-token", "shell", "echo via-query").await;
    let stream_url = submitted["stream_url"].as_str().expect("stream_url");
    let id = submitted["command_id"].as_str().expect("command id");
    let with_token = |token: &str| format!("{stream_url}?access_token={token}");

    let response = server
        .request(Method::GET, &with_token(&server.admin), None)
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), StatusCode::OK);
    let events = SseReader::new(response).collect().await;
    assert_eq!(
        events.last().and_then(|e| e.event.as_deref()),
        Some("done"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.data.contains("via-query")),
        "{events:?}"
    );

    // Resuming through the query string works with it too.
    let resumed = server
        .request(
            Method::GET,
            &format!("{}&last_event_id=1", with_token(&server.admin)),
            None,
        )
        .send()
        .await
        .expect("stream");
    assert_eq!(resumed.status(), StatusCode::OK);
    let rest = SseReader::new(resumed).collect().await;
    assert_eq!(rest.len(), events.len() - 1, "{rest:?}");

    let (status, body) = server
        .call(
            Method::GET,
            &format!("/commands/{id}?access_token={}", server.admin),
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "other routes want the header"
    );
    server
        .anonymous()
        .get(&with_token("rdev_unknown"), StatusCode::UNAUTHORIZED)
        .await;
    server
        .anonymous()
        .get(&with_token(""), StatusCode::UNAUTHORIZED)
        .await;
    let member = server.member_token(&["someone-else"]).await;
    let (status, body) = server
        .call(Method::GET, &with_token(&member), None, None)
        .await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));

    let admin = server.admin.clone();
    server.stop().await;
    let logged = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(
        logged.contains("access_token=[redacted]"),
        "the request log shows the redacted URI:\n{logged}"
    );
    for secret in [&admin, &member] {
        assert!(
            !logged.contains(secret.as_str()),
            "a token was logged:\n{logged}"
        );
    }
}

#[tokio::test]
async fn finished_commands_are_timed_in_the_duration_histogram() {
    let server = TestServer::sqlite().await;
    for prompt in ["echo one", "exit 3"] {
        let submitted = submit(&server, "timed", "shell", prompt).await;
        wait_terminal(&server, submitted["command_id"].as_str().expect("id")).await;
    }
    let text = server.metrics().await;
    assert!(
        text.contains("# TYPE rdev_command_duration_seconds histogram"),
        "{text}"
    );
    let value = |series: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .to_owned()
    };
    let completed = r#"{provider="shell",status="completed"}"#;
    let failed = r#"{provider="shell",status="failed"}"#;
    assert_eq!(
        value(&format!("rdev_command_duration_seconds_count{completed}")),
        "1"
    );
    assert_eq!(
        value(&format!("rdev_command_duration_seconds_count{failed}")),
        "1"
    );
    let seconds: f64 = value(&format!("rdev_command_duration_seconds_sum{completed}"))
        .parse()
        .expect("a number");
    assert!(seconds > 0.0, "{seconds}");
    server.stop().await;
}

#[tokio::test]
async fn a_quiet_stream_gets_keep_alive_comments_and_events_postpone_them() {
    let server = TestServer::sqlite_with(|config| {
        config.sse.keep_alive = std::time::Duration::from_millis(300);
    })
    .await;
    let admin = Some(server.admin.as_str());
    let blocker = submit(&server, "quiet", "shell", "sleep 30").await;
    let command = submit(&server, "quiet", "shell", "true").await;
    let id = command["command_id"].as_str().expect("id").to_owned();
    let stream_url = command["stream_url"].as_str().expect("url").to_owned();
    let response = server
        .request(Method::GET, &stream_url, admin)
        .send()
        .await
        .expect("stream");
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    let started = std::time::Instant::now();
    // The stored `pending` event, then silence: a comment arrives after the interval.
    while !seen.contains("\n:\n\n") && !seen.starts_with(":\n\n") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
            .await
            .expect("a keep-alive within 5 s")
            .expect("open")
            .expect("chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.starts_with("id: 1\nevent: status\n"), "{seen}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));

    // Events every 100 ms keep the stream busy: no comment between them.
    seen.clear();
    for n in 0..6 {
        append(&server, &id, output(&format!("busy {n}"))).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    while seen.matches("event: output").count() < 6 {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
            .await
            .expect("events")
            .expect("open")
            .expect("chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        !seen.contains(":\n\n"),
        "no keep-alive while events flow: {seen}"
    );

    for command in [&command, &blocker] {
        let id = command["command_id"].as_str().expect("id");
        server.cancel(id).await;
    }
    server.stop().await;
}
