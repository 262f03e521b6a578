//! Normalized events: every provider's output is mapped into these, so clients can render
//! any agent the same way and nothing provider-specific is lost (it travels as `Raw`).

use serde::{Deserialize, Serialize};

use super::approval::Approval;
use super::command::CommandStatus;
use super::result::AgentResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Token counts as agents report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
}

/// One thing a provider saw while running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The agent started: its session and environment.
    Init {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tools: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    /// Assistant text; `partial` marks an incremental delta rather than a whole block.
    Message {
        text: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        partial: bool,
    },
    Thinking {
        text: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        partial: bool,
    },
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    ToolResult {
        id: String,
        content: String,
        #[serde(default)]
        is_error: bool,
    },
    /// Raw process output, for providers that run plain programs.
    Output {
        stream: OutputStream,
        text: String,
    },
    Warning {
        message: String,
    },
    Error {
        message: String,
    },
    Usage {
        usage: Usage,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost_usd: Option<f64>,
    },
    /// Provider-specific data passed through untouched.
    Raw {
        kind: String,
        data: serde_json::Value,
    },
}

impl AgentEvent {
    /// The SSE `event:` name; equal to the JSON `type` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Init { .. } => "init",
            Self::Message { .. } => "message",
            Self::Thinking { .. } => "thinking",
            Self::ToolUse { .. } => "tool_use",
            Self::ToolResult { .. } => "tool_result",
            Self::Output { .. } => "output",
            Self::Warning { .. } => "warning",
            Self::Error { .. } => "error",
            Self::Usage { .. } => "usage",
            Self::Raw { .. } => "raw",
        }
    }

    /// Applies `f` to every user-visible text the event carries, so that a credential value
    /// can be redacted from an event without knowing its variant.
    pub fn map_text(&mut self, mut f: impl FnMut(&mut String)) {
        fn map_json(value: &mut serde_json::Value, f: &mut impl FnMut(&mut String)) {
            match value {
                serde_json::Value::String(s) => f(s),
                serde_json::Value::Array(items) => items.iter_mut().for_each(|v| map_json(v, f)),
                serde_json::Value::Object(map) => map.values_mut().for_each(|v| map_json(v, f)),
                _ => {}
            }
        }
        match self {
            Self::Init {
                session_id,
                model,
                cwd,
                tools,
                version,
            } => {
                for field in [session_id, model, cwd, version].into_iter().flatten() {
                    f(field);
                }
                tools.iter_mut().for_each(&mut f);
            }
            Self::Message { text, .. }
            | Self::Thinking { text, .. }
            | Self::Output { text, .. } => f(text),
            Self::ToolUse { name, input, .. } => {
                f(name);
                map_json(input, &mut f);
            }
            Self::ToolResult { content, .. } => f(content),
            Self::Warning { message } | Self::Error { message } => f(message),
            Self::Usage { .. } => {}
            Self::Raw { kind, data } => {
                f(kind);
                map_json(data, &mut f);
            }
        }
    }
}

/// What a command's event stream carries: the provider's events, the host's status
/// changes, and one terminal event that ends the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum StreamEvent {
    Agent(AgentEvent),
    Host(HostEvent),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostEvent {
    /// The command moved to a non-terminal status (e.g. it started running).
    Status { status: CommandStatus },
    /// The last event of a stream: the final status and, when the provider returned one,
    /// its result.
    Done {
        status: CommandStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Box<AgentResult>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A tool call waits for a person's decision (see `domain::approval`).
    ApprovalRequested { approval: Box<Approval> },
    /// A pending approval was decided, expired or cancelled.
    ApprovalResolved { approval: Box<Approval> },
    /// A person sent follow-up text into the running command (`POST /commands/{id}/input`);
    /// the replica running the command hands it to the provider.
    Input { input: super::interaction::FollowUp },
    /// The provider took that input (`interaction.next-input` returned it); an input that
    /// has none when the command ends was never delivered, and a `warning` says so.
    InputDelivered { input_id: String },
}

impl StreamEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Agent(event) => event.kind(),
            Self::Host(HostEvent::Status { .. }) => "status",
            Self::Host(HostEvent::Done { .. }) => "done",
            Self::Host(HostEvent::ApprovalRequested { .. }) => "approval_requested",
            Self::Host(HostEvent::ApprovalResolved { .. }) => "approval_resolved",
            Self::Host(HostEvent::Input { .. }) => "input",
            Self::Host(HostEvent::InputDelivered { .. }) => "input_delivered",
        }
    }

    /// True for the event after which a stream carries nothing more.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Host(HostEvent::Done { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_their_kind_as_type_tag() {
        let events = [
            AgentEvent::Message {
                text: "hi".into(),
                partial: false,
            },
            AgentEvent::ToolUse {
                id: "t1".into(),
                name: "Bash".into(),
                input: serde_json::json!({"command": "ls"}),
            },
            AgentEvent::Raw {
                kind: "session.diff".into(),
                data: serde_json::json!({"files": []}),
            },
        ];
        for event in events {
            let json = serde_json::to_value(&event).expect("serializable");
            assert_eq!(json["type"], event.kind());
            let back: AgentEvent = serde_json::from_value(json).expect("round trip");
            assert_eq!(back, event);
        }
    }

    #[test]
    fn stream_events_round_trip_both_families() {
        let done = StreamEvent::Host(HostEvent::Done {
            status: CommandStatus::Completed,
            result: None,
            error: None,
        });
        let json = serde_json::to_string(&done).expect("serializable");
        assert_eq!(
            serde_json::from_str::<StreamEvent>(&json).ok(),
            Some(done.clone())
        );
        assert!(done.is_terminal());
        assert_eq!(done.kind(), "done");

        let output = StreamEvent::Agent(AgentEvent::Output {
            stream: OutputStream::Stderr,
            text: "oops".into(),
        });
        let json = serde_json::to_string(&output).expect("serializable");
        assert_eq!(
            serde_json::from_str::<StreamEvent>(&json).ok(),
            Some(output)
        );
    }

    #[test]
    fn map_text_reaches_nested_json() {
        let mut event = AgentEvent::ToolUse {
            id: "t".into(),
            name: "Bash".into(),
            input: serde_json::json!({"env": ["KEY=s3cret"], "nested": {"v": "s3cret"}}),
        };
        event.map_text(|s| *s = s.replace("s3cret", "[redacted]"));
        let text = serde_json::to_string(&event).expect("serializable");
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(text.matches("[redacted]").count(), 2);
    }
}
