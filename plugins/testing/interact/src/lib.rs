//! A provider on ABI 0.2.0 that exercises the `interaction` import, for the runtime's tests.
//! The prompt picks what it does:
//!
//! - `run <shell command>`: asks whether `Bash` may run the command (offering allow-once and
//!   reject-once), then runs the allowed input's `command` (a person may have edited it)
//!   with `sh -c`; a denial ends `completed` with `denied: <message>` as its final text.
//! - `oversized`: asks with a summary beyond the host's bound; the final text is the
//!   host's refusal.
//! - `input`: takes follow-up input until one says `done` or the input closes, emitting each
//!   as a message; the final text is the inputs joined with `,` (and `,closed` if closed).
//! - `ask <n>`: asks `n` times in a row whether `Bash` may run `true`, as an agent busy with
//!   tool calls does; the final text is `allowed <k> of <n>`.
//! - `input-while-reading`: starts `sleep 600`, blocks reading its output, and when the read
//!   returns early takes the input that interrupted it; the final text is that input.

use rdev_sdk::v0_2::interaction::{
    self, Decision, InputRead, InteractionError, OptionKind, PermissionOption, PermissionRequest,
};
use rdev_sdk::v0_2::process::{self, CommandBuilder};
use rdev_sdk::v0_2::{
    AgentRequest, AgentResult, Capability, CleanupRequest, Provider, ProviderCapabilities,
    ProviderError, ResultStatus, event, result, run,
};

struct Interact;

fn done(text: impl Into<String>) -> AgentResult {
    AgentResult {
        final_text: Some(text.into()),
        ..result::with_status(ResultStatus::Completed)
    }
}

fn option(id: &str, label: &str, kind: OptionKind) -> PermissionOption {
    PermissionOption {
        id: id.into(),
        label: label.into(),
        kind,
    }
}

fn refused(error: InteractionError) -> Result<AgentResult, ProviderError> {
    match error {
        InteractionError::Cancelled => Err(ProviderError::Cancelled),
        InteractionError::InvalidRequest(m) => Ok(done(format!("invalid: {m}"))),
        InteractionError::Unavailable(m) => Ok(done(format!("unavailable: {m}"))),
    }
}

fn run_with_permission(command: &str) -> Result<AgentResult, ProviderError> {
    let input = serde_json::json!({ "command": command });
    let request = PermissionRequest {
        tool_call_id: Some("toolu_interact_1".into()),
        tool: "Bash".into(),
        input_json: input.to_string(),
        summary: command.into(),
        options: vec![
            option("allow", "Allow once", OptionKind::AllowOnce),
            option("reject", "Reject", OptionKind::RejectOnce),
        ],
    };
    let allow = match interaction::request_permission(&request) {
        Ok(Decision::Allow(allow)) => allow,
        Ok(Decision::Deny(deny)) => {
            return Ok(done(format!(
                "denied: {}",
                deny.message.unwrap_or_default()
            )));
        }
        Err(e) => return refused(e),
    };
    let input: serde_json::Value = match allow.updated_input_json {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| ProviderError::Failed(format!("the updated input is not JSON: {e}")))?,
        None => input,
    };
    let command = input["command"].as_str().unwrap_or_default().to_owned();
    run::run_to_completion(&CommandBuilder::new("sh").arg("-c").arg(command), 1_000)
}

fn ask_repeatedly(times: &str) -> Result<AgentResult, ProviderError> {
    let times: u32 = times
        .parse()
        .map_err(|_| ProviderError::InvalidRequest(format!("not a count: {times:?}")))?;
    let mut allowed = 0;
    for call in 0..times {
        let request = PermissionRequest {
            tool_call_id: Some(format!("toolu_interact_ask_{call}")),
            tool: "Bash".into(),
            input_json: serde_json::json!({ "command": "true" }).to_string(),
            summary: "true".into(),
            options: Vec::new(),
        };
        match interaction::request_permission(&request) {
            Ok(Decision::Allow(_)) => allowed += 1,
            Ok(Decision::Deny(_)) => {}
            Err(e) => return refused(e),
        }
    }
    Ok(done(format!("allowed {allowed} of {times}")))
}

fn take_input() -> Result<AgentResult, ProviderError> {
    let mut taken = Vec::new();
    loop {
        match interaction::next_input(None) {
            Ok(InputRead::Input(input)) => {
                event::emit(event::message(input.text.clone()))
                    .map_err(|_| ProviderError::Cancelled)?;
                let finished = input.text == "done";
                taken.push(input.text);
                if finished {
                    break;
                }
            }
            Ok(InputRead::Idle) => {}
            Ok(InputRead::Closed) => {
                taken.push("closed".into());
                break;
            }
            Err(e) => return refused(e),
        }
    }
    Ok(done(taken.join(",")))
}

fn input_while_reading() -> Result<AgentResult, ProviderError> {
    let child = CommandBuilder::new("sh")
        .arg("-c")
        .arg("echo reading; sleep 600")
        .spawn()
        .map_err(|e| run::spawn_error(&e))?;
    loop {
        match process::read_lines(&child, None) {
            Ok(process::Lines::Lines(lines)) => {
                for line in lines {
                    event::emit(event::message(line.text)).map_err(|_| ProviderError::Cancelled)?;
                }
            }
            Ok(process::Lines::Idle) => match interaction::next_input(Some(0)) {
                Ok(InputRead::Input(input)) => return Ok(done(input.text)),
                Ok(InputRead::Idle) => {}
                Ok(InputRead::Closed) => return Ok(done("closed")),
                Err(e) => return refused(e),
            },
            Ok(process::Lines::Closed) => return Ok(done("the process ended")),
            Err(_) => return Err(ProviderError::Cancelled),
        }
    }
}

impl Provider for Interact {
    fn capabilities() -> ProviderCapabilities {
        ProviderCapabilities {
            description: "asks for permission and takes follow-up input".into(),
            capabilities: Capability::STREAMING | Capability::CANCEL | Capability::TOOLS,
        }
    }

    fn execute(request: AgentRequest) -> Result<AgentResult, ProviderError> {
        let prompt = request.prompt.as_str();
        if let Some(command) = prompt.strip_prefix("run ") {
            return run_with_permission(command);
        }
        if let Some(times) = prompt.strip_prefix("ask ") {
            return ask_repeatedly(times);
        }
        match prompt {
            "oversized" => {
                let request = PermissionRequest {
                    tool_call_id: None,
                    tool: "Bash".into(),
                    input_json: "{}".into(),
                    summary: "x".repeat(64 * 1024),
                    options: Vec::new(),
                };
                match interaction::request_permission(&request) {
                    Ok(_) => Ok(done("decided")),
                    Err(e) => refused(e),
                }
            }
            "input" => take_input(),
            "input-while-reading" => input_while_reading(),
            other => Err(ProviderError::InvalidRequest(format!(
                "unknown prompt {other:?}"
            ))),
        }
    }

    fn cancel(_request: CleanupRequest) -> Result<(), ProviderError> {
        Ok(())
    }
}

rdev_sdk::v0_2::export_provider!(Interact);
