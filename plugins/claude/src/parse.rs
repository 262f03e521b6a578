//! Claude Code's `stream-json` output, one line at a time, mapped to provider events.
//!
//! Pure Rust with no bindings, so its tests run natively (`cargo test -p rdev-plugin-claude`)
//! over transcripts recorded from the real CLI (`tests/fixtures`). Nothing here can fail: an
//! unknown line type becomes a [`Event::Raw`], an unparseable line a [`Event::Warning`].

use serde_json::{Map, Value};

pub use rdev_sdk::v0_2::plain::{Event, Usage};

use crate::control::Control;

/// Token counts as the Messages API reports them.
fn usage_from_json(usage: &Value) -> Usage {
    let n = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cache_read_tokens: n("cache_read_input_tokens"),
        cache_write_tokens: n("cache_creation_input_tokens"),
    }
}

/// The CLI's final `result` line: it, not the exit code, decides the status.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub subtype: String,
    pub is_error: bool,
    pub result: Option<String>,
    pub session_id: Option<String>,
    pub num_turns: Option<u32>,
    pub duration_ms: Option<u64>,
    pub cost_usd: Option<f64>,
    pub usage: Option<Usage>,
    /// The CLI's `errors` list (e.g. "No conversation found with session ID: …"), without
    /// its internal diagnostics (those stay in `details` as `diagnostics`).
    pub errors: Vec<String>,
    /// The tool uses the CLI refused for want of a permission, in words.
    pub denials: Vec<String>,
    /// Every other field of the result line (permission denials, terminal reason, model
    /// usage …), passed through as the result's details.
    pub details: Map<String, Value>,
}

impl Outcome {
    /// Why the run failed, in the CLI's own words.
    pub fn error_message(&self) -> String {
        if !self.errors.is_empty() && self.result.is_none() {
            return self.errors.join("; ");
        }
        if let Some(text) = self.result.as_deref().filter(|t| !t.is_empty()) {
            return text.to_owned();
        }
        if !self.errors.is_empty() {
            return self.errors.join("; ");
        }
        match self.details.get("terminal_reason").and_then(Value::as_str) {
            Some(reason) => format!("claude ended with {} ({reason})", self.subtype),
            None => format!("claude ended with {}", self.subtype),
        }
    }
}

/// Longest excerpt of a malformed line quoted in its warning.
const EXCERPT_CHARS: usize = 200;

/// Turns lines into events and remembers what the run's result needs.
#[derive(Debug, Default)]
pub struct Parser {
    session_id: Option<String>,
    outcome: Option<Outcome>,
    /// The `error` events emitted so far: the result repeats the synthetic API-error
    /// message, and one error must give one event.
    errors_emitted: Vec<String>,
    /// `control_request`s not yet taken by [`Parser::take_controls`].
    controls: Vec<Control>,
    /// `result` lines seen: one per finished turn (the first prompt, then follow-ups).
    results: u32,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The session id seen last (init, any message, or the result).
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// The `result` line, once seen.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// The control requests seen since the last call, in order; each needs an answer.
    pub fn take_controls(&mut self) -> Vec<Control> {
        std::mem::take(&mut self.controls)
    }

    /// How many turns ended (`result` lines seen).
    pub fn results(&self) -> u32 {
        self.results
    }

