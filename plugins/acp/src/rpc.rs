//! ACP's wire format: newline-delimited JSON-RPC 2.0 on the agent's stdin/stdout. Builds the
//! lines the client writes and classifies the lines the agent writes. Pure, so it is unit
//! tested natively.

use serde_json::{Value, json};

/// The ACP protocol version this client speaks.
pub const PROTOCOL_VERSION: u64 = 1;
/// Longest beginning of a malformed line quoted in an error.
const EXCERPT_CHARS: usize = 120;
/// JSON-RPC's "method not found": the answer to a client method this plugin does not serve.
pub const METHOD_NOT_FOUND: i64 = -32601;

/// One line the agent wrote, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The answer to one of the client's requests: its `result`, or its `error` in words.
    Response {
        id: u64,
        outcome: Result<Value, String>,
    },
    /// A method the agent calls on the client (`session/request_permission`, `fs/…`).
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    /// A notification (`session/update`).
    Notification { method: String, params: Value },
}

/// A line that is not JSON-RPC 2.0: the run ends failed with its beginning in the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the agent wrote a line that is not JSON-RPC 2.0: {}",
            self.0
        )
    }
}

/// The line's first [`EXCERPT_CHARS`] characters, for an error a person reads.
pub fn excerpt(line: &str) -> String {
    let mut out: String = line.chars().take(EXCERPT_CHARS).collect();
    if out.len() < line.len() {
        out.push('…');
    }
    out
}

/// Classifies one stdout line of the agent; `None` for a blank line.
pub fn parse(line: &str) -> Option<Result<Incoming, Malformed>> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return None;
    }
    let bad = || Malformed(excerpt(trimmed));
    let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(trimmed) else {
        return Some(Err(bad()));
    };
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some(Err(bad()));
    }
    let method = message
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let params = message.remove("params").unwrap_or(Value::Null);
    let id = message.remove("id");
    Some(match (method, id) {
        (Some(method), Some(id)) if !id.is_null() => Ok(Incoming::Request { id, method, params }),
        (Some(method), _) => Ok(Incoming::Notification { method, params }),
        (None, Some(id)) => match id.as_u64() {
            Some(id) => {
                let outcome = match (message.remove("result"), message.remove("error")) {
                    (_, Some(error)) => Err(error_words(&error)),
                    (Some(result), None) => Ok(result),
                    (None, None) => return Some(Err(bad())),
                };
                Ok(Incoming::Response { id, outcome })
            }
            None => Err(bad()),
        },
        (None, None) => Err(bad()),
    })
}

/// A JSON-RPC error object in words: its message, then its code and data.
fn error_words(error: &Value) -> String {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("error");
    let mut words = match error.get("code").and_then(Value::as_i64) {
        Some(code) => format!("{message} (code {code})"),
        None => message.to_owned(),
    };
    if let Some(data) = error.get("data").filter(|d| !d.is_null()) {
        words.push_str(": ");
        words.push_str(&excerpt(&data.to_string()));
    }
    words
}

