//! Following a command's event stream on a server (`rdev run`, `rdev logs`): events printed
//! readably, streamed text once, reconnecting with `Last-Event-ID` until `done`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt;
use serde_json::Value;

use super::client::Connection;
use super::output::{StreamedText, exit_code_for};
use super::spinner::Spinner;
use super::terminal::{Prompter, printable};
use crate::domain::ResultStatus;

/// How a followed command ended, as its `done` event says.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub status: ResultStatus,
    /// The provider's exit code, when it has one.
    pub exit_code: Option<i32>,
    /// The session a later `rdev run --session` continues.
    pub session_id: Option<String>,
}

impl Ended {
    /// The process exit code for this ending.
    pub fn exit_code(&self) -> i32 {
        exit_code_for(self.status, self.exit_code)
    }
}

/// Prints stream events readably; streamed text is printed once. Approvals go to the
/// terminal's prompter when there is one, else their id is printed for `rdev approve`.
struct Renderer<'a> {
    messages: StreamedText,
    thinking: StreamedText,
    prompter: Option<&'a Prompter>,
}

impl<'a> Renderer<'a> {
    fn new(prompter: Option<&'a Prompter>) -> Self {
        Self {
            messages: StreamedText::default(),
            thinking: StreamedText::new("thinking: "),
            prompter,
        }
    }

    /// Prints one event; returns how the command ended at `done`.
    fn event(&mut self, event: &str, data: &Value) -> Option<Ended> {
        let text = data["text"].as_str().unwrap_or_default();
        let partial = data["partial"].as_bool().unwrap_or(false);
        match event {
            "output" if data["stream"] == "stderr" => eprint!("{text}"),
            "output" => stdout(text),
            "message" => stdout(&self.messages.message(text, partial)),
            "thinking" => stdout(&self.thinking.message(text, partial)),
            "tool_use" => println!(
                "→ {} {}",
                data["name"].as_str().unwrap_or("tool"),
                data["input"]
            ),
            "error" | "warning" => {
                eprintln!("{event}: {}", data["message"].as_str().unwrap_or_default())
            }
            "status" => eprintln!("[{}]", data["status"].as_str().unwrap_or_default()),
            "approval_requested" => match self.prompter {
                Some(prompter) => prompter.requested(data),
                None => waiting_line(&data["approval"]),
            },
            "approval_resolved" => {
                if let Some(prompter) = self.prompter {
                    prompter.resolved(data);
                }
            }
            "done" => return Some(done(data)),
            _ => {}
        }
        None
    }
}

/// Off a terminal: which approval waits, so a person or script can decide it with
/// `rdev approve` / `rdev deny`.
fn waiting_line(approval: &Value) {
    if approval["status"] != "pending" {
        return;
    }
    let field = |name: &str| printable(approval[name].as_str().unwrap_or_default());
    eprintln!(
        "[approval {} waiting: {} {} — rdev approve/deny {}]",
        field("id"),
        field("tool"),
        field("summary"),
        field("id")
    );
}

/// Writes streamed text now, not at the next newline.
fn stdout(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Prints the final status line of a `done` event and reads how the command ended.
fn done(data: &Value) -> Ended {
    let status = data["status"].as_str().unwrap_or("failed");
    match data["error"].as_str() {
        Some(error) => eprintln!("[{status}: {error}]"),
        None => eprintln!("[{status}]"),
    }
    let result = &data["result"];
    let session_id = result["session_id"].as_str().map(str::to_owned);
    if let Some(session) = &session_id {
        eprintln!("session {session}");
    }
    Ended {
        status: match status {
            "completed" => ResultStatus::Completed,
            "cancelled" => ResultStatus::Cancelled,
            _ => ResultStatus::Failed,
        },
        exit_code: result["exit_code"]
            .as_i64()
            .and_then(|code| i32::try_from(code).ok()),
        session_id,
    }
}

/// Follows a stream to its `done` event, reconnecting with `Last-Event-ID` when the
/// connection drops. Returns the final status. `spinner` spins while nothing arrives;
/// `prompter` (a terminal's) asks the approvals the command waits for.
pub async fn follow(
    connection: &Connection,
    stream_url: &str,
    spinner: &Spinner,
    prompter: Option<&Prompter>,
) -> anyhow::Result<Ended> {
    let connection = &connection.resolved()?;
    let http = connection.client()?;
    let mut last_id: Option<String> = None;
    let mut failures = 0u32;
    let mut renderer = Renderer::new(prompter);
    loop {
        spinner.resume();
        let mut request = connection.request(&http, reqwest::Method::GET, stream_url)?;
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        let response = match request.send().await {
            Ok(response) if response.status().is_success() => response,
            Ok(response) => bail!("stream refused: {}", response.status()),
            Err(error) => {
                failures += 1;
                if failures > 10 {
                    return Err(error).context("the stream kept failing");
                }
                tokio::time::sleep(Duration::from_millis(500 * u64::from(failures))).await;
                continue;
            }
        };
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(chunk) = body.next().await {
            spinner.clear();
            let Ok(chunk) = chunk else { break };
            failures = 0;
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if id.is_some() {
                    last_id = id;
                }
                if let Some(event) = event {
                    let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                    if let Some(ended) = renderer.event(&event, &value) {
                        return Ok(ended);
                    }
                }
            }
            spinner.resume();
        }
        // The connection dropped before `done`: resume where it stopped.
        failures += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn done_gives_the_status_exit_code_and_session() {
        let mut renderer = Renderer::new(None);
        assert_eq!(
            renderer.event("output", &json!({"stream": "stdout", "text": ""})),
            None
        );
        let failed = renderer
            .event(
                "done",
                &json!({"status": "failed", "result": {"status": "failed", "exit_code": 3,
                        "session_id": "s-1", "duration_ms": 5}}),
            )
            .expect("done ends the stream");
        assert_eq!(failed.exit_code(), 3);
        assert_eq!(failed.session_id.as_deref(), Some("s-1"));
        let cancelled = renderer.event("done", &json!({"status": "cancelled"}));
        assert_eq!(cancelled.map(|e| e.exit_code()), Some(130));
        let completed = renderer.event("done", &json!({"status": "completed"}));
        assert_eq!(completed.map(|e| e.exit_code()), Some(0));
    }
}
