//! OpenCode's `/event` stream (`data:` lines of `{"id","type","properties"}`) mapped to
//! provider events, and the final `GET /session/{id}/message` answer mapped to a turn's
//! outcome.
//!
//! Pure Rust with no bindings, so its tests run natively (`cargo test -p
//! rdev-plugin-opencode`) over streams recorded from the real server (`tests/fixtures`).
//! Nothing here can fail: an unknown event type of the session becomes an [`Event::Raw`], an
//! unparseable line a [`Event::Warning`].

use std::collections::{HashMap, HashSet};

use serde_json::Value;

pub use rdev_sdk::v0_2::plain::{Event, Usage};

use crate::permission::Ask;

/// Token counts as OpenCode reports them (`tokens` of a message or a step).
fn usage_from_json(tokens: &Value) -> Usage {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    Usage {
        input_tokens: n(&tokens["input"]),
        // Reasoning tokens are billed as output.
        output_tokens: n(&tokens["output"]) + n(&tokens["reasoning"]),
        cache_read_tokens: n(&tokens["cache"]["read"]),
        cache_write_tokens: n(&tokens["cache"]["write"]),
    }
}

/// Longest excerpt of a malformed line quoted in its warning.
const EXCERPT_CHARS: usize = 200;

/// What a part id streams deltas into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartKind {
    Text,
    Reasoning,
}

/// Turns `/event` payloads of one session into events and notices the turn's end.
#[derive(Debug)]
pub struct Mapper {
    session_id: String,
    /// Retries of a failed model call that OpenCode may make before the turn is given up.
    max_retries: u32,
    /// Why the turn was given up: OpenCode retried more often than `max_retries`.
    gave_up: Option<String>,
    /// Messages the user sent: their text parts echo the prompt and are not output.
    user_messages: HashSet<String>,
    part_kinds: HashMap<String, PartKind>,
    /// Tool calls whose `tool-use` event was emitted.
    tools_announced: HashSet<String>,
    /// Tool calls whose result was emitted.
    tools_finished: HashSet<String>,
    /// Text and reasoning parts whose complete text was emitted.
    parts_finished: HashSet<String>,
    /// Complete inputs of the tool calls seen, by call id: what a permission request of
    /// the call shows the host.
    tool_inputs: HashMap<String, Value>,
    /// Sessions the agent started under this one (`task`): their permission requests hold
    /// this turn too, so they are answered like its own.
    children: HashSet<String>,
    /// Permission requests waiting for [`Mapper::take_asks`].
    asks: Vec<Ask>,
    idle: bool,
    busy_seen: bool,
    error: Option<String>,
}

/// A text for an OpenCode error object (`{"name", "data": {"message", "statusCode"}}`).
pub fn describe_error(error: &Value) -> String {
    let name = error["name"].as_str().unwrap_or("Error");
    let message = error["data"]["message"]
        .as_str()
        .or_else(|| error["message"].as_str())
        .unwrap_or("");
    let status = error["data"]["statusCode"].as_u64();
    match (message.is_empty(), status) {
        (true, None) => name.to_owned(),
        (true, Some(code)) => format!("{name} (HTTP {code})"),
        (false, None) => format!("{name}: {message}"),
        (false, Some(code)) => format!("{name} (HTTP {code}): {message}"),
    }
}

impl Mapper {
    pub fn new(session_id: impl Into<String>) -> Self {
        Self {
            session_id: session_id.into(),
            max_retries: crate::options::DEFAULT_MAX_RETRIES,
            gave_up: None,
            user_messages: HashSet::new(),
            part_kinds: HashMap::new(),
            tools_announced: HashSet::new(),
            tools_finished: HashSet::new(),
            parts_finished: HashSet::new(),
            tool_inputs: HashMap::new(),
            children: HashSet::new(),
            asks: Vec::new(),
            idle: false,
            busy_seen: false,
            error: None,
        }
    }

    /// True once `session.idle` arrived for the session after it was busy: the turn is over
    /// on the server (its messages still have to be fetched).
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    /// Bounds OpenCode's retries of a failing model call (its own go on for minutes).
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Why the turn should be given up: OpenCode is retrying beyond the bound.
    pub fn gave_up(&self) -> Option<&str> {
        self.gave_up.as_deref()
    }

    /// A follow-up prompt was sent after `session.idle`: wait for that turn's end too.
    pub fn expect_turn(&mut self) {
        self.idle = false;
        self.busy_seen = false;
    }

    /// The permission requests seen since the last call, in order. Each one holds its tool
    /// call on the server until it is answered.
    pub fn take_asks(&mut self) -> Vec<Ask> {
        std::mem::take(&mut self.asks)
    }

    /// The complete input of tool call `call`, when the stream showed it.
    pub fn tool_input(&self, call: &str) -> Option<&Value> {
        self.tool_inputs.get(call)
    }

