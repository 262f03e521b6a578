//! `rdev exec`: one request through one provider against a directory, events printed as
//! they arrive, the exit code mirroring the result.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::output::{PromptArgs, StreamedText, exit_code_for};
use super::plugins::{PluginsArgs, start_registry};
use crate::adapters::local::EnvSecrets;
use crate::domain::{
    AgentEvent, AgentRequest, AgentResult, CommandId, CommandStatus, HostEvent, OutputStream,
    ProjectId, ProviderName, Redactor, ResultStatus, StreamEvent,
};
use crate::ports::{AgentError, Execution, ProviderLookup};
use crate::registry::Registry;
use crate::wiring::{
    CommonArgs, Config, ConfinementArgs, ExecutorArgs, ExecutorKind, LocalUse, RunnerArgs,
    build_executor,
};

pub use super::output::{EXIT_CANCELLED, EXIT_COMPLETED, EXIT_FAILED};
/// Exit code of a request that could not be built (bad option, unknown provider).
pub const EXIT_USAGE: i32 = 2;

/// Events buffered between the provider and the terminal.
const EVENT_BUFFER: usize = 256;

/// Runs one request through a provider in DIR.
///
/// With the local executor its processes are confined as `rdev serve` confines a project's
/// (docs/sandbox.md): DIR is their only writable place and the rest of the host (rdev's data
/// dir, $HOME) is out of sight; `--unconfined` runs them as the caller, as before.
///
/// Credentials: a plugin may reference a credential (e.g. `ANTHROPIC_API_KEY`) that the host
/// resolves when it spawns a process. Here they come from rdev's own environment, and only
/// the names passed with `--credential-env` are resolvable; their values are redacted from
/// everything printed.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub plugins: PluginsArgs,
    /// Provider to run; the default provider when omitted.
    #[arg(long, short)]
    pub provider: Option<String>,
    /// Workspace: the directory the provider's processes run in (created when missing), the
    /// only place they may write; required with the local executor.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The project whose workspace the request runs in; with `--executor kubernetes`, the
    /// project's pod.
    #[arg(long, default_value = "cli")]
    pub project: String,
    /// TOML configuration file (its `executor` and `[kubernetes]` table apply; see
    /// docs/configuration.md).
    #[arg(long, env = "RDEV_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub executor: ExecutorArgs,
    #[command(flatten)]
    pub confinement: ConfinementArgs,
    /// Seconds before the request is cancelled.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Seconds a cancelled provider gets to stop before it is killed.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub grace: u64,
    #[command(flatten)]
    pub asked: PromptArgs,
    /// Host environment variable a plugin may reference as a credential (repeatable).
    #[arg(long = "credential-env", value_name = "NAME")]
    pub credential_env: Vec<String>,
    /// Print events and the final result as JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// The prompt; several words are joined with spaces (quote it to keep its own quoting).
    #[arg(last = true, required = true, value_name = "PROMPT")]
    pub prompt: Vec<String>,
}

/// Builds the request, runs it, and returns the exit code.
pub async fn run(args: ExecArgs) -> Result<i32> {
    let (mut request, provider, project) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(EXIT_USAGE);
        }
    };
    let secrets = Arc::new(EnvSecrets::new(args.credential_env.iter().cloned()));
    let redactor = Redactor::new(secrets.values());
    let grace = Duration::from_secs(args.grace);
    let registry = start(&args, secrets, grace, provider.clone()).await?;
    let agent = match registry.lookup(provider.as_ref()) {
        Ok(agent) => agent,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_USAGE);
        }
    };

    // Unasked, the default timeout yields to a provider with a shorter ceiling; an explicit
    // --timeout above the ceiling is a usage error, as the API refuses it at submit.
    let name = agent.provider().name.clone();
    if let Some(loaded) = registry.agent(name.as_str())
        && let Err(e) = request.fit_timeout(
            args.timeout.is_some(),
            name.as_str(),
            loaded.manifest().limits.max_timeout,
        )
    {
        eprintln!("error: {e}");
        return Ok(EXIT_USAGE);
    }

    let cancel = CancellationToken::new();
    let (events, mut received) = mpsc::channel(EVENT_BUFFER);
    let execution = Execution {
        command_id: CommandId::from_uuid(uuid::Uuid::now_v7()),
        project_id: project,
        request,
        events,
        cancel: cancel.clone(),
        mcp_servers: Vec::new(),
    };
    let running = tokio::spawn(async move { agent.execute(execution).await });
    tokio::spawn(cancel_on_signals(cancel.clone(), grace));

    let mut printer = Printer::new(args.json, redactor);
    while let Some(event) = received.recv().await {
        printer.event(event)?;
    }
    let outcome = running.await.context("the execution task stopped")?;
    // A one-shot run keeps nothing warm: a service its provider started ends with it.
    registry.services().stop_all().await;
    exit_code(&mut printer, outcome, cancel.is_cancelled())
}

