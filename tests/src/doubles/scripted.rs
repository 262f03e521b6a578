//! What the fake model APIs share: a queue of scripted replies (with a fallback once it is
//! empty), a record of every request, and start-up on a thread of their own. Each API's
//! double keeps only its wire format: routes, reply types and how it encodes them.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::thread_server::ThreadServer;

/// A request a fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Path and query, e.g. `/v1/messages?beta=true`.
    pub uri: String,
    pub headers: HeaderMap,
    /// The JSON body (`Value::Null` when it was not JSON).
    pub body: Value,
}

impl Recorded {
    /// True when the request asked for a streamed answer.
    pub fn wants_stream(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool) == Some(true)
    }

    /// Every text of the request's messages, in order: plain contents, text parts, tool
    /// results (Anthropic's `tool_result` blocks and OpenAI's `tool` messages) and tool
    /// inputs, for assertions about what history an agent sent.
    pub fn message_texts(&self) -> Vec<String> {
        let mut out = Vec::new();
        for message in self.body["messages"].as_array().into_iter().flatten() {
            collect_texts(&message["content"], &mut out);
        }
        out
    }

    /// Asserts that the request's message texts carry every one of `parts`: what a test
    /// checks to see that a conversation's history (or a follow-up) reached the model.
    pub fn assert_carries(&self, parts: &[&str]) {
        let texts = self.message_texts().join("\n");
        for part in parts {
            assert!(
                texts.contains(part),
                "{part:?} is not in what the model was told:\n{texts}"
            );
        }
    }

    /// Anthropic `tool_result` blocks of the request's messages as (tool use id, text,
    /// is_error): how a test sees that a denied tool call reached the model as a denial.
    pub fn tool_results(&self) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        for message in self.body["messages"].as_array().into_iter().flatten() {
            for block in message["content"].as_array().into_iter().flatten() {
                if block["type"] != "tool_result" {
                    continue;
                }
                let mut texts = Vec::new();
                collect_texts(&block["content"], &mut texts);
                out.push((
                    block["tool_use_id"].as_str().unwrap_or_default().to_owned(),
                    texts.join("\n"),
                    block["is_error"].as_bool().unwrap_or(false),
                ));
            }
        }
        out
    }
}

/// The input of a shell tool call (Claude Code's `Bash`, OpenCode's `bash`) that runs
/// `command`, as the tests script their fake models asking for one.
pub fn shell_input(command: &str, description: &str) -> Value {
    serde_json::json!({"command": command, "description": description})
}

/// [`shell_input`] creating `file` (`touch`): its effect shows in the workspace.
pub fn touch_input(file: &str) -> Value {
    shell_input(&format!("touch {file}"), "create the marker")
}

/// Every message text of `requests` (see [`Recorded::message_texts`]), one a line: all a
/// fake model was told.
pub fn all_texts(requests: &[Recorded]) -> String {
    requests
        .iter()
        .flat_map(Recorded::message_texts)
        .collect::<Vec<_>>()
        .join("\n")
}

fn collect_texts(content: &Value, out: &mut Vec<String>) {
    match content {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => {
            for item in items {
                match item["type"].as_str() {
                    Some("text") => out.extend(item["text"].as_str().map(str::to_owned)),
                    Some("tool_result") => collect_texts(&item["content"], out),
                    Some("tool_use") => out.push(item["input"].to_string()),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

struct Script<R> {
    queue: VecDeque<R>,
    /// Answer once the queue is empty.
    fallback: Option<R>,
    requests: Vec<Recorded>,
    counter: u64,
}

/// The script and record of one fake, shared with its handlers.
pub struct Shared<R>(Arc<Mutex<Script<R>>>);

impl<R> Clone for Shared<R> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<R: Clone> Shared<R> {
    fn lock(&self) -> MutexGuard<'_, Script<R>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a request and numbers it (from 1). When `scripted` is true the reply is the
    /// next queued one, else the fallback, else `None`; side requests the script does not
    /// cover pass false and get `None`.
    pub fn answer(
        &self,
        uri: String,
        headers: HeaderMap,
        body: &Bytes,
        scripted: impl FnOnce(&Recorded) -> bool,
    ) -> (Recorded, Option<R>, u64) {
        let recorded = Recorded {
            uri,
            headers,
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
        };
        let mut script = self.lock();
        script.requests.push(recorded.clone());
        script.counter += 1;
        let reply = if scripted(&recorded) {
            script.queue.pop_front().or_else(|| script.fallback.clone())
        } else {
            None
        };
        (recorded, reply, script.counter)
    }
}

/// How one model API's double is told apart from another's, besides its routes: the name
/// of its thread, the path its clients put after the address in their base URL, and which
/// of its requests are conversation turns (not side jobs).
pub struct Api {
    /// The server thread's name.
    pub name: &'static str,
    /// What a client's base URL adds to `http://<address>` (`""` or `"/v1"`).
    pub base_path: &'static str,
    /// Whether a recorded request is a turn of the conversation.
    pub conversation: fn(&Recorded) -> bool,
}

/// A scripted API error: the HTTP status, error type and message that each API renders in
/// its own error body.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub kind: String,
    pub message: String,
}

impl ApiError {
    /// An error answered with `status`, of type `kind`, saying `message`.
    pub fn new(status: u16, kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            kind: kind.into(),
            message: message.into(),
        }
    }

    /// The status to answer with (500 when the scripted one is not a valid status).
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// A fake model API: its router served on 127.0.0.1 (an ephemeral port, a thread and a
/// runtime of its own) plus its script. Dropping it stops the server.
pub struct ScriptedServer<R> {
    server: ThreadServer,
    shared: Shared<R>,
    api: Api,
}

impl<R: Clone + Send + 'static> ScriptedServer<R> {
    /// Serves `routes` (their handlers get the shared script as state) as the double of
    /// `api`: the one start-up of every fake model API.
    pub fn serve(api: Api, routes: Router<Shared<R>>) -> std::io::Result<Self> {
        let shared = Shared(Arc::new(Mutex::new(Script {
            queue: VecDeque::new(),
            fallback: None,
            requests: Vec::new(),
            counter: 0,
        })));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let app = routes.with_state(shared.clone());
        let server = ThreadServer::start(api.name, app, runtime)?;
        Ok(Self {
            server,
            shared,
            api,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The base URL to configure the client with (`ANTHROPIC_BASE_URL`, an OpenAI-compatible
    /// provider's `baseURL` ending in `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.addr(), self.api.base_path)
    }

    /// The conversation requests received so far (streamed, and no side job such as
    /// opencode's title generation).
    pub fn stream_requests(&self) -> Vec<Recorded> {
        let mut requests = self.requests();
        requests.retain(|r| (self.api.conversation)(r));
        requests
    }

    /// Queues a reply for the next scripted request.
    pub fn push(&self, reply: R) -> &Self {
        self.shared.lock().queue.push_back(reply);
        self
    }

    /// Sets what every scripted request gets once the queue is empty.
    pub fn set_fallback(&self, reply: R) -> &Self {
        self.shared.lock().fallback = Some(reply);
        self
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }
}

/// A `text/event-stream` response sending `frames` (each a complete SSE frame, blank line
/// included) with `delay` before each, plus `headers`.
pub fn sse_response(
    frames: Vec<String>,
    delay: Duration,
    headers: &[(&'static str, &'static str)],
) -> Response {
    let stream = futures::stream::unfold(frames.into_iter(), move |mut frames| async move {
        let frame = frames.next()?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((Ok::<_, Infallible>(Bytes::from(frame)), frames))
    });
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
