//! A provider whose load takes about three seconds: `capabilities()`, which the host calls
//! once while loading, sleeps first. It stands in for a component that compiles for long.

use rdev_sdk::{
    AgentRequest, AgentResult, Capability, CleanupRequest, Provider, ProviderCapabilities,
    ProviderError, ResultStatus, execution,
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
        Ok(AgentResult {
            status: ResultStatus::Completed,
            exit_code: None,
            session_id: None,
            final_text: Some("slow-start".into()),
            error: None,
            cost_usd: None,
            usage: None,
            num_turns: None,
            details_json: None,
        })
    }

    fn cancel(_request: CleanupRequest) -> Result<(), ProviderError> {
        Ok(())
    }
}

rdev_sdk::export_provider!(SlowStart);
