//! An rdev provider written outside the rdev repository: it echoes the prompt back as a
//! message event and as the final text. With the provider option `{"via_exec": true}` the
//! prompt goes through the `echo` program in the workspace instead, showing the exec grant.

use rdev_sdk::process::CommandBuilder;
use rdev_sdk::{
    AgentRequest, AgentResult, Capability, CleanupRequest, Provider, ProviderCapabilities,
    ProviderError, event, result, run,
};

struct Echo;

impl Provider for Echo {
    fn capabilities() -> ProviderCapabilities {
        ProviderCapabilities {
            description: "Echoes the prompt back".into(),
            capabilities: Capability::STREAMING,
        }
    }

    fn execute(request: AgentRequest) -> Result<AgentResult, ProviderError> {
        let options = rdev_sdk::options(&request)?;
        if options.get("via_exec").and_then(|v| v.as_bool()) == Some(true) {
            let process = CommandBuilder::new("echo")
                .arg(request.prompt.as_str())
                .working_dir(request.working_dir.clone())
                .spawn()
                .map_err(|e| run::spawn_error(&e))?;
            process.close_stdin();
            let outcome = run::stream_to_completion(&process, 1_000)?;
            return Ok(run::command_result(&outcome));
        }
        event::emit(event::message(request.prompt.as_str()))
            .map_err(|_| ProviderError::Cancelled)?;
        Ok(result::completed(request.prompt))
    }

    fn cancel(_request: CleanupRequest) -> Result<(), ProviderError> {
        Ok(())
    }
}

rdev_sdk::export_provider!(Echo);
