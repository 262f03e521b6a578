//! The guest side of the rdev provider ABI.
//!
//! A provider implements [`Provider`] and exports it with [`export_provider!`]; everything it
//! can do outside its own memory goes through the host imports re-exported here:
//! [`exec`] (processes in the project's workspace), [`project_http`] (HTTP to a service in
//! the workspace), [`events`] (the command's event stream), [`execution`] (cancel state)
//! and [`log`]. The host grants each of these per plugin in its manifest.
//!
//! The crate root speaks ABI 0.1.0; [`v0_2`] is the same SDK for ABI 0.2.0, which adds the
//! [`v0_2::interaction`] import (permission requests and follow-up input). A provider picks
//! one by its imports and names it in its manifest's `abi`.

// The helper modules are compiled once per ABI module (the root for 0.1.0, `v0_2`), each
// against that version's bindings: the same source, different types.
#![allow(clippy::duplicate_mod)]

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
pub mod mcp;
pub mod plain;
pub mod process;
mod provider;
pub mod result;
pub mod run;
pub mod v0_2;

pub use bindings::exports::rdev::provider::agent::Guest as Provider;
pub use bindings::rdev::provider::types::{
    AgentEvent, AgentRequest, AgentResult, Capability, CleanupRequest, OutputStream,
    ProviderCapabilities, ProviderError, ResultStatus, SecretRef, TokenUsage,
};
pub use bindings::rdev::provider::{events, exec, execution, log, project_http};
pub use provider::{agent_capabilities, options};

/// The ABI version this SDK speaks; the manifest's `abi` must name it.
pub const ABI_VERSION: &str = "0.1.0";

/// Exports a type implementing [`Provider`] as the component's `agent` interface.
#[macro_export]
macro_rules! export_provider {
    ($provider:ident) => {
        $crate::bindings::export_provider_bindings!($provider);
    };
}
