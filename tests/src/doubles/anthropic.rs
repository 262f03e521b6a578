//! A fake Anthropic Messages API for driving the real `claude` CLI in tests.
//!
//! It speaks the wire protocol the CLI uses: `POST /v1/messages?beta=true` with `stream: true`
//! answered by the Messages API's server-sent events (`message_start`,
//! `content_block_start/delta/stop` for text, thinking and tool_use blocks, `message_delta`
//! with usage and stop reason, `message_stop`), plain JSON for non-streaming requests, and the
//! API's JSON error bodies for scripted failures (500, 529, 401 …). Each test scripts the
//! replies as a queue; every request is recorded. The server binds 127.0.0.1 on an ephemeral
//! port, runs on its own thread (so sync and async tests can use it alike) and stops when the
//! [`FakeAnthropic`] is dropped.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::thread_server::ThreadServer;

/// One content block of a scripted assistant message.
#[derive(Debug, Clone)]
pub enum Block {
    Text(String),
    Thinking(String),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

/// What the fake answers to one `/v1/messages` request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// An assistant message, streamed as SSE when the request asked for a stream.
    Message {
        blocks: Vec<Block>,
        stop_reason: String,
        /// Pause before each SSE event, for tests that act while a stream is under way.
        event_delay: Duration,
    },
    /// An API error: the status with the Messages API's error body.
    Error {
        status: u16,
        kind: String,
        message: String,
    },
}

impl Reply {
    /// A plain text answer ending the turn.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Message {
            blocks: vec![Block::Text(text.into())],
            stop_reason: "end_turn".into(),
            event_delay: Duration::ZERO,
        }
    }

    /// A thinking block followed by a text answer.
    pub fn thinking_then_text(thinking: impl Into<String>, text: impl Into<String>) -> Self {
        Self::Message {
            blocks: vec![Block::Thinking(thinking.into()), Block::Text(text.into())],
            stop_reason: "end_turn".into(),
            event_delay: Duration::ZERO,
        }
    }

    /// A request to run `tool` with `input`; the CLI runs it and sends the result back in
    /// its next request.
    pub fn tool_use(id: impl Into<String>, tool: impl Into<String>, input: Value) -> Self {
        Self::Message {
            blocks: vec![Block::ToolUse {
                id: id.into(),
                name: tool.into(),
                input,
            }],
            stop_reason: "tool_use".into(),
            event_delay: Duration::ZERO,
        }
    }

    /// A text answer streamed in `pieces` deltas with `delay` before every SSE event.
    pub fn slow_text(pieces: &[&str], delay: Duration) -> Self {
        Self::Message {
            blocks: pieces
                .iter()
                .map(|p| Block::Text((*p).to_owned()))
                .collect(),
            stop_reason: "end_turn".into(),
            event_delay: delay,
        }
    }

    /// An API error with the given HTTP status, error type and message.
    pub fn error(status: u16, kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Error {
            status,
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Path and query, e.g. `/v1/messages?beta=true`.
    pub uri: String,
    pub headers: HeaderMap,
    /// The JSON body (`Value::Null` when it was not JSON).
    pub body: Value,
}

impl Recorded {
    /// True for the CLI's main conversation requests (streamed).
    pub fn is_stream(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool) == Some(true)
    }

    /// Every text fragment of the request's messages, in order, for assertions about what
    /// history the CLI sent.
    pub fn message_texts(&self) -> Vec<String> {
        let mut out = Vec::new();
        for message in self.body["messages"].as_array().into_iter().flatten() {
            collect_texts(&message["content"], &mut out);
        }
        out
    }
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

#[derive(Default)]
struct Script {
    queue: VecDeque<Reply>,
    /// Answer once the queue is empty.
    fallback: Option<Reply>,
    requests: Vec<Recorded>,
    message_counter: u64,
}

type Shared = Arc<Mutex<Script>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Script> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The running fake. Dropping it stops the server.
pub struct FakeAnthropic {
    server: ThreadServer,
    shared: Shared,
}

impl FakeAnthropic {
    /// Starts the server on 127.0.0.1 with an ephemeral port.
    pub fn start() -> std::io::Result<Self> {
        let shared: Shared = Arc::default();
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .fallback(not_found)
            .with_state(shared.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let server = ThreadServer::start("fake-anthropic", app, runtime)?;
        Ok(Self { server, shared })
    }

    /// The base URL to hand the CLI as `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Queues a reply for the next unanswered request.
    pub fn push(&self, reply: Reply) -> &Self {
        lock(&self.shared).queue.push_back(reply);
        self
    }

    /// Sets what every request gets once the queue is empty (default: a text reply saying
    /// nothing was scripted, so a test that under-scripts sees it in the transcript).
    pub fn set_fallback(&self, reply: Reply) -> &Self {
        lock(&self.shared).fallback = Some(reply);
        self
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared).requests.clone()
    }

    /// The streamed (conversation) requests received so far.
    pub fn stream_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_stream)
            .collect()
    }
}

