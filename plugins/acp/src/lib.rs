//! The Agent Client Protocol provider: spawns an ACP agent program (`opencode acp` unless
//! the options name another granted program) in the project's workspace and is its ACP
//! client: `initialize`, `session/new` (or `session/load` to continue a session), one
//! `session/prompt` per turn (the prompt, then each follow-up input), `session/cancel` on
//! the host's cancel. `session/update` notifications stream as events; the agent's
//! `session/request_permission` calls go to the host's `request-permission`; its
//! `fs/read_text_file` and `fs/write_text_file` calls are served inside the workspace
//! ([`fs`]). No terminal is advertised, so the agent runs commands with its own tools.
//!
//! The protocol ([`rpc`]), the mapping ([`map`]), the options and the file checks are pure
//! modules tested natively; this file holds the I/O.

mod fs;
mod map;
mod options;
mod rpc;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rdev_sdk::mcp;
use rdev_sdk::v0_2::exec::{ExecError, ExitStatus, Process};
use rdev_sdk::v0_2::interaction::{self, Decision, InputRead, InteractionError, PermissionRequest};
use rdev_sdk::v0_2::process::{self, CommandBuilder, Lines};
use rdev_sdk::v0_2::{
    AgentRequest, AgentResult, CleanupRequest, OutputStream, Provider, ProviderCapabilities,
    ProviderError, ResultStatus, TokenUsage, event, plain, result,
};
use serde_json::Value;

use map::{Decided, Event, Mapper, Stop, Usage};
use options::Options;
use rpc::{AgentInfo, Incoming};

/// A JSON-RPC line longer than this ends the command: no agent message is that large.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// Stderr lines kept for the error of an agent that ended without answering.
const STDERR_TAIL_LINES: usize = 20;
/// Steps between signals when the agent is stopped.
const STOP_STEP_MS: u32 = 2_000;
/// Time the agent gets to exit by itself once its stdin is closed.
const EXIT_WAIT_MS: u32 = 1_000;

struct Acp;

impl Provider for Acp {
    fn capabilities() -> ProviderCapabilities {
        rdev_sdk::v0_2::agent_capabilities(
            "An Agent Client Protocol agent (`opencode acp` by default) in the project's workspace",
        )
    }

    fn execute(request: AgentRequest) -> Result<AgentResult, ProviderError> {
        let options =
            Options::parse(&request.options_json).map_err(ProviderError::InvalidRequest)?;
        let cwd = workspace_path(&request)?;
        let mut command = CommandBuilder::new(options.command())
            .args(options.args())
            .working_dir(request.working_dir.clone());
        for (key, value) in &options.env {
            command = command.env(key, value);
        }
        for name in &options.credentials {
            command = command.secret_env(name, name, false);
        }
        // The project's MCP servers: credential values reach the agent's environment from
        // the host at spawn, never this guest.
        let shaped = mcp::acp(&options.mcp_servers).map_err(ProviderError::InvalidRequest)?;
        for (var, credential) in &shaped.secret_env {
            command = command.secret_env(var, credential, true);
        }
        for warning in &shaped.warnings {
            if event::emit(event::warning(warning.clone())).is_err() {
                return Err(ProviderError::Cancelled);
            }
        }
        let spawned = command.spawn();
        let process = match spawned {
            Ok(process) => process,
            Err(ExecError::Cancelled) => return Err(ProviderError::Cancelled),
            Err(e) => return Err(ProviderError::Unavailable(process::describe(&e))),
        };
        let files = fs::Files {
            working_dir: request.working_dir.clone(),
        };
        let mut client = Client::new(process, options.command(), files);
        client.mcp_servers = shaped.config;
        let outcome = client.run(&request, &cwd);
        let mut result = client.finish(outcome, &options);
        result.session_id = result.session_id.or(request.session_id);
        Ok(result)
    }

    fn cancel(_request: CleanupRequest) -> Result<(), ProviderError> {
        // The host kills the process group with the instance; the agent keeps its sessions
        // on disk, so nothing else needs cleaning up.
        Ok(())
    }
}

