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

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::scripted::{Api, ApiError, ScriptedServer, Shared, sse_response};
pub use super::scripted::{Recorded, all_texts, shell_input, touch_input};

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
    Error(ApiError),
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
    pub fn slow_text(pieces: &[impl AsRef<str>], delay: Duration) -> Self {
        Self::Message {
            blocks: pieces
                .iter()
                .map(|p| Block::Text(p.as_ref().to_owned()))
                .collect(),
            stop_reason: "end_turn".into(),
            event_delay: delay,
        }
    }

    /// An API error with the given HTTP status, error type and message.
    pub fn error(status: u16, kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Error(ApiError::new(status, kind, message))
    }
}

/// The running fake: a [`ScriptedServer`] answering with [`Reply`]s (`push`,
/// `set_fallback`, `requests`). Dropping it stops the server.
pub type FakeAnthropic = ScriptedServer<Reply>;

/// The Messages API: its conversation turns are the streamed requests.
const API: Api = Api {
    name: "fake-anthropic",
    base_path: "",
    conversation: Recorded::wants_stream,
};

impl ScriptedServer<Reply> {
    /// Starts the server on 127.0.0.1 with an ephemeral port.
    pub fn start() -> std::io::Result<Self> {
        let routes = Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens));
        ScriptedServer::serve(API, routes.fallback(not_found))
    }
}

async fn not_found(OriginalUri(uri): OriginalUri) -> Response {
    let message = format!("fake anthropic: no route {uri}");
    error_response(&ApiError::new(404, "not_found_error", message))
}

async fn count_tokens(
    State(shared): State<Shared<Reply>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.answer(uri.to_string(), headers, &body, |_| false);
    axum::Json(json!({"input_tokens": 42})).into_response()
}

async fn messages(
    State(shared): State<Shared<Reply>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request, reply, n) = shared.answer(uri.to_string(), headers, &body, |_| true);
    let reply = reply.unwrap_or_else(|| Reply::text("fake anthropic: no scripted reply left"));
    let model = request.body["model"].as_str().unwrap_or("claude-fake");
    let id = format!("msg_fake_{n:04}");
    match reply {
        Reply::Error(error) => error_response(&error),
        Reply::Message {
            blocks,
            stop_reason,
            event_delay,
        } => {
            if request.wants_stream() {
                let frames = sse_events(&id, model, &blocks, &stop_reason)
                    .into_iter()
                    .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
                    .collect();
                sse_response(frames, event_delay, &[("request-id", "req_fake_stream")])
            } else {
                axum::Json(full_message(&id, model, &blocks, &stop_reason)).into_response()
            }
        }
    }
}

fn error_response(error: &ApiError) -> Response {
    let body = json!({"type": "error", "error": {"type": error.kind, "message": error.message}});
    (
        error.status_code(),
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
