//! The guest side of the rdev provider ABI.
//!
//! A provider implements [`Provider`] and exports it with [`export_provider!`]; everything it
//! can do outside its own memory goes through the host imports re-exported here:
//! [`exec`] (processes in the project's workspace), [`project_http`] (HTTP to a service in
//! the workspace), [`events`] (the command's event stream), [`execution`] (cancel state)
//! and [`log`]. The host grants each of these per plugin in its manifest.

pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/since_v0.1.0",
        world: "provider",
        pub_export_macro: true,
        export_macro_name: "export_provider_bindings",
        default_bindings_module: "rdev_sdk::bindings",
        generate_all,
    });
}

pub mod event;
pub mod plain;
pub mod process;
pub mod result;

pub use bindings::exports::rdev::provider::agent::Guest as Provider;
pub use bindings::rdev::provider::types::{
    AgentEvent, AgentRequest, AgentResult, Capability, CleanupRequest, OutputStream,
    ProviderCapabilities, ProviderError, ResultStatus, SecretRef, TokenUsage,
};
pub use bindings::rdev::provider::{events, exec, execution, log, project_http};

/// The ABI version this SDK speaks; the manifest's `abi` must name it.
pub const ABI_VERSION: &str = "0.1.0";

/// Exports a type implementing [`Provider`] as the component's `agent` interface.
#[macro_export]
macro_rules! export_provider {
    ($provider:ident) => {
        $crate::bindings::export_provider_bindings!($provider);
    };
}

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
pub mod run;
