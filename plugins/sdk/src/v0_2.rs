//! The SDK for provider ABI 0.2.0: the root's helpers compiled against the 0.2.0 bindings,
//! plus [`interaction`]. A provider on 0.2.0 writes `use rdev_sdk::v0_2 as sdk;` (or imports
//! from here) instead of from the crate root, exports with [`export_provider!`] and sets
//! `abi = "0.2.0"` in its manifest.
//!
//! Input is pulled with [`interaction::next_input`]. While input waits, the host makes a
//! blocking read (`read-lines`, `read-chunks`, an event stream's `next`) return `idle`
//! early, once per arrival; a provider that takes input checks
//! `interaction::next_input(Some(0))` after each idle read.

pub mod bindings {
    wit_bindgen::generate!({
        inline: "package rdev:sdk; world provider-v0-2 { include rdev:provider/provider@0.2.0; }",
        path: "../../wit/since_v0.2.0",
        pub_export_macro: true,
        export_macro_name: "export_provider_v0_2_bindings",
        default_bindings_module: "rdev_sdk::v0_2::bindings",
        generate_all,
    });
}

#[path = "event.rs"]
pub mod event;
#[path = "plain.rs"]
pub mod plain;
#[path = "process.rs"]
pub mod process;
#[path = "provider.rs"]
mod provider;
#[path = "result.rs"]
pub mod result;
#[path = "run.rs"]
pub mod run;

pub use bindings::exports::rdev::provider::agent::Guest as Provider;
pub use bindings::rdev::provider::types::{
    AgentEvent, AgentRequest, AgentResult, Capability, CleanupRequest, OutputStream,
    ProviderCapabilities, ProviderError, ResultStatus, SecretRef, TokenUsage,
};
pub use bindings::rdev::provider::{events, exec, execution, interaction, log, project_http};
pub use provider::{agent_capabilities, options};

/// Exports a type implementing [`Provider`] as the component's `agent` interface.
pub use crate::export_provider_v0_2 as export_provider;

/// The ABI version this module speaks; the manifest's `abi` must name it.
pub const ABI_VERSION: &str = "0.2.0";

/// Exports a type implementing [`v0_2::Provider`](Provider) as an ABI 0.2.0 component's
/// `agent` interface; also reachable as `rdev_sdk::v0_2::export_provider!`.
#[macro_export]
macro_rules! export_provider_v0_2 {
    ($provider:ident) => {
        $crate::v0_2::bindings::export_provider_v0_2_bindings!($provider);
    };
}