    /// The session's or the model's error, if one was reported.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Parses one `data:` payload, appending its events to `out`. Events of other sessions
    /// and the server's own (connection, heartbeat, plugin catalogue) are left out.
    pub fn feed(&mut self, data: &str, out: &mut Vec<Event>) {
        let value: Value = match serde_json::from_str(data) {
            Ok(value) => value,
            Err(e) => {
                let excerpt: String = data.chars().take(EXCERPT_CHARS).collect();
                out.push(Event::Warning(format!(
                    "unparseable opencode event ({e}): {excerpt}"
                )));
                return;
            }
        };
        let kind = value["type"].as_str().unwrap_or("");
        let props = &value["properties"];
        if matches!(kind, "session.created" | "session.updated") {
            self.adopt_child(&props["info"]);
        }
        let session = props["sessionID"]
            .as_str()
            .or_else(|| props["info"]["sessionID"].as_str())
            .or_else(|| props["part"]["sessionID"].as_str());
        if matches!(kind, "permission.asked" | "permission.updated")
            && session.is_some_and(|s| self.children.contains(s))
        {
            self.ask(props, out);
            return;
        }
        if session != Some(self.session_id.as_str()) {
            return;
        }
        match kind {
            "message.part.delta" => self.part_delta(props, out),
            "message.part.updated" => self.part_updated(props, out),
            "message.updated" => self.message_updated(props, out),
            "session.status" => self.status(props, out),
            "session.idle" => {
                // An idle from before the prompt was taken (or a second one after an abort)
                // does not end anything the provider waits for.
                if self.busy_seen {
                    self.idle = true;
                }
            }
            "session.error" => {
                let text = describe_error(&props["error"]);
                out.push(Event::Error(text.clone()));
                self.error.get_or_insert(text);
            }
            "permission.asked" | "permission.updated" => self.ask(props, out),
            // session.diff, session.updated, todo.updated, file.edited … pass through.
            _ => out.push(raw(kind, props)),
        }
    }

    /// Remembers a session whose parent is this one or one of its children.
    fn adopt_child(&mut self, info: &Value) {
        if let (Some(id), Some(parent)) = (info["id"].as_str(), info["parentID"].as_str())
            && (parent == self.session_id || self.children.contains(parent))
        {
            self.children.insert(id.to_owned());
        }
    }

    fn ask(&mut self, props: &Value, out: &mut Vec<Event>) {
        match Ask::parse(props) {
            Ok(ask) => self.asks.push(ask),
            Err(why) => out.push(Event::Warning(format!(
                "an opencode permission request rdev cannot answer: {why}"
            ))),
        }
    }

    fn part_delta(&mut self, props: &Value, out: &mut Vec<Event>) {
        let (Some(part), Some(delta)) = (props["partID"].as_str(), props["delta"].as_str()) else {
            return;
        };
        if props["field"].as_str().is_some_and(|f| f != "text")
            || props["messageID"]
                .as_str()
                .is_some_and(|m| self.user_messages.contains(m))
            || delta.is_empty()
        {
            return;
        }
        let text = delta.to_owned();
        out.push(match self.part_kinds.get(part) {
            Some(PartKind::Reasoning) => Event::Thinking {
                text,
                partial: true,
            },
            _ => Event::Message {
                text,
                partial: true,
            },
        });
    }

    fn part_updated(&mut self, props: &Value, out: &mut Vec<Event>) {
        let part = &props["part"];
        let id = part["id"].as_str().unwrap_or("").to_owned();
        if part["messageID"]
            .as_str()
            .is_some_and(|m| self.user_messages.contains(m))
        {
            return;
        }
        match part["type"].as_str().unwrap_or("") {
            kind @ ("text" | "reasoning") => {
                let pk = if kind == "text" {
                    PartKind::Text
                } else {
                    PartKind::Reasoning
                };
                self.part_kinds.insert(id.clone(), pk);
                let done = !part["time"]["end"].is_null();
                let text = part["text"].as_str().unwrap_or("");
                if done && !text.is_empty() && self.parts_finished.insert(id) {
                    let text = text.to_owned();
                    out.push(match pk {
                        PartKind::Text => Event::Message {
                            text,
                            partial: false,
                        },
                        PartKind::Reasoning => Event::Thinking {
                            text,
                            partial: false,
                        },
                    });
                }
            }
            "tool" => self.tool(part, out),
            "step-finish" => {
                out.push(Event::Usage {
                    usage: usage_from_json(&part["tokens"]),
                    cost_usd: part["cost"].as_f64(),
                });
            }
            other => out.push(raw(&format!("part.{other}"), part)),
        }
    }

