//! The OpenCode provider: talks to `opencode serve` in the project's workspace over the
//! project-http capability.
//!
//! The server is the host's: the manifest declares it as the plugin's `[service]`, so the
//! host starts one per project on the first request to [`options::DEFAULT_PORT`], on a port
//! of its own choosing and with a password it mints (neither enters this guest), and keeps
//! it warm between commands until it has been idle for a while. A server the operator runs
//! elsewhere is addressed with the `port` option and authenticated with the
//! `OPENCODE_SERVER_PASSWORD` credential instead.
//!
//! One execution is one turn: wait until the server answers, create or reuse the session,
//! subscribe to `/event` *before* sending so nothing is missed, `prompt_async`, map the
//! session's events until `session.idle`, then fetch the session's messages for the final
//! text, tokens, cost and error. Sessions persist on disk in the workspace's HOME.
//!
//! ABI 0.2.0: the session is given rules that make the server ask before every effectful
//! tool call ([`permission`]); each `permission.asked` is put to the host's
//! `request-permission` and answered with what the host decided. Follow-up input that
//! arrives while the agent works is sent into the same session when its turn ends, and the
//! execution goes on until that turn ends too.

mod api;
mod backend;
mod events;
mod options;
mod outcome;
mod permission;

use std::time::{Duration, Instant};

use rdev_sdk::v0_2::bindings::rdev::provider::types::InitInfo;
use rdev_sdk::v0_2::interaction::{self, Decision, InputRead, InteractionError, PermissionRequest};
use rdev_sdk::v0_2::project_http::{self, EventStream, EventsRead, HttpError};
use rdev_sdk::v0_2::{
    AgentEvent, AgentRequest, AgentResult, CleanupRequest, Provider, ProviderCapabilities,
    ProviderError, ResultStatus, event, execution, plain, result,
};
use serde_json::{Value, json};

use api::{Api, Fail, describe, status_error};
use events::{Event, Mapper};
use options::{DEFAULT_MAX_RETRIES, Model, Options};
use permission::{Ask, Reply};

/// Deadline of a health check: a running server answers at once, and a port nobody listens
/// on is refused at once, so a slow answer is treated as "not up yet".
const HEALTH_TIMEOUT_MS: u32 = 2_000;
/// Events fetched per host call: the guest's SSE buffer. OpenCode emits one event per
/// streamed token, so a batch keeps a fast stream to a few host calls per burst; 64 events of
/// a few KB each (a tool part carries its output) stay far below the plugin's memory limit
/// even when a tool's output is large, and the host holds the rest in its own bounded reader.
const SSE_BATCH: u32 = 64;
/// How long one read of the event stream waits for an event; between reads nothing else
/// happens (cancel reaches a waiting read at once), so this only bounds a single call.
const SSE_POLL_MS: u32 = 1_000;
/// Health checks that may find a server unsteady (see [`Health::Unsteady`]) before the
/// provider gives up: with [`options::HEALTH_POLL_MS`] between them, 2 s, which is ample for
/// a killed server's socket to close.
const UNSTEADY_HEALTH_CHECKS: u32 = 10;
/// What the model is told when a denial carries no message of its own.
const DENIED: &str = "The user denied this tool call.";

struct OpenCode;

impl Provider for OpenCode {
    fn capabilities() -> ProviderCapabilities {
        rdev_sdk::v0_2::agent_capabilities(
            "OpenCode (`opencode serve`, HTTP + SSE) in the project's workspace: asks before \
             tool calls, takes follow-up input",
        )
    }

    fn execute(request: AgentRequest) -> Result<AgentResult, ProviderError> {
        let options =
            Options::parse(&request.options_json).map_err(ProviderError::InvalidRequest)?;
        let model = request
            .model
            .as_deref()
            .map(Model::parse)
            .transpose()
            .map_err(ProviderError::InvalidRequest)?;
        if let Some(session) = &request.session_id {
            options::check_session_id(session).map_err(ProviderError::InvalidRequest)?;
        }
        let backend = backend::backend(&options, model).map_err(ProviderError::InvalidRequest)?;
        configure(&options, &backend)?;
        let model = backend.model;
        let mut run = Run {
            api: Api {
                port: options.port(),
                host_run: options.port.is_none(),
            },
            options,
            model,
            request,
            version: None,
            cancelled: false,
            final_text_seen: String::new(),
            prompts: 0,
            follow_ups: Vec::new(),
        };
        run.execute()
    }