/// The request, the provider and the project, or what is wrong with the command line.
fn parse(args: &ExecArgs) -> Result<(AgentRequest, Option<ProviderName>, ProjectId)> {
    let request = build_request(args)?;
    let provider = args
        .provider
        .as_deref()
        .map(ProviderName::parse)
        .transpose()?;
    let project = ProjectId::parse(&args.project)?;
    Ok((request, provider, project))
}

/// The executor the configuration names (the local one confined to DIR, or the project's
/// pod) and a registry of the one provider over it.
async fn start(
    args: &ExecArgs,
    secrets: Arc<EnvSecrets>,
    grace: Duration,
    provider: Option<ProviderName>,
) -> Result<Registry> {
    let common = CommonArgs {
        config: args.config.clone(),
        data_dir: args.plugins.data_dir.clone(),
        ..CommonArgs::default()
    };
    let runner = RunnerArgs {
        confinement: args.confinement.clone(),
        ..RunnerArgs::default()
    };
    let (mut config, _) = Config::resolve(&common, args.executor.clone(), &runner)?;
    if config.executor == ExecutorKind::Local {
        let Some(dir) = &args.dir else {
            bail!("--dir is required with the local executor");
        };
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the workspace {}", dir.display()))?;
        config.local_workspace = Some(dir.clone());
    }
    let plugins_dir = args.plugins.resolve()?;
    let workspaces = build_executor(&config, secrets.clone(), LocalUse::OneShot).await?;
    if workspaces.confinement.is_unconfined() {
        eprintln!(
            "rdev: WARNING: commands run UNCONFINED (--unconfined): as your own user, able to \
             read and change everything you can ($HOME, rdev's data dir, other directories)"
        );
    }
    start_registry(
        plugins_dir,
        workspaces.executor,
        secrets,
        Some(grace),
        provider,
    )
    .await
}

/// Prints how the request ended and returns the exit code that says so.
fn exit_code(
    printer: &mut Printer,
    outcome: Result<AgentResult, AgentError>,
    cancelled: bool,
) -> Result<i32> {
    match outcome {
        Ok(result) => {
            let code = exit_code_for(result.status, result.exit_code);
            printer.result(result)?;
            Ok(code)
        }
        Err(error) => {
            printer.error(cancelled, &error.to_string())?;
            Ok(if cancelled {
                EXIT_CANCELLED
            } else {
                EXIT_FAILED
            })
        }
    }
}

fn build_request(args: &ExecArgs) -> Result<AgentRequest> {
    let mut request = AgentRequest::new(args.prompt.join(" "));
    if let Some(secs) = args.timeout {
        request.timeout = Duration::from_secs(secs);
    }
    request.model = args.asked.model.clone();
    request.session_id = args.asked.session.clone();
    request.options.extend(args.asked.option_map()?);
    request.validate().context("invalid request")?;
    Ok(request)
}

/// Ctrl-C or SIGTERM cancels cooperatively; the runtime kills the provider if it has not
/// stopped after the grace period.
async fn cancel_on_signals(cancel: CancellationToken, grace: Duration) {
    let Some(mut interrupts) = super::interrupts::Interrupts::listen() else {
        return;
    };
    loop {
        interrupts.next().await;
        if cancel.is_cancelled() {
            eprintln!(
                "rdev: already cancelling; the provider is stopped by force after {} s",
                grace.as_secs()
            );
        } else {
            eprintln!("rdev: cancelling…");
            cancel.cancel();
        }
    }
}

/// Writes events as text (coloured on a terminal) or as JSON lines.
struct Printer {
    json: bool,
    colour: bool,
    redactor: Redactor,
    /// Whether the last text written to stdout ended a line, so the summary starts on one.
    at_line_start: bool,
    /// Whether any event wrote text to stdout: a provider that streamed nothing answers
    /// only through its final text, which must then be printed.
    streamed: bool,
    /// Assistant text, streamed deltas and whole messages printed once.
    messages: StreamedText,
    /// Thinking, likewise.
    thinking: StreamedText,
}

const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";
const GREEN: &str = "\x1b[32m";
const RESET: &str = "\x1b[0m";

impl Printer {
    fn new(json: bool, redactor: Redactor) -> Self {
        Self {
            json,
            colour: !json && std::io::stdout().is_terminal(),
            redactor,
            at_line_start: true,
            streamed: false,
            messages: StreamedText::default(),
            thinking: StreamedText::new("thinking: "),
        }
    }

    fn paint(&self, colour: &str, text: &str) -> String {
        if self.colour {
            format!("{colour}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }

    fn json_line(value: &StreamEvent) -> Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, value)?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(())
    }

    fn stdout(&mut self, text: &str) -> Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        if !text.is_empty() {
            self.at_line_start = text.ends_with('\n');
            self.streamed = true;
        }
        Ok(())
    }

    fn line(&mut self, text: &str) -> Result<()> {
        let prefix = if self.at_line_start { "" } else { "\n" };
        self.stdout(&format!("{prefix}{text}\n"))
    }