    fn tool(&mut self, part: &Value, out: &mut Vec<Event>) {
        let call = part["callID"]
            .as_str()
            .or_else(|| part["id"].as_str())
            .unwrap_or("")
            .to_owned();
        let name = part["tool"].as_str().unwrap_or("tool");
        let state = &part["state"];
        let status = state["status"].as_str().unwrap_or("");
        // `pending` carries a partial input; from `running` on the input is complete.
        if status != "pending" && !self.tools_announced.contains(&call) {
            self.tools_announced.insert(call.clone());
            self.tool_inputs
                .insert(call.clone(), state["input"].clone());
            out.push(Event::ToolUse {
                id: call.clone(),
                name: name.to_owned(),
                input_json: state["input"].to_string(),
            });
        }
        let result = match status {
            "completed" => Some((state["output"].as_str().unwrap_or("").to_owned(), false)),
            "error" => Some((state["error"].as_str().unwrap_or("").to_owned(), true)),
            _ => None,
        };
        if let Some((content, is_error)) = result
            && self.tools_finished.insert(call.clone())
        {
            out.push(Event::ToolResult {
                id: call,
                content,
                is_error,
            });
        }
    }

    fn message_updated(&mut self, props: &Value, out: &mut Vec<Event>) {
        let info = &props["info"];
        let id = info["id"].as_str().unwrap_or("");
        if info["role"] == "user" {
            self.user_messages.insert(id.to_owned());
            return;
        }
        if !info["error"].is_null() {
            let text = describe_error(&info["error"]);
            if self.error.as_deref() != Some(text.as_str()) {
                out.push(Event::Error(text.clone()));
                self.error = Some(text);
            }
        }
    }

    fn status(&mut self, props: &Value, out: &mut Vec<Event>) {
        let status = &props["status"];
        match status["type"].as_str().unwrap_or("") {
            "busy" => self.busy_seen = true,
            "retry" => {
                self.busy_seen = true;
                let attempt = status["attempt"].as_u64().unwrap_or(0);
                let message = status["message"]
                    .as_str()
                    .unwrap_or("the model call failed");
                if attempt > u64::from(self.max_retries) {
                    self.gave_up = Some(format!(
                        "the model call failed after {} {}: {message}",
                        self.max_retries,
                        if self.max_retries == 1 {
                            "retry"
                        } else {
                            "retries"
                        }
                    ));
                } else {
                    let wait = status["next"]
                        .as_u64()
                        .and_then(seconds_until)
                        .map(|s| format!(" in {s:.2} s"))
                        .unwrap_or_default();
                    out.push(Event::Warning(format!(
                        "the model call failed; retry {attempt} of {}{wait}: {message}",
                        self.max_retries
                    )));
                }
            }
            _ => {}
        }
        out.push(raw("session.status", props));
    }
}

/// Seconds from now until `epoch_ms` (OpenCode's `next` is a wall-clock time); `None` when
/// the clock is unavailable.
fn seconds_until(epoch_ms: u64) -> Option<f64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis();
    let left = u128::from(epoch_ms).saturating_sub(now);
    Some(left as f64 / 1000.0)
}

fn raw(kind: &str, value: &Value) -> Event {
    Event::Raw {
        kind: kind.to_owned(),
        json: value.to_string(),
    }
}

/// What the turn produced, read from `GET /session/{id}/message` after `session.idle`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Turn {
    /// The text parts of the turn's last assistant message.
    pub final_text: Option<String>,
    pub usage: Usage,
    pub cost_usd: f64,
    /// Assistant messages (model calls) in the turn.
    pub steps: u32,
    /// The last assistant message's error (`info.error`), e.g. an upstream `APIError`.
    pub error: Option<String>,
    /// The error's name (`APIError`, `MessageAbortedError` …).
    pub error_name: Option<String>,
}

/// Reads what answered the last `prompts` user messages (the execution's prompt and the
/// follow-ups it sent) out of the session's messages: usage, cost and steps summed over all
/// of them, the final text and error of the last. `None` when the answer has no user message
/// (nothing was sent).
pub fn turn_outcome(messages: &Value, prompts: usize) -> Option<Turn> {
    let list = messages.as_array()?;
    let users: Vec<usize> = list
        .iter()
        .enumerate()
        .filter(|(_, m)| m["info"]["role"] == "user")
        .map(|(i, _)| i)
        .collect();
    let first = *users.get(users.len().checked_sub(prompts.max(1))?)?;
    let user_ids: HashSet<&str> = users
        .iter()
        .filter(|&&i| i >= first)
        .filter_map(|&i| list[i]["info"]["id"].as_str())
        .collect();
    let mut turn = Turn::default();
    for message in &list[first + 1..] {
        let info = &message["info"];
        if info["role"] != "assistant" {
            continue;
        }
        if info["parentID"]
            .as_str()
            .is_some_and(|p| !user_ids.contains(p))
        {
            continue;
        }
        turn.steps += 1;
        turn.usage.add(usage_from_json(&info["tokens"]));
        turn.cost_usd += info["cost"].as_f64().unwrap_or(0.0);
        let text: String = message["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["type"] == "text" && p["synthetic"] != true)
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("");
        if !text.is_empty() {
            turn.final_text = Some(text);
        }
        if info["error"].is_null() {
            turn.error = None;
            turn.error_name = None;
        } else {
            turn.error = Some(describe_error(&info["error"]));
            turn.error_name = info["error"]["name"].as_str().map(str::to_owned);
        }
    }
    Some(turn)
}

#[cfg(test)]
mod tests;
