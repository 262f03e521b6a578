//! A fake OpenAI-compatible chat-completions API for driving the real `opencode serve` in
//! tests (through its `@ai-sdk/openai-compatible` provider).
//!
//! It speaks the wire protocol that provider uses: `POST /v1/chat/completions` with
//! `stream: true` answered by server-sent `chat.completion.chunk` objects (a role chunk, text
//! `content` deltas, `tool_calls` deltas with the arguments split in two, a `finish_reason`
//! chunk, a usage chunk) and `data: [DONE]`; plain JSON `chat.completion` for non-streaming
//! requests (opencode's title generation); the API's JSON error bodies for scripted failures
//! (401 …); `GET /v1/models` for discovery. Each test scripts the replies as a queue; every
//! request is recorded. The server binds 127.0.0.1 on an ephemeral port, runs on its own
//! thread and stops when the [`FakeOpenAi`] is dropped.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::scripted::{Api, ApiError, ScriptedServer, Shared, sse_response};
pub use super::scripted::{Recorded, all_texts, shell_input, touch_input};

/// What the fake answers to one chat-completions request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// An assistant message: text pieces (each one content delta) and tool calls.
    Message {
        pieces: Vec<String>,
        tool_calls: Vec<ToolCall>,
        /// Pause before each SSE chunk, for tests that act while a stream is under way.
        chunk_delay: Duration,
    },
    /// An API error: the status with the OpenAI error body.
    Error(ApiError),
}

/// One scripted function call.
#[derive(Debug, Clone)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

impl Reply {
    /// A plain text answer ending the turn.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Message {
            pieces: vec![text.into()],
            tool_calls: Vec::new(),
            chunk_delay: Duration::ZERO,
        }
    }

    /// A request to run `tool` with `arguments`; the agent runs it and sends the result
    /// back in its next request.
    pub fn tool_call(id: impl Into<String>, tool: impl Into<String>, arguments: Value) -> Self {
        Self::Message {
            pieces: Vec::new(),
            tool_calls: vec![ToolCall {
                id: id.into(),
                name: tool.into(),
                arguments,
            }],
            chunk_delay: Duration::ZERO,
        }
    }

    /// A text answer streamed in `pieces` deltas with `delay` before every SSE chunk.
    pub fn slow_text(pieces: &[impl AsRef<str>], delay: Duration) -> Self {
        Self::Message {
            pieces: pieces.iter().map(|p| p.as_ref().to_owned()).collect(),
            tool_calls: Vec::new(),
            chunk_delay: delay,
        }
    }

    /// An API error with the given HTTP status, error type and message.
    pub fn error(status: u16, kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Error(ApiError::new(status, kind, message))
    }
}

/// The model id the fake reports in `/v1/models` and its chunks.
pub const MODEL: &str = "fake-model";

/// The running fake: a [`ScriptedServer`] answering with [`Reply`]s (`push`,
/// `set_fallback`, `requests`). Dropping it stops the server.
pub type FakeOpenAi = ScriptedServer<Reply>;

/// The chat-completions API under `/v1`: its conversation turns are the streamed requests
/// that are not opencode's side jobs.
const API: Api = Api {
    name: "fake-openai",
    base_path: "/v1",
    conversation: is_conversation,
};

impl ScriptedServer<Reply> {
    /// Starts the server on 127.0.0.1 with an ephemeral port.
    pub fn start() -> std::io::Result<Self> {
        let routes = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/models", get(models));
        ScriptedServer::serve(API, routes.fallback(not_found))
    }
}

/// A streamed request that is not one of opencode's side jobs.
fn is_conversation(request: &Recorded) -> bool {
    request.wants_stream() && !is_title_request(&request.body)
}

async fn not_found(OriginalUri(uri): OriginalUri) -> Response {
    let message = format!("fake openai: no route {uri}");
    error_response(&ApiError::new(404, "not_found_error", message))
}

async fn models() -> Response {
    axum::Json(json!({"object": "list", "data": [
        {"id": MODEL, "object": "model", "created": 0, "owned_by": "fake"}
    ]}))
    .into_response()
}

async fn completions(
    State(shared): State<Shared<Reply>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Side jobs (opencode's title generation, streamed or not) never consume the
    // conversation script.
    let (request, reply, n) = shared.answer(uri.to_string(), headers, &body, is_conversation);
    let reply = match reply {
        Some(reply) => reply,
        None if is_conversation(&request) => Reply::text("fake openai: no scripted reply left"),
        None => Reply::text("Fake title"),
    };
    let model = request.body["model"].as_str().unwrap_or(MODEL);
    let id = format!("chatcmpl-fake{n:04}");
    match reply {
        Reply::Error(error) => error_response(&error),
        Reply::Message {
            pieces,
            tool_calls,
            chunk_delay,
        } => {
            if request.wants_stream() {
                let frames = chunks(&id, model, &pieces, &tool_calls)
                    .into_iter()
                    .map(|data| format!("data: {data}\n\n"))
                    .collect();
                sse_response(frames, chunk_delay, &[])
            } else {
                axum::Json(full_completion(&id, model, &pieces.concat())).into_response()
            }
        }
    }
}

/// opencode asks for a session title with its own system prompt, in parallel with the turn.
fn is_title_request(body: &Value) -> bool {
    body["messages"]
        .as_array()
        .and_then(|m| m.first())
        .and_then(|m| m["content"].as_str())
        .is_some_and(|c| c.contains("title generator"))
}

fn error_response(error: &ApiError) -> Response {
    let (kind, message) = (&error.kind, &error.message);
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": kind}});
    (error.status_code(), axum::Json(body)).into_response()
}

const PROMPT_TOKENS: u64 = 12;

fn completion_tokens(pieces: &[String], calls: &[ToolCall]) -> u64 {
    let text: u64 = pieces
        .iter()
        .map(|p| p.split_whitespace().count() as u64)
        .sum();
    let tools: u64 = calls
        .iter()
        .map(|c| c.arguments.to_string().len() as u64 / 4 + 1)
        .sum();
    text + tools + 1
}

fn usage(pieces: &[String], calls: &[ToolCall]) -> Value {
    let out = completion_tokens(pieces, calls);
    json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": out,
           "total_tokens": PROMPT_TOKENS + out})
}

fn full_completion(id: &str, model: &str, text: &str) -> Value {
    json!({
        "id": id, "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": usage(&[text.to_owned()], &[]),
    })
}

/// The `data:` payloads of one streamed completion, `[DONE]` last.
fn chunks(id: &str, model: &str, pieces: &[String], calls: &[ToolCall]) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for piece in pieces {
        out.push(chunk(json!({"content": piece}), Value::Null));
    }
    for (index, call) in calls.iter().enumerate() {
        let args = call.arguments.to_string();
        let mid = args.len() / 2;
        let split = (0..=mid)
            .rev()
            .find(|i| args.is_char_boundary(*i))
            .unwrap_or(0);
        out.push(chunk(
            json!({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                   "function": {"name": call.name, "arguments": &args[..split]}}]}),
            Value::Null,
        ));
        out.push(chunk(
            json!({"tool_calls": [{"index": index,
                   "function": {"arguments": &args[split..]}}]}),
            Value::Null,
        ));
    }
    let finish = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    out.push(chunk(json!({}), json!(finish)));
    out.push(
        json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
               "choices": [], "usage": usage(pieces, calls)})
        .to_string(),
    );
    out.push("[DONE]".to_owned());
    out
}
