// Shared body of the `versioned-v1` and `versioned-v2` test plugins: each crate defines
// `VERSION` and includes this file, so the two components differ only in what they report.
//
// Prompt `hold`: emits `a`, `b` and `c`, then returns. With an event sink of capacity one,
// the test controls exactly when the execution can finish, so it can swap the plugin
// while this execution is in flight. Any other prompt returns at once. The final text is
// always `VERSION`.

use rdev_sdk::{
    AgentRequest, AgentResult, Capability, CleanupRequest, Provider, ProviderCapabilities,
    ProviderError, event, result,
};

struct Versioned;

impl Provider for Versioned {
    fn capabilities() -> ProviderCapabilities {
        ProviderCapabilities {
            description: format!("reports version {VERSION}"),
            capabilities: Capability::STREAMING,
        }
    }

    fn execute(request: AgentRequest) -> Result<AgentResult, ProviderError> {
        if request.prompt == "hold" {
            for step in ["a", "b", "c"] {
                event::emit(event::message(step)).map_err(|_| ProviderError::Cancelled)?;
            }
        }
        Ok(result::completed(VERSION))
    }

    fn cancel(_request: CleanupRequest) -> Result<(), ProviderError> {
        Ok(())
    }
}

rdev_sdk::export_provider!(Versioned);