/// A request line from the client.
pub fn request(id: u64, method: &str, params: Value) -> String {
    line(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
}

/// A notification line from the client (`session/cancel`).
pub fn notification(method: &str, params: Value) -> String {
    line(json!({"jsonrpc": "2.0", "method": method, "params": params}))
}

/// The client's successful answer to an agent's request.
pub fn response(id: &Value, result: Value) -> String {
    line(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

/// The client's error answer to an agent's request.
pub fn error_response(id: &Value, code: i64, message: &str) -> String {
    line(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
}

fn line(value: Value) -> String {
    let mut text = value.to_string();
    text.push('\n');
    text
}

/// `initialize`'s params: only what this client really implements is advertised: text files
/// inside the workspace, no terminal (the agent runs commands with its own tools, which ask
/// permission first).
pub fn initialize_params() -> Value {
    json!({
        "protocolVersion": PROTOCOL_VERSION,
        "clientCapabilities": {
            "fs": {"readTextFile": true, "writeTextFile": true},
            "terminal": false
        },
        "clientInfo": {"name": "rdev", "version": env!("CARGO_PKG_VERSION")}
    })
}

/// What `initialize` told the client about the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentInfo {
    pub protocol_version: Option<u64>,
    pub load_session: bool,
    pub name: Option<String>,
    pub version: Option<String>,
}

impl AgentInfo {
    /// Reads `initialize`'s result; an agent on another protocol version is refused.
    pub fn from_result(result: &Value) -> Result<Self, String> {
        let info = Self {
            protocol_version: result.get("protocolVersion").and_then(Value::as_u64),
            load_session: result["agentCapabilities"]["loadSession"]
                .as_bool()
                .unwrap_or(false),
            name: result["agentInfo"]["name"].as_str().map(str::to_owned),
            version: result["agentInfo"]["version"].as_str().map(str::to_owned),
        };
        match info.protocol_version {
            Some(PROTOCOL_VERSION) => Ok(info),
            Some(other) => Err(format!(
                "the agent speaks ACP protocol version {other}; rdev speaks {PROTOCOL_VERSION}"
            )),
            None => Err("the agent's initialize result has no protocolVersion".into()),
        }
    }
}

/// `session/new`'s params: the workspace as `cwd`, no MCP servers yet.
pub fn new_session_params(cwd: &str, mcp_servers: &Value) -> Value {
    json!({"cwd": cwd, "mcpServers": mcp_servers})
}

/// `session/load`'s params, to continue `session_id` (with the project's MCP servers again).
pub fn load_session_params(session_id: &str, cwd: &str, mcp_servers: &Value) -> Value {
    json!({"sessionId": session_id, "cwd": cwd, "mcpServers": mcp_servers})
}

/// `session/prompt`'s params: the prompt as one text block.
pub fn prompt_params(session_id: &str, text: &str) -> Value {
    json!({"sessionId": session_id, "prompt": [{"type": "text", "text": text}]})
}

/// `session/cancel`'s params.
pub fn cancel_params(session_id: &str) -> Value {
    json!({"sessionId": session_id})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_responses_requests_and_notifications() {
        let response = parse(r#"{"jsonrpc":"2.0","id":3,"result":{"stopReason":"end_turn"}}"#);
        assert_eq!(
            response,
            Some(Ok(Incoming::Response {
                id: 3,
                outcome: Ok(json!({"stopReason": "end_turn"}))
            }))
        );
        let error = parse(
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Invalid params","data":"x"}}"#,
        );
        assert_eq!(
            error,
            Some(Ok(Incoming::Response {
                id: 1,
                outcome: Err("Invalid params (code -32602): \"x\"".into())
            }))
        );
        let request = parse(
            r#"{"jsonrpc":"2.0","id":"p1","method":"session/request_permission","params":{}}"#,
        );
        assert!(matches!(
            request,
            Some(Ok(Incoming::Request { ref method, .. })) if method == "session/request_permission"
        ));
        let note = parse(r#"{"jsonrpc":"2.0","method":"session/update","params":{"a":1}}"#);
        assert_eq!(
            note,
            Some(Ok(Incoming::Notification {
                method: "session/update".into(),
                params: json!({"a": 1})
            }))
        );
        assert_eq!(parse("   "), None);
    }

    #[test]
    fn malformed_lines_quote_their_beginning() {
        for line in [
            "Loading plugins…",
            "[1,2]",
            r#"{"id":1,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":"x","result":{}}"#,
            r#"{"jsonrpc":"2.0"}"#,
        ] {
            let Some(Err(Malformed(excerpt))) = parse(line) else {
                panic!("{line} was accepted");
            };
            assert_eq!(excerpt, line);
        }
        let long = "x".repeat(500);
        let Some(Err(bad)) = parse(&long) else {
            panic!("accepted");
        };
        assert_eq!(bad.0.chars().count(), EXCERPT_CHARS + 1);
        assert!(bad.to_string().contains("not JSON-RPC 2.0: xxx"));
    }

    #[test]
    fn reads_the_real_initialize_answer() {
        let fixture = include_str!("../tests/fixtures/opencode_initialize.jsonl");
        let first = fixture.lines().next().expect("a line");
        let Some(Ok(Incoming::Response { id: 0, outcome })) = parse(first) else {
            panic!("not a response");
        };
        let info = AgentInfo::from_result(&outcome.expect("a result")).expect("version 1");
        assert!(info.load_session);
        assert_eq!(info.name.as_deref(), Some("OpenCode"));
        assert_eq!(info.version.as_deref(), Some("1.18.33"));
        assert!(AgentInfo::from_result(&json!({"protocolVersion": 2})).is_err());
    }

    #[test]
    fn lines_are_single_json_rpc_lines() {
        let line = request(1, "session/new", new_session_params("/w", &json!([])));
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let value: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["params"], json!({"cwd": "/w", "mcpServers": []}));
        let caps = initialize_params();
        assert_eq!(caps["clientCapabilities"]["terminal"], json!(false));
        assert_eq!(
            caps["clientCapabilities"]["fs"],
            json!({"readTextFile": true, "writeTextFile": true})
        );
    }
}
