//! What confines a project's commands, as the API reports it, and where each project's
//! egress allow-list is kept so that every process running its commands applies the same one.

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::ProjectId;
use crate::domain::network::NetworkPolicy;

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
    /// Where a project's commands may connect unless its own policy says otherwise
    /// (`PUT /projects/{id}/network`); empty when nothing enforces it.
    pub default_allow: Vec<String>,
}

impl Confinement {
    /// Commands run as rdev's own user with nothing around them: `missing` says what the
    /// host lacked, or is empty when the operator chose it on a host that could confine.
    pub fn unconfined(missing: Vec<String>) -> Self {
        Self {
            mode: "unconfined".to_owned(),
            enforced: Vec::new(),
            missing,
            default_allow: Vec::new(),
        }
    }

    /// Whether commands run without the local sandbox on this host's processes.
    pub fn is_unconfined(&self) -> bool {
        self.mode == "unconfined"
    }
}

/// Each project's own egress allow-list, kept in the database so that the API that changes
/// it and every worker that runs the project's commands agree.
#[async_trait::async_trait]
pub trait NetworkPolicyStore: Send + Sync {
    /// The project's own policy; `None`: it follows the server's default.
    async fn network_policy(
        &self,
        project: &ProjectId,
    ) -> Result<Option<NetworkPolicy>, StoreError>;

    /// Replaces the project's policy with `allow` (already validated); `NotFound` for an
    /// unknown project.
    async fn set_network_policy(
        &self,
        project: &ProjectId,
        allow: &[String],
    ) -> Result<NetworkPolicy, StoreError>;

    /// Drops the project's own policy, so it follows the default again; `false` when it had
    /// none.
    async fn clear_network_policy(&self, project: &ProjectId) -> Result<bool, StoreError>;
}
