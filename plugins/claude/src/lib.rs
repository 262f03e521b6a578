//! The Claude Code provider: runs `claude -p` in its bidirectional stream-json mode in the
//! project's workspace (whose per-project HOME keeps `~/.claude` session files). The prompt
//! and every follow-up input go to the CLI's stdin as `user` messages; every output line is
//! streamed as events; each permission prompt (`can_use_tool`) is put to the host's
//! `request-permission` and answered on stdin. The status comes from the CLI's last `result`
//! line, never from its exit code. The API key (and an optional gateway URL) reach the CLI as
//! secret references the host resolves, so their values never enter this guest.

mod ask;
mod control;
mod options;
mod parse;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rdev_sdk::v0_2::exec::{ExecError, ExitStatus, Process, Signal};
use rdev_sdk::v0_2::process::{self, CommandBuilder, Lines};
use rdev_sdk::v0_2::{
    AgentRequest, AgentResult, CleanupRequest, OutputStream, Provider, ProviderCapabilities,
    ProviderError, ResultStatus, TokenUsage, event, plain, result,
};

use control::Control;
use options::{Invocation, Options};
use parse::{Event, Joined, LineJoiner, Outcome, Parser};

/// Lines beyond this are dropped with a warning instead of exhausting guest memory.
const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;
/// Stderr lines kept for the error of a run that ended without a result.
const STDERR_TAIL_LINES: usize = 20;
/// Steps between SIGTERM and SIGKILL once the grace after SIGINT is spent.
const TERMINATE_STEP_MS: u32 = 2_000;

struct Claude;

impl Provider for Claude {
    fn capabilities() -> ProviderCapabilities {
        rdev_sdk::v0_2::agent_capabilities(
            "Claude Code CLI (`claude -p`, bidirectional stream-json) in the project's workspace",
        )
    }

    fn execute(request: AgentRequest) -> Result<AgentResult, ProviderError> {
        let options =
            Options::parse(&request.options_json).map_err(ProviderError::InvalidRequest)?;
        let args = options::args(Invocation {
            session_id: request.session_id.as_deref(),
            model: request.model.as_deref(),
            options: &options,
        })
        .map_err(ProviderError::InvalidRequest)?;
        let retries = options.max_retries.unwrap_or(options::DEFAULT_MAX_RETRIES);
        let mut command = CommandBuilder::new("claude");
        if !options.mcp_servers.is_empty() {
            // Inline JSON; secrets are variables of the CLI's environment, filled by the host.
            let shaped = rdev_sdk::mcp::claude(&options.mcp_servers)
                .map_err(ProviderError::InvalidRequest)?;
            command = command.args(["--mcp-config".to_owned(), shaped.config.to_string()]);
            for (var, credential) in &shaped.secret_env {
                command = command.secret_env(var, credential, true);
            }
        }
        let spawned = command
            .args(args)
            .working_dir(request.working_dir.clone())
            .secret_env("ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY", true)
            .secret_env("ANTHROPIC_BASE_URL", "ANTHROPIC_BASE_URL", false)
            .env("CLAUDE_CODE_MAX_RETRIES", retries.to_string())
            .env("DISABLE_AUTOUPDATER", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .spawn();
        let process = match spawned {
            Ok(process) => process,
            Err(ExecError::Cancelled) => return Err(ProviderError::Cancelled),
            Err(ExecError::MissingSecret(name)) => {
                return Ok(result::failed(
                    request.session_id.clone(),
                    format!("credential {name} is not set; add it to the credential store"),
                ));
            }
            Err(e) => return Err(ProviderError::Unavailable(process::describe(&e))),
        };
        let mut run = Run::new(&request, &options);
        run.write(&process, &control::user_message(&request.prompt));
        let end = run.read(&process)?;
        run.finish(&process, end)
    }

    fn cancel(_request: CleanupRequest) -> Result<(), ProviderError> {
        // The host kills the process group with the instance; the session files stay on
        // disk, so the session remains resumable and nothing else needs cleaning up.
        Ok(())
    }
}

/// How reading the output ended.
enum End {
    /// Both streams closed.
    Closed,
    /// The host cancelled the execution.
    Cancelled,
    /// The idle watchdog fired.
    Idle(u32),
}

/// One execution's state while its output is read.
struct Run {
    parser: Parser,
    joiner: LineJoiner,
    stderr_tail: VecDeque<String>,
    requested_session: Option<String>,
    grace_ms: u32,
    idle_secs: u32,
    /// False once stdin is closed: after a turn ended with no input waiting, or when the
    /// CLI stopped reading it.
    stdin_open: bool,
    /// Turns whose end was already handled (the parser counts `result` lines).
    turns_ended: u32,
    /// When the CLI last printed something (or a decision came back), for the watchdog.
    last_activity: Instant,
}

impl Run {
    fn new(request: &AgentRequest, options: &Options) -> Self {
        Self {
            parser: Parser::new(),
            joiner: LineJoiner::new(MAX_LINE_BYTES),
            stderr_tail: VecDeque::new(),
            requested_session: request.session_id.clone(),
            grace_ms: options
                .cancel_grace_ms
                .unwrap_or(options::DEFAULT_CANCEL_GRACE_MS),
            idle_secs: options
                .idle_timeout_secs
                .unwrap_or(options::DEFAULT_IDLE_TIMEOUT_SECS),
            stdin_open: true,
            turns_ended: 0,
            last_activity: Instant::now(),
        }
    }

