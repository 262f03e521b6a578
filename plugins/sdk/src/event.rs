//! Building and emitting events with one call each.

use super::bindings::rdev::provider::events::{self, EmitError};
use super::bindings::rdev::provider::types::{
    AgentEvent, OutputChunk, OutputStream, RawInfo, TextInfo, ToolResultInfo, ToolUseInfo,
};

/// The host cancelled the execution while an emit was waiting for buffer space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

/// Sends events to the host, in order. Blocks while the host's buffer is full.
pub fn emit_all(batch: &[AgentEvent]) -> Result<(), Cancelled> {
    if batch.is_empty() {
        return Ok(());
    }
    events::emit(batch).map_err(|EmitError::Cancelled| Cancelled)
}

pub fn emit(event: AgentEvent) -> Result<(), Cancelled> {
    emit_all(std::slice::from_ref(&event))
}

pub fn message(text: impl Into<String>) -> AgentEvent {
    AgentEvent::Message(TextInfo {
        text: text.into(),
        partial: false,
    })
}

pub fn message_delta(text: impl Into<String>) -> AgentEvent {
    AgentEvent::Message(TextInfo {
        text: text.into(),
        partial: true,
    })
}

pub fn thinking(text: impl Into<String>, partial: bool) -> AgentEvent {
    AgentEvent::Thinking(TextInfo {
        text: text.into(),
        partial,
    })
}

pub fn tool_use(
    id: impl Into<String>,
    name: impl Into<String>,
    input: &serde_json::Value,
) -> AgentEvent {
    AgentEvent::ToolUse(ToolUseInfo {
        id: id.into(),
        name: name.into(),
        input_json: input.to_string(),
    })
}

pub fn tool_result(
    id: impl Into<String>,
    content: impl Into<String>,
    is_error: bool,
) -> AgentEvent {
    AgentEvent::ToolResult(ToolResultInfo {
        id: id.into(),
        content: content.into(),
        is_error,
    })
}

pub fn output(stream: OutputStream, text: impl Into<String>) -> AgentEvent {
    AgentEvent::Output(OutputChunk {
        stream,
        text: text.into(),
    })
}

pub fn warning(message: impl Into<String>) -> AgentEvent {
    AgentEvent::Warning(message.into())
}

pub fn error(message: impl Into<String>) -> AgentEvent {
    AgentEvent::Error(message.into())
}

pub fn raw(kind: impl Into<String>, data: &serde_json::Value) -> AgentEvent {
    AgentEvent::Raw(RawInfo {
        kind: kind.into(),
        json: data.to_string(),
    })
}
