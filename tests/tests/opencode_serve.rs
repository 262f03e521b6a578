//! The real `opencode serve` against the fake chat-completions API, natively (no rdev): pins
//! down the HTTP API and the `/event` stream the opencode provider relies on. With
//! `RDEV_OPENCODE_FIXTURES=<dir>` set, each scenario's `/event` data lines are also written
//! there (how plugins/opencode/tests/fixtures was made).

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdev_tests::doubles::openai::{FakeOpenAi, Reply, shell_input};
use rdev_tests::harness::{self, opencode};
use serde_json::{Value, json};

const PASSWORD: &str = "serve-test-password";

/// A running server, killed on drop.
struct Server {
    child: Child,
    port: u16,
    client: reqwest::Client,
    fake: FakeOpenAi,
    _home: tempfile::TempDir,
    _workspace: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .basic_auth("opencode", Some(PASSWORD))
            .timeout(Duration::from_secs(30))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.url(path))
            .basic_auth("opencode", Some(PASSWORD))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}: {response:?}");
        response.json().await.unwrap()
    }
}

async fn start() -> Option<Server> {
    let bin = harness::installed(opencode::install())?;
    let fake = FakeOpenAi::start().unwrap();
    let home = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    opencode::write_config(workspace.path(), &fake.base_url()).unwrap();
    let port = opencode::free_port().unwrap();
    let child = opencode::serve_command(&bin, port, workspace.path(), home.path(), PASSWORD)
        .spawn()
        .unwrap();
    let server = Server {
        child,
        port,
        client: harness::http_client(),
        fake,
        _home: home,
        _workspace: workspace,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = server
            .client
            .get(server.url("/global/health"))
            .basic_auth("opencode", Some(PASSWORD))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if let Ok(response) = health
            && response.status().is_success()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "opencode serve never got healthy"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Some(server)
}

/// Sends `prompt` to `session` and returns every `/event` payload until the session is idle.
async fn turn(s: &Server, name: &str, session: &str, prompt: &str) -> Vec<Value> {
    turn_answering(s, name, session, prompt, |_| None).await
}

/// [`turn`], POSTing `(path, body)` whenever `answer` returns one for an event (how a
/// client replies to a permission request while the turn waits for it).
async fn turn_answering(
    s: &Server,
    name: &str,
    session: &str,
    prompt: &str,
    mut answer: impl FnMut(&Value) -> Option<(String, Value)>,
) -> Vec<Value> {
    let response = s
        .client
        .get(s.url("/event"))
        .basic_auth("opencode", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let mut body = response.bytes_stream();
    let sent = s
        .post(
            &format!("/session/{session}/prompt_async"),
            json!({"parts": [{"type": "text", "text": prompt}],
                   "model": {"providerID": opencode::PROVIDER, "modelID": opencode::MODEL}}),
        )
        .await;
    assert!(sent.status().is_success(), "{sent:?}");
    let mut buffer = String::new();
    let mut events = Vec::new();
    let mut raw = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    'outer: loop {
        let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => panic!("/event ended; saw {:?}", types(&events)),
            Err(_) => panic!("no session.idle within 60 s; saw {:?}", types(&events)),
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            for line in frame.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    let value: Value = serde_json::from_str(data).unwrap();
                    raw.push_str(data);
                    raw.push('\n');
                    let idle = value["type"] == "session.idle"
                        && value["properties"]["sessionID"] == session;
                    if let Some((path, body)) = answer(&value) {
                        let replied = s.post(&path, body).await;
                        assert!(replied.status().is_success(), "{path}: {replied:?}");
                    }
                    events.push(value);
                    if idle {
                        break 'outer;
                    }
                }
            }
        }
    }
    if let Ok(dir) = std::env::var("RDEV_OPENCODE_FIXTURES") {
        std::fs::write(Path::new(&dir).join(format!("{name}.jsonl")), raw).unwrap();
    }
    events
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["type"].as_str()).collect()
}