    fn cancel(request: CleanupRequest) -> Result<(), ProviderError> {
        // The instance is gone; its options are not known here, so the project's
        // host-run server is the one asked.
        let Some(session) = request.session_id else {
            return Ok(());
        };
        options::check_session_id(&session).map_err(ProviderError::InvalidRequest)?;
        let api = Api {
            port: options::DEFAULT_PORT,
            host_run: true,
        };
        match api.call(
            "POST",
            &format!("/session/{session}/abort"),
            Some(&json!({})),
        ) {
            Ok(_) | Err(Fail::Cancelled) => Ok(()),
            Err(Fail::Connect(_)) => Ok(()),
            Err(Fail::Other(e)) => Err(ProviderError::Failed(e)),
        }
    }
}

/// Hands the backend to the host for its server: the configuration and the API key's
/// credential go into the server's environment, and a server running with another one is
/// restarted before this execution's first request. A server the operator runs (the `port`
/// option) has its own configuration.
fn configure(options: &Options, backend: &backend::Backend) -> Result<(), ProviderError> {
    if options.port.is_some() {
        if backend.env.is_empty() {
            return Ok(());
        }
        return Err(ProviderError::InvalidRequest(
            "base_url and api_key_credential configure the host-run server; a server on the \
             port option is configured by whoever runs it"
                .to_owned(),
        ));
    }
    let credentials = backend
        .api_key_credential
        .iter()
        .map(|name| {
            let secret = rdev_sdk::v0_2::SecretRef {
                name: name.clone(),
                required: true,
            };
            (backend::API_KEY_ENV.to_owned(), secret)
        })
        .chain(backend.mcp_credentials.iter().map(|(var, name)| {
            let secret = rdev_sdk::v0_2::SecretRef {
                name: name.clone(),
                required: true,
            };
            (var.clone(), secret)
        }))
        .collect();
    let config = project_http::ServiceConfig {
        env: backend.env.clone(),
        credentials,
    };
    project_http::configure_service(options::DEFAULT_PORT, &config).map_err(|e| {
        ProviderError::InvalidRequest(match describe("configure", "service", e) {
            Fail::Connect(why) | Fail::Other(why) => why,
            Fail::Cancelled => "cancelled".to_owned(),
        })
    })
}

/// What a health check found.
enum Health {
    Up,
    /// Nothing listens on the port, or the host's service did not start; says why.
    Down(String),
    /// Something accepted the connection but broke it or did not answer in time.
    Unsteady(String),
    Failed(Fail),
}

/// How waiting for the turn ended.
enum Streamed {
    /// `session.idle` arrived.
    Idle,
    /// The host cancelled the execution.
    Cancelled,
    /// The stream broke; the text says how.
    Broken(String),
    /// OpenCode kept retrying a failing model call beyond the bound; the text says why.
    GaveUp(String),
}

struct Run {
    api: Api,
    options: Options,
    model: Option<Model>,
    request: AgentRequest,
    version: Option<String>,
    /// The host's cancel arrived (each blocking call reports it once).
    cancelled: bool,
    /// Complete texts seen on the stream, kept for a turn whose messages cannot be fetched.
    final_text_seen: String,
    /// Prompts this execution sent into the session: the first one and its follow-ups.
    prompts: usize,
    /// Follow-up input taken from the host, sent when the current turn ends.
    follow_ups: Vec<String>,
}

