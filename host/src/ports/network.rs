//! What confines a project's commands, as the API reports it, and where each project's
//! egress allow-list is kept so that every process running its commands applies the same one.

use serde::{Deserialize, Serialize};

/// How the executor confines commands: shown on `/readyz`, `GET /providers` and logged at
/// start, so an operator never runs unconfined without seeing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Confinement {
    /// `confined` (the local sandbox), `unconfined` (the operator's explicit choice) or
    /// `kubernetes` (pods confine commands; see docs/kubernetes.md).
    pub mode: String,
    /// Mechanisms in force.
    pub enforced: Vec<String>,
    /// Mechanisms this host lacks (for `confined`: only optional ones, e.g. limits).
    pub missing: Vec<String>,
}

impl Confinement {
    /// Commands run as rdev's own user with nothing around them: `missing` says what the
    /// host lacked, or is empty when the operator chose it on a host that could confine.
    pub fn unconfined(missing: Vec<String>) -> Self {
        Self {
            mode: "unconfined".to_owned(),
            enforced: Vec::new(),
            missing,
        }
    }

    /// Whether commands run without the local sandbox on this host's processes.
    pub fn is_unconfined(&self) -> bool {
        self.mode == "unconfined"
    }
}
