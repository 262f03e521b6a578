//! Helpers every provider uses, written once for each ABI module of the SDK.

use super::bindings::rdev::provider::types::{
    AgentRequest, Capability, ProviderCapabilities, ProviderError,
};

/// The capabilities of a provider driving a coding agent: streamed events, resumable
/// sessions, cancel, tools and cost reports.
pub fn agent_capabilities(description: impl Into<String>) -> ProviderCapabilities {
    ProviderCapabilities {
        description: description.into(),
        capabilities: Capability::STREAMING
            | Capability::SESSION_RESUME
            | Capability::CANCEL
            | Capability::TOOLS
            | Capability::COST_REPORTING,
    }
}

/// Parses the request's provider options; a provider with typed options deserializes them
/// from the returned map.
pub fn options(
    request: &AgentRequest,
) -> Result<serde_json::Map<String, serde_json::Value>, ProviderError> {
    serde_json::from_str(&request.options_json)
        .map_err(|e| ProviderError::InvalidRequest(format!("options are not a JSON object: {e}")))
}