    /// Writes a line to the CLI's stdin; a CLI that stopped reading is reported once and
    /// its output still read to the end.
    fn write(&mut self, process: &Process, line: &str) {
        if !self.stdin_open {
            return;
        }
        if let Err(e) = process.write_stdin(line.as_bytes()) {
            self.stdin_open = false;
            let _ = event::emit(event::warning(format!(
                "claude stopped reading its input: {}",
                process::describe(&e)
            )));
        }
    }

    /// Answers every control request the CLI wrote; `Err` when the command was cancelled
    /// while a decision was pending.
    fn answer_controls(&mut self, process: &Process) -> Result<(), ask::Cancelled> {
        for control in self.parser.take_controls() {
            let line = match control {
                Control::CanUseTool(ask) => ask::decide(&ask)?,
                Control::Unsupported {
                    request_id,
                    subtype,
                } => control::unsupported(&request_id, &subtype),
            };
            self.write(process, &line);
            self.last_activity = Instant::now();
        }
        Ok(())
    }

    /// Hands waiting follow-up input to the CLI (it queues input behind the turn under way).
    /// Returns whether there was any.
    fn deliver_input(&mut self, process: &Process) -> Result<bool, ask::Cancelled> {
        if !self.stdin_open {
            return Ok(false);
        }
        let lines = ask::pending_input()?;
        for line in &lines {
            self.write(process, line);
        }
        Ok(!lines.is_empty())
    }

    /// After a turn ended: input waiting starts another; none closes stdin, so the CLI ends
    /// once the turns already queued are done.
    fn after_turn(&mut self, process: &Process) -> Result<(), ask::Cancelled> {
        if self.parser.results() == self.turns_ended {
            return Ok(());
        }
        self.turns_ended = self.parser.results();
        if self.stdin_open && !self.deliver_input(process)? {
            process.close_stdin();
            self.stdin_open = false;
        }
        Ok(())
    }

    /// What is left of the idle watchdog's time, at least 1 ms.
    fn idle_left_ms(&self) -> Option<u32> {
        let limit = Duration::from_secs(u64::from(self.idle_secs));
        let left = limit.checked_sub(self.last_activity.elapsed())?;
        Some(u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1))
    }

    /// Reads and emits output, answering permission prompts and handing over follow-up
    /// input, until the process closes it, the host cancels, or the idle watchdog fires.
    /// A read that returns idle early means input arrived (or the watchdog is due).
    fn read(&mut self, process: &Process) -> Result<End, ProviderError> {
        loop {
            let Some(left_ms) = self.idle_left_ms() else {
                return Ok(End::Idle(self.idle_secs));
            };
            let step = match process::read_lines(process, Some(left_ms)) {
                Ok(Lines::Lines(lines)) => self.take_lines(process, lines),
                Ok(Lines::Idle) => self.deliver_input(process).map(|_| ()),
                Ok(Lines::Closed) => {
                    let mut events = Vec::new();
                    if let Some(rest) = self.joiner.finish() {
                        self.parser.feed(&rest, &mut events);
                    }
                    if event::emit_all(&plain::to_abi(events)).is_err() {
                        return Ok(End::Cancelled);
                    }
                    return Ok(End::Closed);
                }
                Err(ExecError::Cancelled) => return Ok(End::Cancelled),
                Err(e) => return Err(ProviderError::Failed(process::describe(&e))),
            };
            if step.is_err() {
                return Ok(End::Cancelled);
            }
        }
    }

    /// Emits a batch of lines, then answers what they asked and ends or continues the turn.
    fn take_lines(
        &mut self,
        process: &Process,
        lines: Vec<rdev_sdk::v0_2::exec::OutputLine>,
    ) -> Result<(), ask::Cancelled> {
        self.last_activity = Instant::now();
        let mut events = Vec::new();
        for line in lines {
            self.take_line(line.stream, line.text, line.partial, &mut events);
        }
        if event::emit_all(&plain::to_abi(events)).is_err() {
            return Err(ask::Cancelled);
        }
        self.answer_controls(process)?;
        self.after_turn(process)
    }

    fn take_line(
        &mut self,
        stream: OutputStream,
        text: String,
        partial: bool,
        out: &mut Vec<Event>,
    ) {
        match stream {
            OutputStream::Stdout => match self.joiner.push(text, partial) {
                Joined::Line(line) => self.parser.feed(&line, out),
                Joined::Pending => {}
                Joined::TooLong(size) => out.push(Event::Warning(format!(
                    "dropped an output line of {size} bytes (limit {MAX_LINE_BYTES})"
                ))),
            },
            OutputStream::Stderr => {
                if self.stderr_tail.len() == STDERR_TAIL_LINES {
                    self.stderr_tail.pop_front();
                }
                self.stderr_tail.push_back(text.clone());
                out.push(Event::Raw {
                    kind: "stderr".into(),
                    json: serde_json::Value::String(text).to_string(),
                });
            }
        }
    }

