//! A provider whose load takes about three seconds: `capabilities()`, which the host calls
//! once while loading, sleeps first. It stands in for a component that compiles for long.

use rdev_sdk::{
    AgentRequest, AgentResult, Capability, CleanupRequest, Provider, ProviderCapabilities,
    ProviderError, execution, result,
};

/// How long loading this plugin takes.
const LOAD_MS: u32 = 3000;

struct SlowStart;

impl Provider for SlowStart {
    fn capabilities() -> ProviderCapabilities {
        execution::sleep(LOAD_MS);
        ProviderCapabilities {
            description: "loads slowly".into(),
            capabilities: Capability::empty(),
        }
    }

    fn execute(_request: AgentRequest) -> Result<AgentResult, ProviderError> {
        Ok(result::completed("slow-start"))
    }

    fn cancel(_request: CleanupRequest) -> Result<(), ProviderError> {
        Ok(())
    }
}

rdev_sdk::export_provider!(SlowStart);
