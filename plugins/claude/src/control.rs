//! The stdin side of the CLI's bidirectional stream-json mode (`--input-format stream-json
//! --permission-prompt-tool stdio`): the `user` messages rdev writes, the `control_request`
//! lines the CLI writes when it wants a decision, and the `control_response` lines that
//! answer them. Pure, so the shapes are unit tested natively against recorded transcripts
//! (`tests/fixtures/permission_*.jsonl`).

use serde_json::{Map, Value, json};

/// Longest summary handed to the host (its bound is 4 KiB; the rest is cut on a char
/// boundary so a long command still shows its start).
const MAX_SUMMARY_BYTES: usize = 1_024;

/// One `control_request` the CLI wrote, which must be answered with exactly one
/// `control_response` carrying its `request_id`, or the CLI waits forever.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// `can_use_tool`: may this tool call run?
    CanUseTool(Ask),
    /// A request rdev does not serve (hook callbacks, MCP messages …): answered with an
    /// error so the CLI goes on.
    Unsupported { request_id: String, subtype: String },
}

/// A `can_use_tool` request.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub request_id: String,
    pub tool: String,
    /// The tool's input exactly as the CLI would run it.
    pub input: Value,
    pub tool_use_id: Option<String>,
    /// The CLI's one-line description of the call, when it has one.
    pub description: Option<String>,
}

