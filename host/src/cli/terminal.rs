//! `rdev run` on a terminal: a person in the loop without a second shell. An approval the
//! command waits for is shown inline (tool, summary, abbreviated input) and answered with
//! `y` (allow), `n [reason]` (deny, the reason told to the agent) or `a` (always: allow and
//! remember); any other line typed while the command runs is sent to it as follow-up input.
//! Only when stdin is a terminal: a script's stdin is never read, and it decides with
//! `rdev approve` / `rdev deny` (the approval's id is printed on stderr).

use std::collections::VecDeque;
use std::io::{BufRead as _, IsTerminal as _};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::client::Connection;

/// Longest summary or input shown in a prompt, in characters; the rest is cut with `…`.
const SHOWN: usize = 200;

/// What the stream tells the prompter.
#[derive(Debug)]
enum Notice {
    Requested(Value),
    Resolved(Value),
}

/// A person's answer to the approval being asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub allow: bool,
    pub remember: bool,
    pub message: Option<String>,
}

/// The terminal side of a running command: hand it the stream's approval events, it asks
/// and posts the decisions, and sends other typed lines as input. Dropping it stops it.
pub struct Prompter {
    notices: mpsc::UnboundedSender<Notice>,
    task: JoinHandle<()>,
}

impl Prompter {
    /// Starts asking on this terminal for command `command_id`, or `None` when stdin is not
    /// a terminal.
    pub fn on_terminal(connection: Connection, command_id: String) -> Option<Self> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        let lines = read_lines();
        let (notices, received) = mpsc::unbounded_channel();
        let task = tokio::spawn(prompt_loop(connection, command_id, received, lines));
        eprintln!("(type a line to send it to the agent; Ctrl-C cancels the command)");
        Some(Self { notices, task })
    }

    /// An `approval_requested` event's data.
    pub fn requested(&self, data: &Value) {
        let _ = self
            .notices
            .send(Notice::Requested(data["approval"].clone()));
    }

    /// An `approval_resolved` event's data.
    pub fn resolved(&self, data: &Value) {
        let _ = self
            .notices
            .send(Notice::Resolved(data["approval"].clone()));
    }
}