impl Run {
    fn execute(&mut self) -> Result<AgentResult, ProviderError> {
        match self.ensure_server() {
            Ok(()) => {}
            Err(Fail::Cancelled) => return Ok(result::cancelled(None)),
            Err(Fail::Connect(e) | Fail::Other(e)) => return Ok(result::failed(None, e)),
        }
        // Moment 1: a cancel before the session exists ends here with nothing to abort.
        let session = match self.session() {
            Ok(session) => session,
            Err(Fail::Cancelled) => return Ok(result::cancelled(None)),
            Err(Fail::Connect(e) | Fail::Other(e)) => return Ok(result::failed(None, e)),
        };
        let init = AgentEvent::Init(InitInfo {
            session_id: Some(session.clone()),
            model: self.request.model.clone(),
            cwd: None,
            tools: Vec::new(),
            version: self.version.clone(),
        });
        if event::emit(init).is_err() {
            return Ok(result::cancelled(Some(session)));
        }
        // Subscribed before the prompt is sent, so the turn's first event cannot be missed.
        let stream = match self.api.events() {
            Ok(stream) => stream,
            Err(Fail::Cancelled) => return Ok(result::cancelled(Some(session))),
            Err(Fail::Connect(e) | Fail::Other(e)) => return Ok(result::failed(Some(session), e)),
        };
        let max_retries = self.options.max_retries.unwrap_or(DEFAULT_MAX_RETRIES);
        let mut mapper = Mapper::new(session.clone()).with_max_retries(max_retries);
        let body = options::prompt_body(
            &self.request.prompt,
            self.model.as_ref(),
            self.options.agent.as_deref(),
        );
        let path = format!("/session/{session}/prompt_async");
        match self.api.call("POST", &path, Some(&body)) {
            Ok(_) => self.prompts += 1,
            Err(Fail::Cancelled) => {
                // Moment 2: the prompt may or may not have reached the server. It is aborted
                // only if the session is working on it.
                self.cancelled = true;
                if self.session_busy(&session) {
                    self.abort_and_drain(&session, &stream, &mut mapper);
                }
                return Ok(self.finish(&session, false, None));
            }
            Err(Fail::Connect(e) | Fail::Other(e)) => return Ok(result::failed(Some(session), e)),
        }
        match self.stream(&session, &stream, &mut mapper) {
            Streamed::Idle => {
                let error = mapper.error().map(str::to_owned);
                Ok(self.finish(&session, true, error))
            }
            Streamed::Cancelled => {
                // Moment 3: the turn is running; abort it and keep what it produced.
                self.cancelled = true;
                self.abort_and_drain(&session, &stream, &mut mapper);
                Ok(self.finish(&session, false, None))
            }
            Streamed::Broken(why) => Ok(self.broken(session, why)),
            Streamed::GaveUp(why) => {
                let _ = event::emit(event::error(why.clone()));
                self.abort_and_drain(&session, &stream, &mut mapper);
                let mut result = self.finish(&session, true, None);
                result.status = ResultStatus::Failed;
                result.error = Some(why);
                Ok(result)
            }
        }
    }

    /// Waits until `GET /global/health` answers. The host starts its service on the first
    /// request (so this call may take the server's start-up time); a server the operator
    /// runs must already listen.
    fn ensure_server(&mut self) -> Result<(), Fail> {
        let mut unsteady = 0;
        loop {
            match self.health() {
                Health::Up => return Ok(()),
                Health::Down(why) => return Err(Fail::Other(why)),
                Health::Failed(fail) => return Err(fail),
                // A server that is going down or still coming up accepts and then drops
                // connections; wait for it to settle.
                Health::Unsteady(why) => {
                    unsteady += 1;
                    if unsteady > UNSTEADY_HEALTH_CHECKS {
                        return Err(Fail::Other(format!(
                            "opencode GET /global/health keeps failing on port {}: {why}",
                            self.api.port
                        )));
                    }
                    if !execution::sleep(options::HEALTH_POLL_MS) {
                        return Err(Fail::Cancelled);
                    }
                }
            }
        }
    }

    fn health(&mut self) -> Health {
        const PATH: &str = "/global/health";
        let request = self.api.request("GET", PATH, None, HEALTH_TIMEOUT_MS);
        match project_http::send(&request) {
            Ok(response) if (200..300).contains(&response.status) => {
                let health: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
                self.version = health["version"].as_str().map(str::to_owned);
                Health::Up
            }
            // A wrong password (401) or a different service on the port: starting another
            // server would not help.
            Ok(response) => Health::Failed(Fail::Other(status_error("GET", PATH, &response))),
            Err(HttpError::Connect(why)) => Health::Down(format!(
                "opencode server on port {} is not reachable: {why}",
                self.api.port
            )),
            Err(HttpError::Timeout) => Health::Unsteady("timed out".into()),
            Err(HttpError::Protocol(why)) => Health::Unsteady(why),
            Err(e) => Health::Failed(describe("GET", PATH, e)),
        }
    }