impl Control {
    /// Reads a `control_request` line's object; `None` when it has no `request_id` (then
    /// nothing can answer it).
    pub fn from_json(obj: &Map<String, Value>) -> Option<Self> {
        let request_id = obj.get("request_id")?.as_str()?.to_owned();
        let request = obj.get("request").and_then(Value::as_object);
        let field = |key: &str| {
            request
                .and_then(|r| r.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let subtype = field("subtype").unwrap_or_default();
        if subtype != "can_use_tool" {
            return Some(Self::Unsupported {
                request_id,
                subtype,
            });
        }
        Some(Self::CanUseTool(Ask {
            request_id,
            tool: field("tool_name").unwrap_or_default(),
            input: request
                .and_then(|r| r.get("input"))
                .cloned()
                .unwrap_or_else(|| json!({})),
            tool_use_id: field("tool_use_id"),
            description: field("description"),
        }))
    }
}

impl Ask {
    /// One line for a person: the shell command of a shell tool, else the file path, else
    /// the CLI's description, prefixed with the tool's name.
    pub fn summary(&self) -> String {
        let text = |key: &str| self.input.get(key).and_then(Value::as_str);
        let what = text("command")
            .or_else(|| text("file_path"))
            .or_else(|| text("path"))
            .or_else(|| text("url"))
            .or(self.description.as_deref())
            .unwrap_or("");
        let mut summary = if what.is_empty() {
            self.tool.clone()
        } else {
            format!("{}: {what}", self.tool)
        };
        if summary.len() > MAX_SUMMARY_BYTES {
            let cut = (0..=MAX_SUMMARY_BYTES)
                .rev()
                .find(|i| summary.is_char_boundary(*i))
                .unwrap_or(0);
            summary.truncate(cut);
            summary.push('…');
        }
        summary
    }
}

/// The `user` message line that hands `text` to the CLI (the prompt, then follow-ups).
pub fn user_message(text: &str) -> String {
    line(json!({
        "type": "user",
        "message": {"role": "user", "content": text},
    }))
}

/// Allows the call, with the input the person approved (the CLI's own when unchanged).
pub fn allow(request_id: &str, input: &Value) -> String {
    success(
        request_id,
        json!({"behavior": "allow", "updatedInput": input}),
    )
}

/// Denies the call; the CLI hands `message` to the model as the tool's error result, and
/// `interrupt` ends its turn instead of letting it try something else.
pub fn deny(request_id: &str, message: &str, interrupt: bool) -> String {
    let mut response = json!({"behavior": "deny", "message": message});
    if interrupt {
        response["interrupt"] = Value::Bool(true);
    }
    success(request_id, response)
}

/// Refuses a request rdev does not serve.
pub fn unsupported(request_id: &str, subtype: &str) -> String {
    line(json!({
        "type": "control_response",
        "response": {
            "subtype": "error",
            "request_id": request_id,
            "error": format!("rdev does not answer {subtype:?} control requests"),
        },
    }))
}

fn success(request_id: &str, response: Value) -> String {
    line(json!({
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": response},
    }))
}

fn line(value: Value) -> String {
    let mut text = value.to_string();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `<` (CLI stdout) and `>` (written to its stdin) lines of a recorded transcript.
    fn lines(transcript: &str, prefix: &str) -> Vec<Value> {
        transcript
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn asks(transcript: &str) -> Vec<Control> {
        lines(transcript, "< ")
            .into_iter()
            .filter(|v| v["type"] == "control_request")
            .map(|v| Control::from_json(v.as_object().unwrap()).unwrap())
            .collect()
    }

    const ALLOW: &str = include_str!("../tests/fixtures/permission_allow.transcript");
    const DENY: &str = include_str!("../tests/fixtures/permission_deny.transcript");

    #[test]
    fn the_recorded_can_use_tool_request_is_read() {
        let [Control::CanUseTool(ask)] = &asks(ALLOW)[..] else {
            panic!("{:?}", asks(ALLOW));
        };
        assert_eq!(ask.tool, "Bash");
        assert_eq!(ask.tool_use_id.as_deref(), Some("toolu_1"));
        assert_eq!(ask.input["command"], "touch marker");
        assert_eq!(ask.summary(), "Bash: touch marker");
    }

    #[test]
    fn answers_have_the_shapes_the_real_cli_accepted() {
        let Control::CanUseTool(ask) = &asks(ALLOW)[0] else {
            panic!()
        };
        let written = lines(ALLOW, "> ");
        let ours: Value = serde_json::from_str(&allow(&ask.request_id, &ask.input)).unwrap();
        assert_eq!(written[1], ours);
        let prompt: Value = serde_json::from_str(&user_message("make a marker file")).unwrap();
        assert_eq!(written[0], prompt);
        let Control::CanUseTool(ask) = &asks(DENY)[0] else {
            panic!()
        };
        let ours: Value =
            serde_json::from_str(&deny(&ask.request_id, "no markers please", false)).unwrap();
        assert_eq!(lines(DENY, "> ")[1], ours);
        let interrupting: Value = serde_json::from_str(&deny("r", "m", true)).unwrap();
        assert_eq!(interrupting["response"]["response"]["interrupt"], true);
    }

    #[test]
    fn other_requests_are_refused_and_unanswerable_ones_ignored() {
        let hook = json!({"type": "control_request", "request_id": "r1",
                          "request": {"subtype": "hook_callback"}});
        let control = Control::from_json(hook.as_object().unwrap()).unwrap();
        assert_eq!(
            control,
            Control::Unsupported {
                request_id: "r1".into(),
                subtype: "hook_callback".into()
            }
        );
        let refused: Value = serde_json::from_str(&unsupported("r1", "hook_callback")).unwrap();
        assert_eq!(refused["response"]["subtype"], "error");
        assert_eq!(refused["response"]["request_id"], "r1");
        let anonymous = json!({"type": "control_request", "request": {}});
        assert!(Control::from_json(anonymous.as_object().unwrap()).is_none());
    }

    #[test]
    fn summaries_fall_back_and_stay_bounded() {
        let ask = |input: Value, description: Option<&str>| Ask {
            request_id: "r".into(),
            tool: "Write".into(),
            input,
            tool_use_id: None,
            description: description.map(str::to_owned),
        };
        assert_eq!(
            ask(json!({"file_path": "/w/a.txt"}), None).summary(),
            "Write: /w/a.txt"
        );
        assert_eq!(ask(json!({}), Some("writes")).summary(), "Write: writes");
        assert_eq!(ask(json!({}), None).summary(), "Write");
        let long = ask(json!({"command": "é".repeat(2_000)}), None).summary();
        assert!(
            long.len() <= MAX_SUMMARY_BYTES + '…'.len_utf8(),
            "{}",
            long.len()
        );
        assert!(long.ends_with('…'));
    }
}