impl Drop for Prompter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Lines typed on stdin, read by a thread of their own (a blocking read would keep a
/// runtime from shutting down; a plain thread ends with the process).
fn read_lines() -> mpsc::UnboundedReceiver<String> {
    let (sender, lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    lines
}

/// Asks the approvals in the order they came, one at a time; a typed line answers the one
/// asked, or is follow-up input when none waits.
async fn prompt_loop(
    connection: Connection,
    command_id: String,
    mut notices: mpsc::UnboundedReceiver<Notice>,
    mut lines: mpsc::UnboundedReceiver<String>,
) {
    let mut waiting: VecDeque<Value> = VecDeque::new();
    let mut typing = true;
    loop {
        tokio::select! {
            notice = notices.recv() => match notice {
                Some(Notice::Requested(approval)) => {
                    if approval["status"] == "pending" {
                        waiting.push_back(approval);
                        if waiting.len() == 1 {
                            ask(&waiting[0]);
                        }
                    }
                }
                Some(Notice::Resolved(approval)) => {
                    let id = &approval["id"];
                    if let Some(at) = waiting.iter().position(|a| &a["id"] == id) {
                        waiting.remove(at);
                        eprintln!("{}", resolved_elsewhere(&approval));
                        if at == 0 && let Some(next) = waiting.front() {
                            ask(next);
                        }
                    }
                }
                None => return,
            },
            line = lines.recv(), if typing => {
                let Some(line) = line else {
                    typing = false;
                    continue;
                };
                match waiting.front() {
                    Some(approval) => match parse_answer(&line) {
                        Some(answer) => {
                            post_decision(&connection, approval, answer).await;
                            waiting.pop_front();
                            if let Some(next) = waiting.front() {
                                ask(next);
                            }
                        }
                        None => eprint!("{}", question()),
                    },
                    None => send_input(&connection, &command_id, &line).await,
                }
            }
        }
    }
}

/// What the person answers: `y`/`yes`, `a`/`always`, `n`/`no` with an optional reason after
/// it; `None` for anything else.
pub(crate) fn parse_answer(line: &str) -> Option<Answer> {
    let line = line.trim();
    let (word, rest) = line
        .split_once(char::is_whitespace)
        .map_or((line, ""), |(w, r)| (w, r.trim()));
    let message = (!rest.is_empty()).then(|| rest.to_owned());
    match word.to_ascii_lowercase().as_str() {
        "y" | "yes" if message.is_none() => Some(Answer {
            allow: true,
            remember: false,
            message: None,
        }),
        "a" | "always" if message.is_none() => Some(Answer {
            allow: true,
            remember: true,
            message: None,
        }),
        "n" | "no" => Some(Answer {
            allow: false,
            remember: false,
            message,
        }),
        _ => None,
    }
}

fn question() -> &'static str {
    "allow? [y]es / [n]o [reason] / [a]lways: "
}

/// Prints the approval and the question.
fn ask(approval: &Value) {
    eprint!("{}{}", describe(approval), question());
}

/// The approval as a person reads it: who asks for what, and the input abbreviated. Every
/// text is the agent's, so control characters are shown escaped, never sent to the
/// terminal.
pub(crate) fn describe(approval: &Value) -> String {
    let field = |name: &str| printable(approval[name].as_str().unwrap_or_default());
    let input = match &approval["input"] {
        Value::Null => String::new(),
        input => format!("  input:   {}\n", printable(&input.to_string())),
    };
    format!(
        "\napproval {} — {} wants to run:\n  {}\n{input}",
        field("id"),
        field("tool"),
        field("summary"),
    )
}

/// One line of at most [`SHOWN`] characters, control characters escaped.
pub(crate) fn printable(text: &str) -> String {
    let mut shown = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == SHOWN {
            shown.push('…');
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// Says how an approval asked here was decided by someone else (or expired).
fn resolved_elsewhere(approval: &Value) -> String {
    let status = approval["status"].as_str().unwrap_or("resolved");
    let by = approval["decided_by"]
        .as_str()
        .map(|by| format!(" by {}", printable(by)))
        .unwrap_or_default();
    format!(
        "\napproval {} {status}{by}",
        printable(approval["id"].as_str().unwrap_or_default())
    )
}

async fn post_decision(connection: &Connection, approval: &Value, answer: Answer) {
    let id = approval["id"].as_str().unwrap_or_default();
    let body = json!({
        "decision": if answer.allow { "allow" } else { "deny" },
        "message": answer.message,
        "remember": answer.remember,
    });
    let path = format!("/approvals/{id}");
    match connection
        .call(reqwest::Method::POST, &path, Some(body))
        .await
    {
        Ok(decided) => eprintln!(
            "approval {} {}{}",
            printable(id),
            decided["status"].as_str().unwrap_or_default(),
            if answer.remember { " (remembered)" } else { "" }
        ),
        Err(error) => eprintln!("rdev: deciding approval {}: {error:#}", printable(id)),
    }
}

async fn send_input(connection: &Connection, command_id: &str, line: &str) {
    if line.trim().is_empty() {
        return;
    }
    let path = format!("/commands/{command_id}/input");
    match connection
        .call(reqwest::Method::POST, &path, Some(json!({"text": line})))
        .await
    {
        Ok(_) => eprintln!("[input sent]"),
        Err(error) => eprintln!("rdev: sending input: {error:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_yes_no_with_a_reason_or_always() {
        let allow = parse_answer(" Y ").expect("y");
        assert!(allow.allow && !allow.remember && allow.message.is_none());
        let always = parse_answer("always").expect("always");
        assert!(always.allow && always.remember);
        let deny = parse_answer("n  not in prod ").expect("n");
        assert!(!deny.allow);
        assert_eq!(deny.message.as_deref(), Some("not in prod"));
        assert_eq!(
            parse_answer("no"),
            Some(Answer {
                allow: false,
                remember: false,
                message: None
            })
        );
        assert_eq!(parse_answer("maybe"), None);
        assert_eq!(
            parse_answer("yes please"),
            None,
            "only a denial takes words"
        );
        assert_eq!(parse_answer(""), None);
    }

    #[test]
    fn agent_text_is_shown_abbreviated_and_without_control_characters() {
        let approval = json!({
            "id": "apr-1", "tool": "Bash", "summary": "rm x\x1b[2J\nmore",
            "input": {"command": "y".repeat(500)},
        });
        let shown = describe(&approval);
        assert!(!shown.contains('\x1b'), "{shown:?}");
        assert!(shown.contains("rm x\\u{1b}[2J\\nmore"), "{shown:?}");
        assert!(shown.contains('…'), "long input is cut: {shown:?}");
        assert!(
            shown.lines().all(|l| l.chars().count() < SHOWN + 20),
            "{shown}"
        );
    }
}