/// The workspace's absolute path (ACP's `cwd` must be absolute, and the guest only knows
/// paths relative to the workspace): what `pwd` prints there. Under a confined executor
/// it is the path the agent itself sees.
fn workspace_path(request: &AgentRequest) -> Result<String, ProviderError> {
    let failed = |why: String| ProviderError::Unavailable(format!("finding the workspace: {why}"));
    let process = match CommandBuilder::new("pwd")
        .working_dir(request.working_dir.clone())
        .spawn()
    {
        Ok(process) => process,
        Err(ExecError::Cancelled) => return Err(ProviderError::Cancelled),
        Err(e) => return Err(failed(process::describe(&e))),
    };
    process.close_stdin();
    let mut path = String::new();
    loop {
        match process::read_lines(&process, None) {
            Ok(Lines::Lines(lines)) => {
                for line in lines {
                    if line.stream == OutputStream::Stdout {
                        path.push_str(&line.text);
                    }
                }
            }
            Ok(Lines::Idle) => {}
            Ok(Lines::Closed) => break,
            Err(ExecError::Cancelled) => return Err(ProviderError::Cancelled),
            Err(e) => return Err(failed(process::describe(&e))),
        }
    }
    let _ = process::wait(&process);
    let path = path.trim().to_owned();
    if path.starts_with('/') {
        Ok(path)
    } else {
        Err(failed(format!("`pwd` printed {:?}", rpc::excerpt(&path))))
    }
}

/// Why a conversation with the agent ended before its turns were done.
enum Halt {
    /// The host cancelled the execution.
    Cancelled,
    /// The agent broke the protocol, answered with an error, or went away.
    Failed(String),
}

/// How the turns ended.
struct Outcome {
    stop: Stop,
    session_id: Option<String>,
    usage: Option<Usage>,
    turns: u32,
}

/// The client side of one agent process.
struct Client {
    process: Process,
    program: String,
    next_id: u64,
    mapper: Mapper,
    partial: String,
    stderr_tail: VecDeque<String>,
    /// While `session/load` replays the history, its updates are not this command's output.
    replaying: bool,
    session_id: Option<String>,
    /// Serves the agent's `fs/*` calls.
    files: fs::Files,
    /// `mcpServers` of `session/new` and `session/load`, in ACP's shape.
    mcp_servers: Value,
}

impl Client {
    fn new(process: Process, program: &str, files: fs::Files) -> Self {
        Self {
            files,
            process,
            program: program.to_owned(),
            next_id: 0,
            mapper: Mapper::new(),
            partial: String::new(),
            stderr_tail: VecDeque::new(),
            replaying: false,
            session_id: None,
            mcp_servers: Value::Array(Vec::new()),
        }
    }

    /// The whole conversation: handshake, session, then one prompt per turn while
    /// follow-up input is waiting.
    fn run(&mut self, request: &AgentRequest, cwd: &str) -> Result<Outcome, Halt> {
        let init = self.call("initialize", rpc::initialize_params(), None)?;
        let info = AgentInfo::from_result(&init).map_err(Halt::Failed)?;
        let session = self.open_session(request, &info, cwd)?;
        self.session_id = Some(session.clone());
        self.emit(vec![Event::Init {
            session_id: Some(session.clone()),
            model: request.model.clone(),
            cwd: Some(cwd.to_owned()),
            tools: Vec::new(),
            version: info.version.clone(),
        }])?;
        let mut prompt = request.prompt.clone();
        let mut usage: Option<Usage> = None;
        let mut turns = 0;
        loop {
            self.mapper.start_turn();
            turns += 1;
            let answer = self.call(
                "session/prompt",
                rpc::prompt_params(&session, &prompt),
                Some(&session),
            )?;
            if let Some(turn) = map::prompt_usage(&answer) {
                self.emit(vec![Event::Usage {
                    usage: turn,
                    cost_usd: None,
                }])?;
                usage.get_or_insert_with(Usage::default).add(turn);
            }
            let stop = map::stop(&answer);
            if stop != Stop::Completed {
                return Ok(Outcome {
                    stop,
                    session_id: Some(session),
                    usage,
                    turns,
                });
            }
            match next_input()? {
                Some(text) => prompt = text,
                None => {
                    return Ok(Outcome {
                        stop,
                        session_id: Some(session),
                        usage,
                        turns,
                    });
                }
            }
        }
    }

