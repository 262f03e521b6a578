//! Turning the CLI's `can_use_tool` requests into the host's `request-permission` calls and
//! its decisions back into `control_response` lines.

use rdev_sdk::v0_2::interaction::{self, Decision, InputRead, InteractionError, PermissionRequest};

use crate::control::{self, Ask};

/// The command was cancelled while the host was asked; the caller stops the CLI.
#[derive(Debug)]
pub struct Cancelled;

/// What the CLI is told when a denial carries no message of its own: it is handed to the
/// model as the tool's error result.
const DENIED: &str = "The user denied this tool call.";

/// Asks the host whether `ask` may run (blocking until a person, the project's policy or the
/// approval timeout decides) and returns the `control_response` line that tells the CLI.
/// Anything but a decision denies: never allow by default.
pub fn decide(ask: &Ask) -> Result<String, Cancelled> {
    let request = PermissionRequest {
        tool_call_id: ask.tool_use_id.clone(),
        tool: ask.tool.clone(),
        input_json: ask.input.to_string(),
        summary: ask.summary(),
        // The CLI offers no options of its own (only rule suggestions for its settings
        // files), so allow and deny apply; "always" becomes a project rule on the host.
        options: Vec::new(),
    };
    let id = ask.request_id.as_str();
    match interaction::request_permission(&request) {
        Ok(Decision::Allow(allow)) => match allow.updated_input_json {
            None => Ok(control::allow(id, &ask.input)),
            Some(text) => Ok(match serde_json::from_str(&text) {
                Ok(input) => control::allow(id, &input),
                Err(e) => control::deny(id, &format!("the approved input is not JSON: {e}"), false),
            }),
        },
        Ok(Decision::Deny(deny)) => Ok(control::deny(
            id,
            deny.message
                .as_deref()
                .filter(|m| !m.is_empty())
                .unwrap_or(DENIED),
            deny.interrupt,
        )),
        Err(InteractionError::Cancelled) => Err(Cancelled),
        Err(InteractionError::InvalidRequest(why) | InteractionError::Unavailable(why)) => {
            Ok(control::deny(
                id,
                &format!("rdev could not ask for permission: {why}"),
                false,
            ))
        }
    }
}

/// Follow-up input waiting right now, as `user` message lines in the order it was sent.
/// Input that can never arrive (a host that delivers none) is simply none.
pub fn pending_input() -> Result<Vec<String>, Cancelled> {
    let mut lines = Vec::new();
    loop {
        match interaction::next_input(Some(0)) {
            Ok(InputRead::Input(input)) => lines.push(control::user_message(&input.text)),
            Ok(InputRead::Idle | InputRead::Closed) => return Ok(lines),
            Err(InteractionError::Cancelled) => return Err(Cancelled),
            Err(InteractionError::InvalidRequest(_) | InteractionError::Unavailable(_)) => {
                return Ok(lines);
            }
        }
    }
}
