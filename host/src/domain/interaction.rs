//! A person in the loop, as data: what a running agent asks (may this tool call run?), what
//! it is told (a [`Decision`]), and the follow-up text a person sends into a running
//! command. Providers produce and consume these through the `interaction` host interface;
//! the host stores, streams and decides them (see [`crate::ports::interaction`]).

use serde::{Deserialize, Serialize};

/// How an agent's own choice for a permission prompt behaves; agents name and word their
/// options differently (Claude's suggestions, OpenCode's `once`/`always`/`reject`, ACP's
/// option kinds), and this is the common meaning a client can render and a policy can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OptionKind {
    AllowOnce,
    AllowAlways,
    RejectOnce,
    RejectAlways,
}

impl OptionKind {
    /// True for the two allowing kinds.
    pub fn allows(self) -> bool {
        matches!(self, Self::AllowOnce | Self::AllowAlways)
    }

    /// True for the kinds that ask the agent to remember the choice.
    pub fn remembers(self) -> bool {
        matches!(self, Self::AllowAlways | Self::RejectAlways)
    }
}

/// One choice the agent itself offers, passed through so a person sees the agent's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PermissionOption {
    /// The agent's id for the option (an ACP `optionId`, an OpenCode reply word …).
    pub id: String,
    /// Words a person reads.
    pub label: String,
    pub kind: OptionKind,
}

/// An agent asks whether one tool call may run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PermissionRequest {
    /// The agent's id of the tool call, when it has one; the same id its `tool_use` event
    /// carries, so a client can show the request beside the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The tool's name as the agent knows it (`Bash`, `edit`, an MCP tool …).
    pub tool: String,
    /// The tool's input, as the agent would run it.
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    /// One line for a person: what the call would do.
    pub summary: String,
    /// The agent's own choices, empty when it offers none (then allow and deny apply).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<PermissionOption>,
}

/// Bounds on a request from a provider: it is guest-controlled data that is stored,
/// streamed and shown to people.
pub mod limits {
    /// Longest tool name, in bytes.
    pub const TOOL: usize = 256;
    /// Longest tool-call id, in bytes.
    pub const TOOL_CALL_ID: usize = 256;
    /// Longest summary, in bytes.
    pub const SUMMARY: usize = 4 * 1024;
    /// Longest tool input, as JSON text, in bytes.
    pub const INPUT_JSON: usize = 1024 * 1024;
    /// Most options offered.
    pub const OPTIONS: usize = 16;
    /// Longest option id or label, in bytes.
    pub const OPTION_TEXT: usize = 256;
    /// Longest follow-up text, in bytes.
    pub const FOLLOW_UP: usize = 256 * 1024;
}

/// Why a permission request from a provider was refused before anyone saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid permission request: {0}")]
pub struct InvalidRequest(pub String);

impl PermissionRequest {
    /// Checks the bounds in [`limits`]; `input_json_len` is the size of the input as the
    /// provider sent it.
    pub fn validate(&self, input_json_len: usize) -> Result<(), InvalidRequest> {
        let too_long = |what: &str, len: usize, max: usize| {
            (len > max).then(|| InvalidRequest(format!("{what} is longer than {max} bytes")))
        };
        if self.tool.trim().is_empty() {
            return Err(InvalidRequest("the tool name is empty".into()));
        }
        let checks = [
            too_long("the tool name", self.tool.len(), limits::TOOL),
            too_long(
                "the tool-call id",
                self.tool_call_id.as_ref().map_or(0, String::len),
                limits::TOOL_CALL_ID,
            ),
            too_long("the summary", self.summary.len(), limits::SUMMARY),
            too_long("the tool input", input_json_len, limits::INPUT_JSON),
        ];
        if let Some(error) = checks.into_iter().flatten().next() {
            return Err(error);
        }
        if self.options.len() > limits::OPTIONS {
            return Err(InvalidRequest(format!(
                "more than {} options",
                limits::OPTIONS
            )));
        }
        for option in &self.options {
            if option.id.is_empty() || option.id.len() > limits::OPTION_TEXT {
                return Err(InvalidRequest(format!(
                    "an option id is empty or longer than {} bytes",
                    limits::OPTION_TEXT
                )));
            }
            if option.label.len() > limits::OPTION_TEXT {
                return Err(InvalidRequest(format!(
                    "an option label is longer than {} bytes",
                    limits::OPTION_TEXT
                )));
            }
        }
        Ok(())
    }
}

/// The tool call may run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Allow {
    /// Runs the call with this input instead of the agent's (a person edited it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub updated_input: Option<serde_json::Value>,
    /// "Always": the agent may stop asking for calls like this one in its session (and the
    /// host extends the project's rules, see [`crate::ports::interaction`]).
    #[serde(default)]
    pub remember: bool,
    /// The agent's option that was chosen, when it offered options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option_id: Option<String>,
}

/// The tool call must not run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deny {
    /// Told to the agent (and through it the model) as the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// "Always": the agent may refuse calls like this one without asking again.
    #[serde(default)]
    pub remember: bool,
    /// The agent's option that was chosen, when it offered options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option_id: Option<String>,
    /// Stop the agent's whole turn instead of letting it try something else.
    #[serde(default)]
    pub interrupt: bool,
}

/// The answer to a [`PermissionRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Allow(Allow),
    Deny(Deny),
}

impl Decision {
    /// A plain denial with a reason.
    pub fn deny(message: impl Into<String>) -> Self {
        Self::Deny(Deny {
            message: Some(message.into()),
            ..Deny::default()
        })
    }

    /// A plain allow, once.
    pub fn allow() -> Self {
        Self::Allow(Allow::default())
    }

    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow(_))
    }
}

/// Text a person sends into a running command (a follow-up message to the agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FollowUp {
    /// Given by whoever accepted the input (for correlation and audit).
    pub id: String,
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> PermissionRequest {
        PermissionRequest {
            tool_call_id: Some("toolu_1".into()),
            tool: "Bash".into(),
            input: serde_json::json!({"command": "ls"}),
            summary: "ls".into(),
            options: vec![PermissionOption {
                id: "once".into(),
                label: "Allow once".into(),
                kind: OptionKind::AllowOnce,
            }],
        }
    }

    #[test]
    fn a_bounded_request_is_valid() {
        assert_eq!(request().validate(20), Ok(()));
    }

    #[test]
    fn oversized_or_empty_parts_are_refused() {
        let mut r = request();
        r.tool = " ".into();
        assert!(r.validate(2).is_err());
        assert!(request().validate(limits::INPUT_JSON + 1).is_err());
        let mut r = request();
        r.summary = "x".repeat(limits::SUMMARY + 1);
        assert!(r.validate(2).unwrap_err().0.contains("summary"));
        let mut r = request();
        r.options = vec![r.options[0].clone(); limits::OPTIONS + 1];
        assert!(r.validate(2).is_err());
        let mut r = request();
        r.options[0].id.clear();
        assert!(r.validate(2).is_err());
    }

    #[test]
    fn decisions_serialize_with_a_tag() {
        let json = serde_json::to_value(Decision::deny("no")).unwrap();
        assert_eq!(json["decision"], "deny");
        assert_eq!(json["message"], "no");
        let back: Decision = serde_json::from_value(json).unwrap();
        assert_eq!(back, Decision::deny("no"));
        assert!(Decision::allow().is_allow());
        assert!(OptionKind::AllowAlways.allows() && OptionKind::AllowAlways.remembers());
        assert!(!OptionKind::RejectOnce.allows() && !OptionKind::RejectOnce.remembers());
    }
}
