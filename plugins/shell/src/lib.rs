//! The shell provider: `sh -c <prompt>` in the project's workspace. Output is streamed as
//! chunks (a shell command's output need not be line-shaped); the exit code decides the
//! status.

use rdev_sdk::process::CommandBuilder;
use rdev_sdk::{
    AgentRequest, AgentResult, Capability, CleanupRequest, Provider, ProviderCapabilities,
    ProviderError, run,
};

struct Shell;

/// How long a cancelled command gets between each of SIGINT, SIGTERM and SIGKILL.
const STOP_STEP_MS: u32 = 2_000;

impl Provider for Shell {
    fn capabilities() -> ProviderCapabilities {
        ProviderCapabilities {
            description: "Runs the prompt with `sh -c` in the project's workspace".into(),
            capabilities: Capability::STREAMING | Capability::CANCEL,
        }
    }

    fn execute(request: AgentRequest) -> Result<AgentResult, ProviderError> {
        let command = CommandBuilder::new("sh")
            .arg("-c")
            .arg(request.prompt.as_str())
            .working_dir(request.working_dir.clone());
        run::run_to_completion(&command, STOP_STEP_MS)
    }

    fn cancel(_request: CleanupRequest) -> Result<(), ProviderError> {
        // Nothing outlives the instance: the host kills the process group when it drops it.
        Ok(())
    }
}

rdev_sdk::export_provider!(Shell);