async fn not_found(OriginalUri(uri): OriginalUri) -> Response {
    error_response(
        404,
        "not_found_error",
        &format!("fake anthropic: no route {uri}"),
    )
}

async fn count_tokens(
    State(shared): State<Shared>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    lock(&shared).requests.push(Recorded {
        uri: uri.to_string(),
        headers,
        body,
    });
    axum::Json(json!({"input_tokens": 42})).into_response()
}

async fn messages(
    State(shared): State<Shared>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    let model = body["model"].as_str().unwrap_or("claude-fake").to_owned();
    let (reply, id) = {
        let mut script = lock(&shared);
        script.requests.push(Recorded {
            uri: uri.to_string(),
            headers,
            body,
        });
        script.message_counter += 1;
        let reply = script
            .queue
            .pop_front()
            .or_else(|| script.fallback.clone())
            .unwrap_or_else(|| Reply::text("fake anthropic: no scripted reply left"));
        (reply, format!("msg_fake_{:04}", script.message_counter))
    };
    match reply {
        Reply::Error {
            status,
            kind,
            message,
        } => error_response(status, &kind, &message),
        Reply::Message {
            blocks,
            stop_reason,
            event_delay,
        } => {
            if stream {
                sse_response(sse_events(&id, &model, &blocks, &stop_reason), event_delay)
            } else {
                axum::Json(full_message(&id, &model, &blocks, &stop_reason)).into_response()
            }
        }
    }
}

fn error_response(status: u16, kind: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    (
        status,
        [("request-id", "req_fake_error"), ("x-should-retry", "true")],
        axum::Json(body),
    )
        .into_response()
}

fn output_tokens(blocks: &[Block]) -> u64 {
    blocks
        .iter()
        .map(|b| match b {
            Block::Text(t) | Block::Thinking(t) => t.split_whitespace().count() as u64 + 1,
            Block::ToolUse { input, .. } => input.to_string().len() as u64 / 4 + 1,
        })
        .sum()
}

const INPUT_TOKENS: u64 = 12;

fn block_json(block: &Block) -> Value {
    match block {
        Block::Text(text) => json!({"type": "text", "text": text}),
        Block::Thinking(thinking) => {
            json!({"type": "thinking", "thinking": thinking, "signature": "fake-signature"})
        }
        Block::ToolUse { id, name, input } => {
            json!({"type": "tool_use", "id": id, "name": name, "input": input})
        }
    }
}

fn full_message(id: &str, model: &str, blocks: &[Block], stop_reason: &str) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks.iter().map(block_json).collect::<Vec<_>>(),
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {
            "input_tokens": INPUT_TOKENS,
            "output_tokens": output_tokens(blocks),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0
        }
    })
}

/// The SSE events of one streamed message, as (event name, data) pairs.
fn sse_events(
    id: &str,
    model: &str,
    blocks: &[Block],
    stop_reason: &str,
) -> Vec<(&'static str, Value)> {
    let mut events = vec![(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        }}),
    )];
    // Adjacent text blocks of a slow reply are deltas of one block, as the real API streams.
    let mut index = 0usize;
    let mut open_text = false;
    for block in blocks {
        match block {
            Block::Text(text) => {
                if !open_text {
                    events.push((
                        "content_block_start",
                        json!({"type": "content_block_start", "index": index,
                               "content_block": {"type": "text", "text": ""}}),
                    ));
                    open_text = true;
                }
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "text_delta", "text": text}}),
                ));
                continue;
            }
            Block::Thinking(_) | Block::ToolUse { .. } if open_text => {
                events.push((
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": index}),
                ));
                open_text = false;
                index += 1;
            }
            _ => {}
        }
        match block {
            Block::Thinking(thinking) => {
                events.push((
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index,
                           "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
                ));
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "thinking_delta", "thinking": thinking}}),
                ));
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "signature_delta", "signature": "fake-signature"}}),
                ));
            }
            Block::ToolUse { id, name, input } => {
                events.push((
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index,
                           "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                ));
                let text = input.to_string();
                let mid = text.len() / 2;
                let split = (0..=mid)
                    .rev()
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(0);
                for part in [&text[..split], &text[split..]] {
                    events.push((
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index,
                               "delta": {"type": "input_json_delta", "partial_json": part}}),
                    ));
                }
            }
            Block::Text(_) => unreachable!("text blocks continue above"),
        }
        events.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    if open_text {
        events.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push((
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": stop_reason, "stop_sequence": null},
               "usage": {"output_tokens": output_tokens(blocks)}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    events
}

fn sse_response(events: Vec<(&'static str, Value)>, delay: Duration) -> Response {
    let stream = futures::stream::unfold(events.into_iter(), move |mut events| async move {
        let (name, data) = events.next()?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let frame = format!("event: {name}\ndata: {data}\n\n");
        Some((Ok::<_, Infallible>(Bytes::from(frame)), events))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("request-id", "req_fake_stream")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