    /// `session/load` when a session is to be continued and the agent can, else
    /// `session/new`.
    fn open_session(
        &mut self,
        request: &AgentRequest,
        info: &AgentInfo,
        cwd: &str,
    ) -> Result<String, Halt> {
        if let Some(id) = &request.session_id {
            if !info.load_session {
                return Err(Halt::Failed(format!(
                    "{} cannot continue session {id}: it does not offer loadSession",
                    self.program
                )));
            }
            self.replaying = true;
            let loaded = self.call(
                "session/load",
                rpc::load_session_params(id, cwd, &self.mcp_servers),
                None,
            );
            self.replaying = false;
            loaded?;
            return Ok(id.clone());
        }
        let created = self.call(
            "session/new",
            rpc::new_session_params(cwd, &self.mcp_servers),
            None,
        )?;
        created["sessionId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Halt::Failed("the agent's session/new result has no sessionId".into()))
    }

    fn write(&mut self, line: &str) -> Result<(), Halt> {
        self.process.write_stdin(line.as_bytes()).map_err(|e| {
            Halt::Failed(format!(
                "{} stopped reading its input: {}",
                self.program,
                process::describe(&e)
            ))
        })
    }

    fn emit(&self, events: Vec<Event>) -> Result<(), Halt> {
        if events.is_empty() {
            return Ok(());
        }
        event::emit_all(&plain::to_abi(events)).map_err(|_| Halt::Cancelled)
    }

    /// Sends a request and reads until its answer, serving the agent's requests and
    /// streaming its updates meanwhile. `session` marks a prompt: a cancel then sends
    /// `session/cancel` and waits (within the grace) for the turn's answer.
    fn call(&mut self, method: &str, params: Value, session: Option<&str>) -> Result<Value, Halt> {
        let id = self.next_id;
        self.next_id += 1;
        self.write(&rpc::request(id, method, params))?;
        match self.until_answer(id) {
            Err(Halt::Cancelled) if session.is_some() => Err(Halt::Cancelled),
            other => other.and_then(|outcome| {
                outcome.map_err(|why| {
                    Halt::Failed(format!(
                        "{} answered {method} with an error: {why}",
                        self.program
                    ))
                })
            }),
        }
    }

    /// Reads the agent's lines until the answer to request `id`.
    fn until_answer(&mut self, id: u64) -> Result<Result<Value, String>, Halt> {
        loop {
            let lines = match process::read_lines(&self.process, None) {
                Ok(Lines::Lines(lines)) => lines,
                Ok(Lines::Idle) => continue,
                Ok(Lines::Closed) => return Err(Halt::Failed(self.went_away())),
                Err(ExecError::Cancelled) => return Err(Halt::Cancelled),
                Err(e) => return Err(Halt::Failed(process::describe(&e))),
            };
            let mut answer = None;
            for line in lines {
                if let Some(found) = self.take_line(line.stream, line.text, line.partial, id)? {
                    answer = Some(found);
                }
            }
            if let Some(answer) = answer {
                return Ok(answer);
            }
        }
    }

    /// Handles one line (or piece of one); returns the answer to `waiting_for` when this
    /// line is it.
    fn take_line(
        &mut self,
        stream: OutputStream,
        text: String,
        partial: bool,
        waiting_for: u64,
    ) -> Result<Option<Result<Value, String>>, Halt> {
        if stream == OutputStream::Stderr {
            if self.stderr_tail.len() == STDERR_TAIL_LINES {
                self.stderr_tail.pop_front();
            }
            self.stderr_tail.push_back(text.clone());
            self.emit(vec![Event::Raw {
                kind: "stderr".into(),
                json: Value::String(text).to_string(),
            }])?;
            return Ok(None);
        }
        if self.partial.len() + text.len() > MAX_LINE_BYTES {
            return Err(Halt::Failed(format!(
                "{} wrote a line longer than {MAX_LINE_BYTES} bytes",
                self.program
            )));
        }
        self.partial.push_str(&text);
        if partial {
            return Ok(None);
        }
        let line = std::mem::take(&mut self.partial);
        match rpc::parse(&line) {
            None => Ok(None),
            Some(Err(bad)) => Err(Halt::Failed(format!("{}: {bad}", self.program))),
            Some(Ok(Incoming::Response { id, outcome })) if id == waiting_for => Ok(Some(outcome)),
            // An answer to a request no longer waited for (none today): nothing to do.
            Some(Ok(Incoming::Response { .. })) => Ok(None),
            Some(Ok(Incoming::Notification { method, params })) => {
                if method == "session/update" && !self.replaying {
                    let mut events = Vec::new();
                    self.mapper.update(&params, &mut events);
                    self.emit(events)?;
                }
                Ok(None)
            }
            Some(Ok(Incoming::Request { id, method, params })) => {
                self.serve(&id, &method, &params)?;
                Ok(None)
            }
        }
    }

    /// Answers a method the agent calls on the client.
    fn serve(&mut self, id: &Value, method: &str, params: &Value) -> Result<(), Halt> {
        let served = match method {
            "session/request_permission" => return self.permission(id, params),
            "fs/read_text_file" => self.files.read(params),
            "fs/write_text_file" => self.files.write(params),
            _ => {
                let message = format!("rdev's ACP client does not offer {method}");
                return self.write(&rpc::error_response(id, rpc::METHOD_NOT_FOUND, &message));
            }
        };
        match served {
            Ok(result) => self.write(&rpc::response(id, result)),
            Err(fs::Failure::Refused(refused)) => {
                self.write(&rpc::error_response(id, refused.code, &refused.message))
            }
            Err(fs::Failure::Cancelled) => {
                let _ = self.write(&rpc::error_response(id, fs::FILE_ERROR, "cancelled"));
                Err(Halt::Cancelled)
            }
        }
    }

    /// Answers `session/request_permission` with the host's decision.
    fn permission(&mut self, id: &Value, params: &Value) -> Result<(), Halt> {
        let asked = map::ask(params);
        match decide(&asked) {
            Ok(decided) => self.write(&rpc::response(id, map::answer(&asked, &decided))),
            Err(Halt::Cancelled) => {
                self.write(&rpc::response(id, map::cancelled()))?;
                Err(Halt::Cancelled)
            }
            Err(failed) => Err(failed),
        }
    }

    /// Why the agent's output ended before an answer, with its last stderr lines.
    fn went_away(&self) -> String {
        let mut why = format!("{} closed its output before answering", self.program);
        let tail: Vec<&str> = self.stderr_tail.iter().map(String::as_str).collect();
        if !tail.is_empty() {
            why.push_str(": ");
            why.push_str(tail.join("\n").trim());
        }
        why
    }

    /// After a cancel during a turn: `session/cancel`, then the turn's answer is awaited
    /// for the grace (permission requests meanwhile are answered `cancelled`).
    fn cancel_turn(&mut self, grace_ms: u32) {
        let Some(session) = self.session_id.clone() else {
            return;
        };
        if self
            .write(&rpc::notification(
                "session/cancel",
                rpc::cancel_params(&session),
            ))
            .is_err()
        {
            return;
        }
        let prompt_id = self.next_id.saturating_sub(1);
        let deadline = Instant::now() + Duration::from_millis(u64::from(grace_ms));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let left_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1);
            let lines = match process::read_lines(&self.process, Some(left_ms)) {
                Ok(Lines::Lines(lines)) => lines,
                Ok(Lines::Idle) => continue,
                Ok(Lines::Closed) | Err(_) => return,
            };
            for line in lines {
                let text = line.text;
                if line.stream == OutputStream::Stdout && !line.partial {
                    match rpc::parse(&text) {
                        Some(Ok(Incoming::Response { id, .. })) if id == prompt_id => return,
                        Some(Ok(Incoming::Request { id, .. })) => {
                            let _ = self.write(&rpc::response(&id, map::cancelled()));
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Ends the agent (stdin closed, then signals) and builds the result.
    fn finish(mut self, outcome: Result<Outcome, Halt>, options: &Options) -> AgentResult {
        if matches!(outcome, Err(Halt::Cancelled)) {
            self.cancel_turn(options.cancel_grace_ms());
        }
        let status = self.stop();
        let mut result = match outcome {
            Ok(outcome) => {
                let mut result = match outcome.stop {
                    Stop::Completed => result::with_status(ResultStatus::Completed),
                    Stop::Cancelled => result::cancelled(None),
                    Stop::Failed(why) => result::failed(None, why),
                };
                let text = self.mapper.text();
                if !text.is_empty() {
                    result.final_text = Some(text.to_owned());
                }
                result.session_id = outcome.session_id;
                result.usage = outcome.usage.map(TokenUsage::from);
                result.num_turns = Some(outcome.turns);
                result
            }
            Err(Halt::Cancelled) => result::cancelled(self.session_id.clone()),
            Err(Halt::Failed(why)) => {
                let _ = event::emit(event::error(why.clone()));
                result::failed(self.session_id.clone(), why)
            }
        };
        result.exit_code = status.and_then(|s| s.code);
        result
    }

    /// Closes stdin and gives the agent a moment to exit, then stops it.
    fn stop(&self) -> Option<ExitStatus> {
        self.process.close_stdin();
        if let Ok(Some(status)) = self.process.wait(Some(EXIT_WAIT_MS)) {
            return Some(status);
        }
        process::stop(&self.process, STOP_STEP_MS).ok()
    }
}

/// Asks the host about a permission request; anything but a decision denies.
fn decide(asked: &map::Ask) -> Result<Decided, Halt> {
    let request = PermissionRequest {
        tool_call_id: asked.tool_call_id.clone(),
        tool: asked.tool.clone(),
        input_json: asked.input_json.clone(),
        summary: asked.summary.clone(),
        options: asked
            .options
            .iter()
            .map(|o| interaction::PermissionOption {
                id: o.id.clone(),
                label: o.label.clone(),
                kind: match o.kind {
                    map::OptionKind::AllowOnce => interaction::OptionKind::AllowOnce,
                    map::OptionKind::AllowAlways => interaction::OptionKind::AllowAlways,
                    map::OptionKind::RejectOnce => interaction::OptionKind::RejectOnce,
                    map::OptionKind::RejectAlways => interaction::OptionKind::RejectAlways,
                },
            })
            .collect(),
    };
    match interaction::request_permission(&request) {
        // ACP has no way to run a call with edited input; the agent's input is what runs.
        Ok(Decision::Allow(allow)) => Ok(Decided {
            allow: true,
            remember: allow.remember,
            option_id: allow.option_id,
        }),
        Ok(Decision::Deny(deny)) => Ok(Decided {
            allow: false,
            remember: deny.remember,
            option_id: deny.option_id,
        }),
        Err(InteractionError::Cancelled) => Err(Halt::Cancelled),
        Err(InteractionError::InvalidRequest(_) | InteractionError::Unavailable(_)) => {
            Ok(Decided {
                allow: false,
                remember: false,
                option_id: None,
            })
        }
    }
}

/// The first follow-up input waiting right now, as the next turn's prompt.
fn next_input() -> Result<Option<String>, Halt> {
    match interaction::next_input(Some(0)) {
        Ok(InputRead::Input(input)) => Ok(Some(input.text)),
        Ok(InputRead::Idle | InputRead::Closed) => Ok(None),
        Err(InteractionError::Cancelled) => Err(Halt::Cancelled),
        Err(InteractionError::InvalidRequest(_) | InteractionError::Unavailable(_)) => Ok(None),
    }
}

rdev_sdk::v0_2::export_provider!(Acp);
