//! OpenCode's permission protocol, pure so that it is unit tested natively: the rules a
//! session is given so that the server asks before every tool call with an effect, the
//! `permission.asked` request, and the reply to `POST /permission/{id}/reply`.
//!
//! The host's policy is the authority: the provider never answers a request on its own, it
//! puts every one to `request-permission` and replies what the host decided.

use serde_json::{Value, json};

/// OpenCode permissions that are asked for (the host then decides). Reading and searching
/// the workspace (`read`, `glob`, `grep`, `list`, `lsp`, `todowrite`) stay as the server's
/// configuration says: they change nothing and would otherwise ask for every file. `task`
/// starts a sub-agent, whose own calls follow the server's configuration (docs/approvals.md),
/// so starting one is asked for too.
pub const ASKED: &[&str] = &[
    "bash",
    "edit",
    "webfetch",
    "websearch",
    "external_directory",
    "task",
    "skill",
    "doom_loop",
];

/// The session's permission ruleset (`POST /session`, `PATCH /session/{id}`): `ask` for each
/// of [`ASKED`] on every pattern. The session's rules are evaluated after the project's
/// `opencode.json`, so a configuration that allows `bash` cannot skip the host's decision.
pub fn session_rules() -> Value {
    Value::Array(
        ASKED
            .iter()
            .map(|permission| json!({"permission": permission, "pattern": "*", "action": "ask"}))
            .collect(),
    )
}

/// Longest summary handed to the host; a long command is cut with `…`.
const SUMMARY_CHARS: usize = 400;

/// One `permission.asked` request: the server holds the tool call until it is answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    /// `per_…`, the path segment of the reply.
    pub id: String,
    pub session_id: String,
    /// OpenCode's permission name (`bash`, `edit`, `webfetch` …): the tool name the host's
    /// rules match.
    pub permission: String,
    /// What is asked for: the commands of a `bash` call, the paths of an `edit`, the URL.
    pub patterns: Vec<String>,
    pub metadata: Value,
    /// The tool call the request belongs to, when it belongs to one.
    pub call_id: Option<String>,
}

impl Ask {
    /// Reads a `permission.asked` event's properties (also the `permission.updated` shape of
    /// servers before 1.0: `type`, `pattern`, `callID`).
    pub fn parse(props: &Value) -> Result<Self, String> {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let id = text(&props["id"]).ok_or("a permission request without an id")?;
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "a permission request id that is not path-safe: {id:?}"
            ));
        }
        let session_id = text(&props["sessionID"]).unwrap_or_default();
        let permission = text(&props["permission"])
            .or_else(|| text(&props["type"]))
            .unwrap_or_else(|| "tool".into());
        let patterns = match (&props["patterns"], &props["pattern"]) {
            (Value::Array(list), _) | (_, Value::Array(list)) => {
                list.iter().filter_map(&text).collect()
            }
            (_, Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        let call_id = text(&props["tool"]["callID"]).or_else(|| text(&props["callID"]));
        Ok(Self {
            id,
            session_id,
            permission,
            patterns,
            metadata: props["metadata"].clone(),
            call_id,
        })
    }

    /// The input the host shows and its rules match: the tool call's own input when it was
    /// seen on the stream (a `bash` call's `command`), else the patterns; `patterns` and
    /// `metadata` are always included.
    pub fn input(&self, tool_input: Option<&Value>) -> Value {
        let mut input = match tool_input {
            Some(Value::Object(object)) => Value::Object(object.clone()),
            _ => json!({}),
        };
        if self.permission == "bash" && input.get("command").is_none() {
            input["command"] = json!(self.patterns.join(" && "));
        }
        input["patterns"] = json!(self.patterns);
        if !self.metadata.is_null() {
            input["metadata"] = self.metadata.clone();
        }
        input
    }

    /// `bash: echo hi`, cut to [`SUMMARY_CHARS`].
    pub fn summary(&self, input: &Value) -> String {
        let what = input["command"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| self.patterns.join(", "));
        let mut summary = format!("{}: {what}", self.permission);
        if summary.chars().count() > SUMMARY_CHARS {
            summary = summary.chars().take(SUMMARY_CHARS - 1).collect();
            summary.push('…');
        }
        summary
    }
}

