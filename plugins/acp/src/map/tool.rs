//! ACP's tool calls (`tool_call`, `tool_call_update`) as `tool-use` and `tool-result` events:
//! one of each per call, whatever number of updates the agent sends. Pure, so it is unit
//! tested natively.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use super::Event;

/// The tool calls of one session seen so far.
#[derive(Debug, Default)]
pub struct Tools {
    /// Tool calls whose `tool-use` event was emitted.
    announced: HashSet<String>,
    /// The first title of each pending call: OpenCode titles a pending call with the tool's
    /// name and later with what it does.
    names: HashMap<String, String>,
    /// Tool calls whose `tool-result` event was emitted.
    finished: HashSet<String>,
}

impl Tools {
    /// The events of one `tool_call` or `tool_call_update`.
    pub fn update(&mut self, update: &Value, out: &mut Vec<Event>) {
        let Some(id) = update["toolCallId"].as_str() else {
            out.push(super::raw(
                update["sessionUpdate"].as_str().unwrap_or("tool"),
                update,
            ));
            return;
        };
        let status = update["status"].as_str().unwrap_or("");
        let name = self
            .names
            .entry(id.to_owned())
            .or_insert_with(|| tool_name(update))
            .clone();
        // A pending call's input may be incomplete (OpenCode sends only its `cwd`): the
        // `tool-use` waits for the first update that is under way or done.
        if status != "pending" && self.announced.insert(id.to_owned()) {
            out.push(Event::ToolUse {
                id: id.to_owned(),
                name,
                input_json: input_of(update).to_string(),
            });
        }
        if matches!(status, "completed" | "failed") && self.finished.insert(id.to_owned()) {
            out.push(Event::ToolResult {
                id: id.to_owned(),
                content: tool_output(update),
                is_error: status == "failed",
            });
        }
    }
}

/// A tool call's name for people: its `kind` (`edit`, `execute` …) and `title`.
fn tool_name(update: &Value) -> String {
    let title = update["title"].as_str().filter(|t| !t.is_empty());
    let kind = update["kind"].as_str().filter(|k| !k.is_empty());
    match (kind, title) {
        (_, Some(title)) => title.to_owned(),
        (Some(kind), None) => kind.to_owned(),
        (None, None) => "tool".to_owned(),
    }
}

/// A tool call's input: `rawInput` when the agent sends it, else `{}`.
pub fn input_of(update: &Value) -> Value {
    match &update["rawInput"] {
        Value::Null => json!({}),
        input => input.clone(),
    }
}

/// A finished tool call's output: the text of its content blocks, else its `rawOutput`.
fn tool_output(update: &Value) -> String {
    let mut parts = Vec::new();
    for item in update["content"].as_array().into_iter().flatten() {
        match item["type"].as_str() {
            Some("content") => parts.extend(super::content_text(&item["content"])),
            Some("diff") => parts.push(format!(
                "diff of {}",
                item["path"].as_str().unwrap_or("a file")
            )),
            Some("terminal") => parts.push(format!(
                "terminal {}",
                item["terminalId"].as_str().unwrap_or("")
            )),
            _ => {}
        }
    }
    if !parts.is_empty() {
        return parts.join("\n");
    }
    match &update["rawOutput"] {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Object(map) => match map.get("output").and_then(Value::as_str) {
            Some(text) => text.to_owned(),
            None => Value::Object(map.clone()).to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn updates(lines: &[Value]) -> Vec<Event> {
        let mut tools = Tools::default();
        let mut out = Vec::new();
        for line in lines {
            tools.update(line, &mut out);
        }
        out
    }

    #[test]
    fn tool_calls_become_one_use_and_one_result() {
        let out = updates(&[
            json!({"sessionUpdate": "tool_call", "toolCallId": "c1", "title": "bash",
                "kind": "execute", "status": "pending", "rawInput": {"command": "ls"}}),
            json!({"sessionUpdate": "tool_call_update", "toolCallId": "c1",
                "title": "ls the workspace", "status": "in_progress", "rawInput": {"command": "ls"}}),
            json!({"sessionUpdate": "tool_call_update", "toolCallId": "c1",
                "status": "completed", "content": [{"type": "content",
                "content": {"type": "text", "text": "a.txt"}}]}),
            json!({"sessionUpdate": "tool_call_update", "toolCallId": "c1",
                "status": "completed"}),
            json!({"sessionUpdate": "tool_call_update", "toolCallId": "c2",
                "title": "edit", "status": "failed", "rawOutput": {"error": "denied"}}),
        ]);
        assert_eq!(
            out,
            vec![
                Event::ToolUse {
                    id: "c1".into(),
                    name: "bash".into(),
                    input_json: r#"{"command":"ls"}"#.into()
                },
                Event::ToolResult {
                    id: "c1".into(),
                    content: "a.txt".into(),
                    is_error: false
                },
                Event::ToolUse {
                    id: "c2".into(),
                    name: "edit".into(),
                    input_json: "{}".into()
                },
                Event::ToolResult {
                    id: "c2".into(),
                    content: r#"{"error":"denied"}"#.into(),
                    is_error: true
                },
            ]
        );
    }
}