    /// After a cancel: SIGINT lets the CLI write its final result (the session stays
    /// resumable); whatever it prints within the grace is still parsed and emitted, then
    /// the process group is terminated and killed.
    fn interrupt(&mut self, process: &Process) -> Result<ExitStatus, ProviderError> {
        let io = |e: ExecError| ProviderError::Failed(process::describe(&e));
        process.signal(Signal::Interrupt).map_err(io)?;
        let deadline = Instant::now() + Duration::from_millis(u64::from(self.grace_ms));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let left_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1);
            match process::read_lines(process, Some(left_ms)) {
                Ok(Lines::Lines(lines)) => {
                    let mut events = Vec::new();
                    for line in lines {
                        self.take_line(line.stream, line.text, line.partial, &mut events);
                    }
                    // Emitting may report the cancel again; the events are best effort now.
                    let _ = event::emit_all(&plain::to_abi(events));
                }
                Ok(Lines::Idle) => {}
                Ok(Lines::Closed) => break,
                Err(_) => break,
            }
        }
        if let Some(status) = process.wait(Some(1)).map_err(io)? {
            return Ok(status);
        }
        for signal in [Signal::Terminate, Signal::Kill] {
            process.signal(signal).map_err(io)?;
            if let Some(status) = process.wait(Some(TERMINATE_STEP_MS)).map_err(io)? {
                return Ok(status);
            }
        }
        process::wait(process).map_err(io)
    }

    fn finish(mut self, process: &Process, end: End) -> Result<AgentResult, ProviderError> {
        let io = |e: ExecError| ProviderError::Failed(process::describe(&e));
        let (status, stop_reason) = match end {
            End::Closed => (process::wait(process).map_err(io)?, None),
            End::Cancelled => (self.interrupt(process)?, Some(ResultStatus::Cancelled)),
            End::Idle(secs) => {
                let _ = event::emit(event::warning(format!(
                    "claude printed nothing for {secs} s; stopping it"
                )));
                (self.interrupt(process)?, Some(ResultStatus::Failed))
            }
        };
        let session_id = self
            .parser
            .session_id()
            .map(str::to_owned)
            .or(self.requested_session.clone());
        let mut result = match self.parser.outcome() {
            Some(outcome) => from_outcome(outcome, session_id),
            None => {
                let tail: Vec<&str> = self.stderr_tail.iter().map(String::as_str).collect();
                let how = match (status.code, status.signal) {
                    (Some(code), _) => format!("exited with status {code}"),
                    (None, Some(signal)) => format!("was killed by signal {signal}"),
                    (None, None) => "ended".to_owned(),
                };
                let mut error = format!("claude {how} without a result");
                if !tail.is_empty() {
                    error.push_str(": ");
                    error.push_str(tail.join("\n").trim());
                }
                result::failed(session_id, error)
            }
        };
        result.exit_code = status.code;
        match stop_reason {
            Some(ResultStatus::Cancelled) => {
                result.status = ResultStatus::Cancelled;
                result.error = Some("cancelled".into());
            }
            Some(ResultStatus::Failed) => {
                result.status = ResultStatus::Failed;
                result.error = Some(format!(
                    "claude printed nothing for {} s and was stopped",
                    self.idle_secs
                ));
            }
            _ => {}
        }
        Ok(result)
    }
}

fn from_outcome(outcome: &Outcome, session_id: Option<String>) -> AgentResult {
    let failed = outcome.is_error;
    let mut details = outcome.details.clone();
    details.insert("subtype".into(), outcome.subtype.clone().into());
    details.insert("is_error".into(), outcome.is_error.into());
    if let Some(ms) = outcome.duration_ms {
        details.insert("duration_ms".into(), ms.into());
    }
    if !outcome.errors.is_empty() {
        details.insert("errors".into(), outcome.errors.clone().into());
    }
    // A refused tool use may not fail the run, but the user must learn of it from the
    // result, not only from its details.
    let error = match (
        failed.then(|| outcome.error_message()),
        outcome.denials.is_empty(),
    ) {
        (error, true) => error,
        (None, false) => Some(outcome.denials.join("; ")),
        (Some(error), false) => Some(format!("{error}; {}", outcome.denials.join("; "))),
    };
    AgentResult {
        status: if failed {
            ResultStatus::Failed
        } else {
            ResultStatus::Completed
        },
        exit_code: None,
        session_id: outcome.session_id.clone().or(session_id),
        final_text: outcome.result.clone(),
        error,
        cost_usd: outcome.cost_usd,
        usage: outcome.usage.map(TokenUsage::from),
        num_turns: outcome.num_turns,
        details_json: Some(serde_json::Value::Object(details).to_string()),
    }
}

rdev_sdk::v0_2::export_provider!(Claude);