/// What the provider answers the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Run this call (further calls are asked again; "always" is a rule on the host).
    Once,
    /// Do not run it. With a message the model is told it and the turn goes on; without one
    /// OpenCode stops the turn.
    Reject(Option<String>),
}

impl Reply {
    /// The body of `POST /permission/{id}/reply`.
    pub fn body(&self) -> Value {
        match self {
            Self::Once => json!({"reply": "once"}),
            Self::Reject(None) => json!({"reply": "reject"}),
            Self::Reject(Some(message)) => json!({"reply": "reject", "message": message}),
        }
    }
}

/// What the model is told when a person approved the call with edited input: OpenCode
/// cannot run a call with another input than the model sent, so the call is rejected and
/// the approved input handed to the model to issue instead.
pub fn edited_input_message(input: &str) -> String {
    format!(
        "The user approved this call only with changed input; issue the call again with this \
         input instead: {input}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_ask_for_every_effectful_permission() {
        let rules = session_rules();
        let list = rules.as_array().unwrap();
        assert_eq!(list.len(), ASKED.len());
        assert!(list.contains(&json!({"permission": "bash", "pattern": "*", "action": "ask"})));
        assert!(!rules.to_string().contains("\"read\""));
    }

    #[test]
    fn parses_the_current_and_the_old_shape() {
        let ask = Ask::parse(&json!({"id": "per_1", "sessionID": "ses_1",
            "permission": "bash", "patterns": ["echo hi", "ls"], "metadata": {},
            "always": ["echo *"], "tool": {"messageID": "msg_1", "callID": "call_1"}}))
        .unwrap();
        assert_eq!(ask.permission, "bash");
        assert_eq!(ask.patterns, ["echo hi", "ls"]);
        assert_eq!(ask.call_id.as_deref(), Some("call_1"));
        let old = Ask::parse(&json!({"id": "per_2", "sessionID": "ses_1", "type": "edit",
            "pattern": "src/a.rs", "callID": "call_2", "metadata": {"file": "a"}}))
        .unwrap();
        assert_eq!(old.permission, "edit");
        assert_eq!(old.patterns, ["src/a.rs"]);
        assert_eq!(old.call_id.as_deref(), Some("call_2"));
        assert!(Ask::parse(&json!({"sessionID": "s"})).is_err());
        assert!(Ask::parse(&json!({"id": "../x"})).is_err());
    }

    #[test]
    fn input_prefers_the_tool_call_and_always_has_a_command_for_bash() {
        let ask = Ask::parse(&json!({"id": "per_1", "permission": "bash",
            "patterns": ["echo a", "echo b"]}))
        .unwrap();
        let input = ask.input(None);
        assert_eq!(input["command"], "echo a && echo b");
        assert_eq!(ask.summary(&input), "bash: echo a && echo b");
        let call = json!({"command": "echo a; echo b", "description": "two"});
        let input = ask.input(Some(&call));
        assert_eq!(input["command"], "echo a; echo b");
        assert_eq!(input["description"], "two");
        assert_eq!(input["patterns"], json!(["echo a", "echo b"]));
        let long = Ask::parse(&json!({"id": "p", "permission": "edit",
            "patterns": ["x".repeat(1000)]}))
        .unwrap();
        let summary = long.summary(&long.input(None));
        assert_eq!(summary.chars().count(), SUMMARY_CHARS);
        assert!(summary.starts_with("edit: xxx") && summary.ends_with('…'));
    }

    #[test]
    fn replies() {
        assert_eq!(Reply::Once.body(), json!({"reply": "once"}));
        assert_eq!(Reply::Reject(None).body(), json!({"reply": "reject"}));
        assert_eq!(
            Reply::Reject(Some("no".into())).body(),
            json!({"reply": "reject", "message": "no"})
        );
    }
}
