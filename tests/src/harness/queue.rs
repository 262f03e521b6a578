//! Commands and outcomes for tests and benchmarks of the queue alone, where no provider runs.

use rdev::domain::{AgentRequest, CommandStatus, NewCommand, Outcome, ProjectId, ProviderName};

/// A `shell` command of `project` with `prompt`, submitted by `tester`, without an
/// idempotency key (struct update syntax changes the rest).
pub fn new_command(project: &ProjectId, prompt: &str) -> NewCommand {
    NewCommand {
        project_id: project.clone(),
        provider: ProviderName::parse("shell").expect("provider"),
        request: AgentRequest::new(prompt),
        idempotency_key: None,
        submitted_by: "tester".into(),
    }
}

/// The outcome of a command that completed with no result.
pub fn completed() -> Outcome {
    Outcome {
        status: CommandStatus::Completed,
        result: None,
        error: None,
    }
}