    /// The session to send to: the request's (which must exist) or a new one, either way
    /// with the rules that make the server ask before effectful tool calls.
    fn session(&self) -> Result<String, Fail> {
        let rules = json!({"permission": permission::session_rules()});
        if let Some(id) = &self.request.session_id {
            self.api
                .json("PATCH", &format!("/session/{id}"), Some(&rules))?;
            return Ok(id.clone());
        }
        let created = self.api.json("POST", "/session", Some(&rules))?;
        created["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Fail::Other(format!("opencode POST /session answered {created}")))
    }

    /// True when `GET /session/status` lists the session as working (busy or retrying).
    fn session_busy(&self, session: &str) -> bool {
        match self.api.json("GET", "/session/status", None) {
            Ok(status) => status[session]["type"]
                .as_str()
                .is_some_and(|t| t != "idle"),
            // Unknown: aborting an idle session is harmless, missing a running one is not.
            Err(_) => true,
        }
    }

    /// Maps the stream's events, answers permission requests and sends follow-up input,
    /// until the session is idle with no input waiting, the host cancels, or it breaks.
    fn stream(&mut self, session: &str, stream: &EventStream, mapper: &mut Mapper) -> Streamed {
        loop {
            let batch = match stream.next(SSE_BATCH, Some(SSE_POLL_MS)) {
                Ok(EventsRead::Events(batch)) => batch,
                // Also how the host says input arrived (an early idle read).
                Ok(EventsRead::Idle) => {
                    if self.take_input().is_err() {
                        return Streamed::Cancelled;
                    }
                    continue;
                }
                Ok(EventsRead::Closed) => {
                    return Streamed::Broken("the server closed its event stream".into());
                }
                Err(HttpError::Cancelled) => return Streamed::Cancelled,
                Err(e) => {
                    return Streamed::Broken(match describe("GET", "/event", e) {
                        Fail::Connect(w) | Fail::Other(w) => w,
                        Fail::Cancelled => "cancelled".into(),
                    });
                }
            };
            let mut out = Vec::new();
            for sse in &batch {
                mapper.feed(&sse.data, &mut out);
            }
            self.remember(&out);
            if event::emit_all(&plain::to_abi(out)).is_err() {
                return if mapper.is_idle() {
                    // The turn finished before the cancel: nothing left to abort.
                    self.cancelled = false;
                    Streamed::Idle
                } else {
                    Streamed::Cancelled
                };
            }
            if let Some(why) = mapper.gave_up() {
                return Streamed::GaveUp(why.to_owned());
            }
            for ask in mapper.take_asks() {
                if self.answer(&ask, mapper).is_err() {
                    return Streamed::Cancelled;
                }
            }
            if mapper.is_idle() {
                if self.take_input().is_err() {
                    return Streamed::Cancelled;
                }
                if self.follow_ups.is_empty() {
                    return Streamed::Idle;
                }
                match self.send_follow_ups(session) {
                    Ok(()) => mapper.expect_turn(),
                    Err(Fail::Cancelled) => return Streamed::Idle,
                    Err(Fail::Connect(e) | Fail::Other(e)) => {
                        let _ = event::emit(event::warning(format!(
                            "follow-up input was not delivered: {e}"
                        )));
                        return Streamed::Idle;
                    }
                }
            }
        }
    }

    /// Puts `ask` to the host and replies its decision to the server. `Err` when the
    /// command was cancelled while the host was asked.
    fn answer(&mut self, ask: &Ask, mapper: &Mapper) -> Result<(), Cancelled> {
        let input = ask.input(ask.call_id.as_deref().and_then(|c| mapper.tool_input(c)));
        let request = PermissionRequest {
            tool_call_id: ask.call_id.clone(),
            tool: ask.permission.clone(),
            input_json: input.to_string(),
            summary: ask.summary(&input),
            // OpenCode's own choices are once / always / reject; "always" is a project rule
            // on the host, so allow and deny are all the host needs to offer.
            options: Vec::new(),
        };
        let reply = match interaction::request_permission(&request) {
            Ok(Decision::Allow(allow)) => match allow.updated_input_json {
                None => Reply::Once,
                Some(edited) => Reply::Reject(Some(permission::edited_input_message(&edited))),
            },
            Ok(Decision::Deny(deny)) if deny.interrupt => Reply::Reject(None),
            Ok(Decision::Deny(deny)) => Reply::Reject(Some(
                deny.message
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| DENIED.to_owned()),
            )),
            Err(InteractionError::Cancelled) => return Err(Cancelled),
            Err(InteractionError::InvalidRequest(why) | InteractionError::Unavailable(why)) => {
                Reply::Reject(Some(format!("rdev could not ask for permission: {why}")))
            }
        };
        let path = format!("/permission/{}/reply", ask.id);
        match self.api.call("POST", &path, Some(&reply.body())) {
            Ok(_) => Ok(()),
            Err(Fail::Cancelled) => Err(Cancelled),
            Err(Fail::Connect(e) | Fail::Other(e)) => {
                let _ = event::emit(event::warning(format!(
                    "answering opencode's permission request for {} failed: {e}",
                    request.summary
                )));
                Ok(())
            }
        }
    }