async fn new_session(s: &Server) -> String {
    let created: Value = s.post("/session", json!({})).await.json().await.unwrap();
    created["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_reply_tool_call_and_error_stream_as_events() {
    let Some(s) = start().await else { return };
    let session = new_session(&s).await;

    s.fake.push(Reply::text("Hello from the fake"));
    let plain = turn(&s, "plain", &session, "say hello").await;
    let kinds = types(&plain);
    assert!(kinds.contains(&"message.part.updated"), "{kinds:?}");
    assert!(kinds.contains(&"session.status"), "{kinds:?}");
    let messages = s.get_json(&format!("/session/{session}/message")).await;
    let text = messages.to_string();
    assert!(text.contains("Hello from the fake"), "{text}");

    let input = shell_input("echo from-bash-$((6*7))", "marker");
    s.fake.push(Reply::tool_call("call_1", "bash", input));
    s.fake.push(Reply::text("done"));
    let tool = turn(&s, "tool", &session, "run it").await;
    let tool_parts: Vec<&Value> = tool
        .iter()
        .filter(|e| e["properties"]["part"]["type"] == "tool")
        .collect();
    assert!(
        tool_parts
            .iter()
            .any(|e| e["properties"]["part"]["state"]["status"] == "completed"),
        "{tool_parts:?}"
    );
    assert!(
        serde_json::to_string(&tool)
            .unwrap()
            .contains("from-bash-42")
    );

    s.fake
        .push(Reply::error(401, "invalid_api_key", "Incorrect API key"));
    let failed = turn(&s, "api_401", &session, "again").await;
    let kinds = types(&failed);
    assert!(
        kinds.contains(&"session.error")
            || serde_json::to_string(&failed)
                .unwrap()
                .contains("Incorrect API key"),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_while_streaming_ends_with_idle() {
    let Some(s) = start().await else { return };
    let session = new_session(&s).await;
    s.fake.push(Reply::slow_text(
        &["one ", "two ", "three ", "four ", "five ", "six"],
        Duration::from_millis(700),
    ));
    let s = std::sync::Arc::new(s);
    let aborter = {
        let s = s.clone();
        let session = session.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let r = s
                .post(&format!("/session/{session}/abort"), json!({}))
                .await;
            assert!(r.status().is_success());
        })
    };
    let events = turn(&s, "aborted", &session, "count slowly").await;
    aborter.await.unwrap();
    assert!(types(&events).contains(&"session.idle"));
}

/// The permission protocol the opencode provider (ABI 0.2.0) relies on: a session created
/// with an `ask` rule for `bash` makes the server ask even though the project's config allows
/// it (the session's rules come last and win), the request arrives as `permission.asked` with
/// the tool call's id and the command in its metadata, and `POST /permission/{id}/reply`
/// `once` runs the tool while `reject` with a message hands the message to the model instead.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_with_ask_rules_asks_and_the_reply_decides() {
    let Some(s) = start().await else { return };
    let created: Value = s
        .post(
            "/session",
            json!({"permission": [{"permission": "bash", "pattern": "*", "action": "ask"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let session = created["id"].as_str().unwrap().to_owned();
    let reply = |body: Value| {
        move |event: &Value| {
            (event["type"] == "permission.asked").then(|| {
                let id = event["properties"]["id"].as_str().unwrap();
                (format!("/permission/{id}/reply"), body.clone())
            })
        }
    };

    let input = shell_input("echo allowed-$((6*7))", "marker");
    s.fake.push(Reply::tool_call("call_allowed", "bash", input));
    s.fake.push(Reply::text("ran it"));
    let allowed = turn_answering(
        &s,
        "permission_once",
        &session,
        "run it",
        reply(json!({"reply": "once"})),
    )
    .await;
    let asked: Vec<&Value> = allowed
        .iter()
        .filter(|e| e["type"] == "permission.asked")
        .collect();
    assert_eq!(asked.len(), 1, "{:?}", types(&allowed));
    let ask = &asked[0]["properties"];
    assert_eq!(ask["permission"], "bash", "{ask}");
    assert_eq!(ask["sessionID"], session.as_str());
    assert_eq!(ask["tool"]["callID"], "call_allowed", "{ask}");
    assert!(
        ask["patterns"].to_string().contains("echo allowed"),
        "{ask}"
    );
    assert!(
        serde_json::to_string(&allowed)
            .unwrap()
            .contains("allowed-42"),
        "the tool ran after `once`"
    );

    let input = shell_input("echo rejected-$((6*7))", "marker");
    s.fake
        .push(Reply::tool_call("call_rejected", "bash", input));
    s.fake.push(Reply::text("understood"));
    let rejected = turn_answering(
        &s,
        "permission_reject",
        &session,
        "run another",
        reply(json!({"reply": "reject", "message": "not on main"})),
    )
    .await;
    assert!(
        !serde_json::to_string(&rejected)
            .unwrap()
            .contains("rejected-42"),
        "the tool did not run after `reject`"
    );
    let told = s
        .fake
        .stream_requests()
        .last()
        .map(|r| r.message_texts().join("\n"))
        .unwrap_or_default();
    assert!(
        told.contains("not on main"),
        "the model was told the message: {told}"
    );
}
