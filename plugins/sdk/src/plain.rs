//! Provider events as plain Rust values. A provider's parser produces these instead of the
//! generated binding types, so it stays ordinary data that unit tests build and compare;
//! [`to_abi`] turns a batch into the ABI's `agent-event`s right before emitting.

use super::bindings::rdev::provider::types::{
    AgentEvent, InitInfo, RawInfo, TextInfo, TokenUsage, ToolResultInfo, ToolUseInfo, UsageInfo,
};

/// One event, variant for variant the ABI's `agent-event` (without raw process output,
/// which providers emit directly).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Init {
        session_id: Option<String>,
        model: Option<String>,
        cwd: Option<String>,
        tools: Vec<String>,
        version: Option<String>,
    },
    Message {
        text: String,
        partial: bool,
    },
    Thinking {
        text: String,
        partial: bool,
    },
    ToolUse {
        id: String,
        name: String,
        input_json: String,
    },
    ToolResult {
        id: String,
        content: String,
        is_error: bool,
    },
    Warning(String),
    Error(String),
    Usage {
        usage: Usage,
        cost_usd: Option<f64>,
    },
    Raw {
        kind: String,
        json: String,
    },
}

/// Token counts; each provider maps its agent's own field names onto these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Adds another count, for totals over several messages or steps.
    pub fn add(&mut self, other: Self) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
    }
}

impl From<Usage> for TokenUsage {
    fn from(u: Usage) -> Self {
        Self {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_read_tokens: u.cache_read_tokens,
            cache_write_tokens: u.cache_write_tokens,
        }
    }
}

impl From<Event> for AgentEvent {
    fn from(event: Event) -> Self {
        match event {
            Event::Init {
                session_id,
                model,
                cwd,
                tools,
                version,
            } => AgentEvent::Init(InitInfo {
                session_id,
                model,
                cwd,
                tools,
                version,
            }),
            Event::Message { text, partial } => AgentEvent::Message(TextInfo { text, partial }),
            Event::Thinking { text, partial } => AgentEvent::Thinking(TextInfo { text, partial }),
            Event::ToolUse {
                id,
                name,
                input_json,
            } => AgentEvent::ToolUse(ToolUseInfo {
                id,
                name,
                input_json,
            }),
            Event::ToolResult {
                id,
                content,
                is_error,
            } => AgentEvent::ToolResult(ToolResultInfo {
                id,
                content,
                is_error,
            }),
            Event::Warning(text) => AgentEvent::Warning(text),
            Event::Error(text) => AgentEvent::Error(text),
            Event::Usage { usage, cost_usd } => AgentEvent::Usage(UsageInfo {
                usage: usage.into(),
                cost_usd,
            }),
            Event::Raw { kind, json } => AgentEvent::Raw(RawInfo { kind, json }),
        }
    }
}

/// Converts a batch for [`super::event::emit_all`].
pub fn to_abi(events: Vec<Event>) -> Vec<AgentEvent> {
    events.into_iter().map(AgentEvent::from).collect()
}