    fn event(&mut self, mut event: AgentEvent) -> Result<()> {
        self.redactor.redact(&mut event);
        if self.json {
            return Self::json_line(&StreamEvent::Agent(event));
        }
        match event {
            AgentEvent::Output {
                stream: OutputStream::Stdout,
                text,
            } => self.stdout(&text),
            AgentEvent::Output {
                stream: OutputStream::Stderr,
                text,
            } => {
                let mut err = std::io::stderr().lock();
                err.write_all(text.as_bytes())?;
                err.flush()?;
                Ok(())
            }
            AgentEvent::Message { text, partial } => {
                let text = self.messages.message(&text, partial);
                self.stdout(&text)
            }
            AgentEvent::Thinking { text, partial } => {
                let text = self.thinking.message(&text, partial);
                let (body, end) = text
                    .strip_suffix('\n')
                    .map_or((text.as_str(), ""), |body| (body, "\n"));
                self.stdout(&format!("{}{end}", self.paint(DIM, body)))
            }
            AgentEvent::Init {
                session_id, model, ..
            } => {
                let mut parts = Vec::new();
                if let Some(session) = session_id {
                    parts.push(format!("session {session}"));
                }
                if let Some(model) = model {
                    parts.push(format!("model {model}"));
                }
                if parts.is_empty() {
                    return Ok(());
                }
                self.line(&self.paint(DIM, &parts.join(", ")))
            }
            AgentEvent::ToolUse { name, input, .. } => {
                self.line(&self.paint(CYAN, &format!("→ {name} {input}")))
            }
            AgentEvent::ToolResult {
                content, is_error, ..
            } => {
                let colour = if is_error { RED } else { DIM };
                self.line(&self.paint(colour, &format!("← {}", shorten(&content, 400))))
            }
            AgentEvent::Warning { message } => {
                self.line(&self.paint(YELLOW, &format!("warning: {message}")))
            }
            AgentEvent::Error { message } => {
                self.line(&self.paint(RED, &format!("error: {message}")))
            }
            AgentEvent::Usage { usage, cost_usd } => {
                let cost = cost_usd.map(|c| format!(", ${c:.4}")).unwrap_or_default();
                self.line(&self.paint(
                    DIM,
                    &format!(
                        "usage: {} in, {} out{cost}",
                        usage.input_tokens, usage.output_tokens
                    ),
                ))
            }
            AgentEvent::Raw { kind, data } => self.line(&self.paint(
                DIM,
                &format!("[{kind}] {}", shorten(&data.to_string(), 400)),
            )),
        }
    }

    fn result(&mut self, mut result: AgentResult) -> Result<()> {
        if let Some(text) = result.final_text.as_mut() {
            self.redactor.redact_str(text);
        }
        if let Some(error) = result.error.as_mut() {
            self.redactor.redact_str(error);
        }
        if self.json {
            let status = match result.status {
                ResultStatus::Completed => CommandStatus::Completed,
                ResultStatus::Failed => CommandStatus::Failed,
                ResultStatus::Cancelled => CommandStatus::Cancelled,
            };
            let error = result.error.clone();
            return Self::json_line(&StreamEvent::Host(HostEvent::Done {
                status,
                result: Some(Box::new(result)),
                error,
            }));
        }
        match result.final_text.as_deref() {
            Some(text) if !self.streamed && !text.is_empty() => {
                self.line(text.trim_end_matches('\n'))?
            }
            _ if !self.at_line_start => self.stdout("\n")?,
            _ => {}
        }
        let mut summary = match result.status {
            ResultStatus::Completed => self.paint(GREEN, "completed"),
            ResultStatus::Failed => self.paint(RED, "failed"),
            ResultStatus::Cancelled => self.paint(YELLOW, "cancelled"),
        };
        if let Some(code) = result.exit_code {
            summary.push_str(&format!(" (exit {code})"));
        }
        if let Some(error) = &result.error {
            summary.push_str(&format!(": {error}"));
        }
        summary.push_str(&format!(" in {:.2} s", result.duration.as_secs_f64()));
        if let Some(session) = &result.session_id {
            summary.push_str(&format!(", session {session}"));
        }
        eprintln!("{summary}");
        Ok(())
    }

    fn error(&mut self, cancelled: bool, message: &str) -> Result<()> {
        let mut message = message.to_owned();
        self.redactor.redact_str(&mut message);
        if self.json {
            let status = if cancelled {
                CommandStatus::Cancelled
            } else {
                CommandStatus::Failed
            };
            return Self::json_line(&StreamEvent::Host(HostEvent::Done {
                status,
                result: None,
                error: Some(message),
            }));
        }
        if !self.at_line_start {
            self.stdout("\n")?;
        }
        eprintln!("{}: {message}", self.paint(RED, "error"));
        Ok(())
    }
}

/// At most `max` characters, marked when cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}