    /// Parses one complete line, appending its events to `out`.
    pub fn feed(&mut self, line: &str, out: &mut Vec<Event>) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let value: Value = match serde_json::from_str(line) {
            Ok(value) => value,
            Err(e) => {
                out.push(Event::Warning(format!(
                    "unparseable output line from claude ({} bytes, {e}): {}",
                    line.len(),
                    excerpt(line)
                )));
                return;
            }
        };
        let Value::Object(obj) = value else {
            out.push(raw("unknown", &value));
            return;
        };
        if let Some(session) = obj.get("session_id").and_then(Value::as_str) {
            self.session_id = Some(session.to_owned());
        }
        let start = out.len();
        self.dispatch(obj, out);
        for event in &out[start..] {
            if let Event::Error(text) = event {
                self.errors_emitted.push(text.clone());
            }
        }
    }

    fn dispatch(&mut self, obj: Map<String, Value>, out: &mut Vec<Event>) {
        let kind = obj.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "system" => system(&obj, out),
            "assistant" => assistant(&obj, out),
            "user" => user(&obj, out),
            "stream_event" => stream_event(&obj, out),
            "result" => self.result(obj, out),
            "control_request" => match Control::from_json(&obj) {
                Some(control) => self.controls.push(control),
                None => out.push(raw("control_request", &Value::Object(obj))),
            },
            // The CLI's answers to requests of ours (rdev sends none) and its withdrawals of
            // a request already answered or being answered.
            "control_response" | "control_cancel_request" => {}
            "" => out.push(raw("unknown", &Value::Object(obj))),
            other => {
                let kind = other.to_owned();
                out.push(raw(&kind, &Value::Object(obj)));
            }
        }
    }

    fn result(&mut self, mut obj: Map<String, Value>, out: &mut Vec<Event>) {
        let (diagnostics, errors): (Vec<String>, Vec<String>) =
            match obj.remove("errors").unwrap_or(Value::Null) {
                Value::Array(items) => items
                    .into_iter()
                    .map(|e| match e {
                        Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .partition(|e| is_internal_diagnostic(e)),
                _ => Default::default(),
            };
        if !diagnostics.is_empty() {
            obj.insert("diagnostics".into(), diagnostics.into());
        }
        let denials = denials(obj.get("permission_denials"));
        let mut take = |key: &str| obj.remove(key).unwrap_or(Value::Null);
        let usage = Some(take("usage"))
            .filter(Value::is_object)
            .map(|u| usage_from_json(&u));
        let cost_usd = take("total_cost_usd").as_f64();
        let outcome = Outcome {
            subtype: take("subtype").as_str().unwrap_or("unknown").to_owned(),
            is_error: take("is_error").as_bool().unwrap_or(false),
            result: take("result").as_str().map(str::to_owned),
            session_id: take("session_id").as_str().map(str::to_owned),
            num_turns: take("num_turns")
                .as_u64()
                .and_then(|n| u32::try_from(n).ok()),
            duration_ms: take("duration_ms").as_u64(),
            cost_usd,
            usage,
            errors,
            denials,
            details: {
                obj.remove("type");
                obj.remove("uuid");
                obj
            },
        };
        if let Some(usage) = outcome.usage {
            out.push(Event::Usage { usage, cost_usd });
        }
        for denial in &outcome.denials {
            out.push(Event::Warning(denial.clone()));
        }
        let aborted = outcome
            .details
            .get("terminal_reason")
            .and_then(Value::as_str)
            .is_some_and(|reason| reason.starts_with("aborted"));
        let message = outcome.error_message();
        // An abort is rdev's own interrupt (a cancel or timeout): the host reports it.
        if outcome.is_error && !aborted && !self.errors_emitted.contains(&message) {
            out.push(Event::Error(message));
        }
        if let Some(session) = &outcome.session_id {
            self.session_id = Some(session.clone());
        }
        self.outcome = Some(outcome);
        self.results += 1;
    }
}

/// The CLI's notes for its own developers (`[ede_diagnostic] result_type=…`): kept in the
/// result's details, never shown as the error.
fn is_internal_diagnostic(error: &str) -> bool {
    error
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .is_some_and(|(tag, _)| {
            !tag.is_empty() && tag.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
}

/// The result's `permission_denials` (`{tool_name, tool_use_id, tool_input}`) in words.
fn denials(list: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(items)) = list else {
        return Vec::new();
    };
    items
        .iter()
        .map(|denial| {
            let tool = denial["tool_name"].as_str().unwrap_or("a tool");
            let input = &denial["tool_input"];
            let what = ["command", "file_path", "path", "url", "pattern"]
                .iter()
                .find_map(|key| input[*key].as_str())
                .map(|v| format!(" ({})", excerpt(v)))
                .unwrap_or_default();
            format!(
                "permission denied: claude may not use {tool}{what}; allow it with the \
                 allowed_tools option (e.g. [\"{tool}\"]) or a permission_mode"
            )
        })
        .collect()
}

fn excerpt(line: &str) -> String {
    let mut chars = line.chars();
    let head: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

fn raw(kind: &str, value: &Value) -> Event {
    Event::Raw {
        kind: kind.to_owned(),
        json: value.to_string(),
    }
}

fn str_field(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn system(obj: &Map<String, Value>, out: &mut Vec<Event>) {
    match obj.get("subtype").and_then(Value::as_str) {
        Some("init") => out.push(Event::Init {
            session_id: str_field(obj, "session_id"),
            model: str_field(obj, "model"),
            cwd: str_field(obj, "cwd"),
            tools: obj
                .get("tools")
                .and_then(Value::as_array)
                .map(|tools| {
                    tools
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            version: str_field(obj, "claude_code_version"),
        }),
        Some("api_retry") => {
            let field = |key: &str| obj.get(key).filter(|v| !v.is_null());
            let mut text = String::from("API request failed");
            match (field("error_status"), field("error")) {
                (Some(status), Some(Value::String(error))) => {
                    text.push_str(&format!(" (HTTP {status}, {error})"));
                }
                (Some(status), _) => text.push_str(&format!(" (HTTP {status})")),
                (None, Some(Value::String(error))) => text.push_str(&format!(" ({error})")),
                _ => {}
            }
            if let (Some(attempt), Some(max)) = (field("attempt"), field("max_retries")) {
                text.push_str(&format!("; retry {attempt} of {max}"));
            }
            if let Some(ms) = field("retry_delay_ms").and_then(Value::as_f64) {
                text.push_str(&format!(" in {:.2} s", ms / 1000.0));
            }
            out.push(Event::Warning(text));
        }
        Some(subtype) => out.push(raw(
            &format!("system.{subtype}"),
            &Value::Object(obj.clone()),
        )),
        None => out.push(raw("system", &Value::Object(obj.clone()))),
    }
}

fn assistant(obj: &Map<String, Value>, out: &mut Vec<Event>) {
    let message = obj.get("message").unwrap_or(&Value::Null);
    // The CLI reports API failures as a message of its own making, not the model's.
    let synthetic = obj.get("is_api_error_message").and_then(Value::as_bool) == Some(true)
        || message.get("model").and_then(Value::as_str) == Some("<synthetic>");
    let Some(blocks) = message.get("content").and_then(Value::as_array) else {
        out.push(raw("assistant", &Value::Object(obj.clone())));
        return;
    };
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = block["text"].as_str().unwrap_or("").to_owned();
                out.push(if synthetic {
                    Event::Error(text)
                } else {
                    Event::Message {
                        text,
                        partial: false,
                    }
                });
            }
            Some("thinking") => out.push(Event::Thinking {
                text: block["thinking"].as_str().unwrap_or("").to_owned(),
                partial: false,
            }),
            Some("tool_use") | Some("server_tool_use") => out.push(Event::ToolUse {
                id: block["id"].as_str().unwrap_or("").to_owned(),
                name: block["name"].as_str().unwrap_or("").to_owned(),
                input_json: block.get("input").unwrap_or(&Value::Null).to_string(),
            }),
            Some(other) => out.push(raw(&format!("assistant.{other}"), block)),
            None => out.push(raw("assistant.block", block)),
        }
    }
}

fn user(obj: &Map<String, Value>, out: &mut Vec<Event>) {
    let content = obj.get("message").and_then(|m| m.get("content"));
    let Some(blocks) = content.and_then(Value::as_array) else {
        out.push(raw("user", &Value::Object(obj.clone())));
        return;
    };
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("tool_result") => out.push(Event::ToolResult {
                id: block["tool_use_id"].as_str().unwrap_or("").to_owned(),
                content: tool_result_text(block.get("content").unwrap_or(&Value::Null)),
                is_error: block.get("is_error").and_then(Value::as_bool) == Some(true),
            }),
            Some(other) => out.push(raw(&format!("user.{other}"), block)),
            None => out.push(raw("user.block", block)),
        }
    }
}

/// A tool result's content is a string or a list of blocks; text blocks are joined and
/// anything else (images) is kept as JSON.
fn tool_result_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item.get("text").and_then(Value::as_str) {
                Some(text) if item["type"] == "text" => text.to_owned(),
                _ => item.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

/// Partial messages (`--include-partial-messages`): text and thinking deltas become partial
/// events. The framing events (message_start, block start/stop, input_json_delta …) are
/// dropped: the complete `assistant` line that follows carries the same content.
fn stream_event(obj: &Map<String, Value>, out: &mut Vec<Event>) {
    let Some(event) = obj.get("event") else {
        out.push(raw("stream_event", &Value::Object(obj.clone())));
        return;
    };
    match event.get("type").and_then(Value::as_str) {
        Some("content_block_delta") => {
            let delta = &event["delta"];
            match delta.get("type").and_then(Value::as_str) {
                Some("text_delta") => out.push(Event::Message {
                    text: delta["text"].as_str().unwrap_or("").to_owned(),
                    partial: true,
                }),
                Some("thinking_delta") => out.push(Event::Thinking {
                    text: delta["thinking"].as_str().unwrap_or("").to_owned(),
                    partial: true,
                }),
                Some("input_json_delta") | Some("signature_delta") => {}
                _ => out.push(raw("stream_event", event)),
            }
        }
        Some(
            "message_start"
            | "message_delta"
            | "message_stop"
            | "content_block_start"
            | "content_block_stop"
            | "ping",
        ) => {}
        _ => out.push(raw("stream_event", event)),
    }
}

/// Reassembles lines the host delivered in `partial` pieces (it cuts over-long lines at its
/// line cap), up to `max_bytes`; a longer line is dropped and reported by its size.
#[derive(Debug)]
pub struct LineJoiner {
    buf: String,
    max_bytes: usize,
    dropped: usize,
}

/// What one piece completed.
#[derive(Debug, PartialEq, Eq)]
pub enum Joined {
    /// A complete line.
    Line(String),
    /// More pieces follow.
    Pending,
    /// A complete line longer than the limit was dropped; its size in bytes.
    TooLong(usize),
}

impl LineJoiner {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            buf: String::new(),
            max_bytes,
            dropped: 0,
        }
    }

    /// Adds a piece; `partial` says the line goes on in the next piece.
    pub fn push(&mut self, text: String, partial: bool) -> Joined {
        if self.dropped > 0 || self.buf.len() + text.len() > self.max_bytes {
            self.dropped += self.buf.len() + text.len();
            self.buf = String::new();
            if partial {
                return Joined::Pending;
            }
            return Joined::TooLong(std::mem::take(&mut self.dropped));
        }
        if !partial && self.buf.is_empty() {
            return Joined::Line(text);
        }
        self.buf.push_str(&text);
        if partial {
            Joined::Pending
        } else {
            Joined::Line(std::mem::take(&mut self.buf))
        }
    }

    /// A line left unfinished when the stream ended.
    pub fn finish(&mut self) -> Option<String> {
        self.dropped = 0;
        Some(std::mem::take(&mut self.buf)).filter(|b| !b.is_empty())
    }
}

#[cfg(test)]
mod tests;