    /// Moves the follow-up input waiting on the host into [`Run::follow_ups`].
    fn take_input(&mut self) -> Result<(), Cancelled> {
        loop {
            match interaction::next_input(Some(0)) {
                Ok(InputRead::Input(input)) => self.follow_ups.push(input.text),
                Ok(InputRead::Idle | InputRead::Closed) => return Ok(()),
                Err(InteractionError::Cancelled) => return Err(Cancelled),
                Err(InteractionError::InvalidRequest(_) | InteractionError::Unavailable(_)) => {
                    return Ok(());
                }
            }
        }
    }

    /// Sends the waiting follow-ups into `session` as one prompt (one text part each).
    fn send_follow_ups(&mut self, session: &str) -> Result<(), Fail> {
        let texts = std::mem::take(&mut self.follow_ups);
        let mut body = options::prompt_body(
            &texts.join("\n\n"),
            self.model.as_ref(),
            self.options.agent.as_deref(),
        );
        body["parts"] = texts
            .iter()
            .map(|text| json!({"type": "text", "text": text}))
            .collect();
        let path = format!("/session/{session}/prompt_async");
        self.api.call("POST", &path, Some(&body))?;
        self.prompts += 1;
        Ok(())
    }

    fn remember(&mut self, out: &[Event]) {
        for e in out {
            if let Event::Message {
                text,
                partial: false,
            } = e
            {
                self.final_text_seen = text.clone();
            }
        }
    }

    /// Aborts the session, then forwards what the aborted turn still reports until it is
    /// idle or the abort grace is spent. Events are best effort now: the command is
    /// cancelled, but partial output is still worth keeping.
    fn abort_and_drain(&mut self, session: &str, stream: &EventStream, mapper: &mut Mapper) {
        let path = format!("/session/{session}/abort");
        if let Err(Fail::Connect(e) | Fail::Other(e)) =
            self.api.call("POST", &path, Some(&json!({})))
        {
            let _ = event::emit(event::warning(format!("aborting the session failed: {e}")));
            return;
        }
        let grace = self
            .options
            .abort_grace_ms
            .unwrap_or(options::DEFAULT_ABORT_GRACE_MS);
        let deadline = Instant::now() + Duration::from_millis(u64::from(grace));
        while !mapper.is_idle() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let left_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1);
            match stream.next(SSE_BATCH, Some(left_ms)) {
                Ok(EventsRead::Events(batch)) => {
                    let mut out = Vec::new();
                    for sse in &batch {
                        mapper.feed(&sse.data, &mut out);
                    }
                    self.remember(&out);
                    let _ = event::emit_all(&plain::to_abi(out));
                }
                Ok(EventsRead::Idle) => {}
                Ok(EventsRead::Closed) | Err(_) => break,
            }
        }
    }
}

/// The command was cancelled while the host was asked something.
struct Cancelled;

rdev_sdk::v0_2::export_provider!(OpenCode);
