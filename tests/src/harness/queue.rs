//! Commands and outcomes for tests and benchmarks of the queue alone, where no provider runs.

use rdev::domain::{
    AgentRequest, CommandStatus, NewCommand, Outcome, ProjectId, Provenance, ProviderName,
};

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
        usage: Default::default(),
    }
}

/// The build a worker records when its `shell` command starts (the hash is of no real
/// component: the queue stores whatever it is given).
pub fn provenance() -> Provenance {
    Provenance {
        provider: "shell".into(),
        version: "1.0.0".into(),
        abi: "0.2.0".into(),
        component_sha256: "5".repeat(64),
    }
}
