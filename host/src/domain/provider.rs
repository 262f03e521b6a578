//! What the registry knows about a provider.

use serde::{Deserialize, Serialize};

use super::ids::ProviderName;

/// What a provider can do; clients use it to decide which controls to offer, the queue to
/// decide whether a run that lost its host may be retried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Capabilities {
    pub streaming: bool,
    pub session_resume: bool,
    pub cancel: bool,
    pub tools: bool,
    pub cost_reporting: bool,
    /// Re-running an execution that lost its host cannot apply work twice.
    pub idempotent: bool,
}

/// A provider as loaded: its identity from the manifest and what it says it can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentProvider {
    pub name: ProviderName,
    /// The plugin's own version, from its manifest.
    pub version: String,
    /// The provider ABI version the component was built against.
    pub abi_version: String,
    pub description: String,
    pub capabilities: Capabilities,
    /// Lowercase hex sha256 of the component's bytes as loaded: which build this is, even
    /// when an author forgot to bump `version`.
    pub component_sha256: String,
}

impl AgentProvider {
    /// What a command records about the build that runs it.
    pub fn provenance(&self) -> Provenance {
        Provenance {
            provider: self.name.to_string(),
            version: self.version.clone(),
            abi: self.abi_version.clone(),
            component_sha256: self.component_sha256.clone(),
        }
    }
}

/// Which build of a provider ran a command, stored on the command when it starts and copied
/// into its `command.started`/`command.finished` audit entries, so a result can be traced to
/// the exact component even after the plugin was replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Provenance {
    pub provider: String,
    /// The plugin's `version` from its manifest.
    pub version: String,
    /// The provider ABI the component was built against.
    pub abi: String,
    /// Lowercase hex sha256 of the component (`<name>.wasm`).
    pub component_sha256: String,
}
